"""``invdiff solve``: one reconstruction from a named problem or from the user's own measurement.

Two ways in:

* ``--problem NAME`` — a named problem (:mod:`invdiff.problems`); its test image ``--index``,
  or the user's own image (``--image FILE`` / ``--dicom FILE``, centre-cropped and resized to
  the problem's size) measured with the problem's operator and noise; or the user's volume
  (``--nifti FILE`` / ``--dicom-series DIR``), every slice resized to the problem's size, all
  slices measured as one batch, the reconstruction also written back in the input's format
  (``reconstruction.nii.gz`` / ``reconstruction_dicom/``).
* ``--measurement FILE.npy --operator NAME`` — a measurement shaped as the operator produces it (CT: ``(1, detectors, n_views)``), or
  with a leading batch axis) or other measurement; the operator is rebuilt from its name and
  options (``--size``, ``--n-views``, ``--max-angle``), the prior from ``--prior``. Operators with
  random parts (whose factory takes a ``generator``: a random MRI or inpainting mask) are
  refused: a rebuilt one would not be the operator that made the measurement.
* ``--kspace FILE.npy --mask FILE.npy [--coils FILE.npy]`` — the user's complex Cartesian MRI
  k-space ``(coils, H, W)`` or ``(H, W)``, its 0/1 sampling mask ``(H, W)`` or ``(W,)`` and
  optionally coil sensitivities (estimated from the calibration region otherwise), normalised
  to [0, 1], ``--sigma-y`` estimated when not given (:func:`invdiff.measurements.mri_from_kspace`);
  the image size is the k-space's, the prior ``--prior`` (default phantom64).

Writes ``reconstruction.npy`` (``(B, C, H, W)`` in [0, 1] units) and ``reconstruction.png``
(truth when known, the operator's pseudo-inverse ``A†y``, the reconstruction and — with
``--samples > 1`` — the posterior standard deviation) into ``--out``. With ``--samples K > 1``
also ``std.npy`` (the raw std map) and ``interval95.npy`` (``(2, B, C, H, W)``: lower and upper
bounds of the 95 % interval); when the named problem has a calibration for this solver and
``K`` (fitted on its validation split, :mod:`invdiff.calibration`), the bounds are the
calibrated ones, ``std_calibrated.npy`` is written and the figure shows the calibrated map;
otherwise the bounds follow the Gaussian rule and are marked uncalibrated. Files are written under
temporary names and renamed, so a failed run leaves no partial output.
"""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ["run_solve", "MAX_INDEX"]

#: the largest test-image index ``invdiff solve --index`` accepts, plus one
MAX_INDEX = 100


#: command-line flags of ``--measurement``'s operator -> the factory keyword they set
OPERATOR_FLAGS = {"--n-views": "n_views", "--max-angle": "max_angle_deg"}


def _operator_from_args(name: str, size: int, options: dict):
    """Build operator ``name`` with the flags the user gave; a flag the factory does not take is
    refused (its signature declares what it takes), never silently ignored."""
    import inspect

    from .operators import OPERATORS, make_operator

    if name not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(sorted(OPERATORS))}")
    accepted = inspect.signature(OPERATORS[name]).parameters
    kwargs = {}
    for flag, value in options.items():
        if value is None:
            continue
        key = OPERATOR_FLAGS[flag]
        if key not in accepted:
            takes = [f for f, k in OPERATOR_FLAGS.items() if k in accepted]
            raise ValueError(f"operator {name} does not take {flag}" + (f" (it takes {', '.join(takes)})" if takes else ""))
        kwargs[key] = value
    return make_operator(name, size, **kwargs)


def _load_measurement(path: str, physics) -> torch.Tensor:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no measurement file at {path!r}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read measurement {path!r} as .npy: {err}") from None
    y = torch.as_tensor(arr, dtype=torch.float32)
    meas = tuple(getattr(physics, "meas_shape", ()) or ())
    if meas and tuple(y.shape) == meas:
        y = y[None]
    if meas and tuple(y.shape[1:]) != meas:
        raise ValueError(f"measurement {path!r} has shape {tuple(arr.shape)}, but operator "
                         f"{type(physics).__name__} produces {meas} per image (optionally with a leading batch axis)")
    if not torch.isfinite(y).all():
        raise ValueError(f"measurement {path!r} contains NaN or Inf")
    return y


def _check_volume_flags(*, nifti, dicom_series, image, dicom, measurement, index) -> None:
    """Refuse flags that conflict with ``--nifti`` / ``--dicom-series`` (one-line ``ValueError``)."""
    for flag, value, other in (("--nifti", nifti, ("--dicom-series", dicom_series)),
                               ("--dicom-series", dicom_series, ("--nifti", nifti))):
        if not value:
            continue
        clash = [f for f, v in (("--image", image), ("--dicom", dicom), other, ("--measurement", measurement),
                                ("--index", index)) if v]
        if clash:
            raise ValueError(f"{flag} cannot be combined with {', '.join(clash)}: its volume (or slice) replaces the "
                             f"problem's test image, measured with the operator of --problem")


def _check_not_smaller(x: torch.Tensor, size: int, source: str) -> None:
    """Refuse images or slices smaller than the problem: upsampling would invent detail."""
    if min(x.shape[-2:]) < size:
        raise ValueError(f"{source!r} is {x.shape[-2]}×{x.shape[-1]} px, smaller than the problem's {size}×{size}; "
                         f"upsampling would invent detail: give images of at least {size} px on each side")


def _load_user_volume(spec, nifti: str | None, dicom_series: str | None, out_dir: str):
    """``--nifti FILE`` / ``--dicom-series DIR``: the user's volume, every slice centre-cropped and
    resized to the problem's size, as ``(D, C, size, size)`` with its (resize-adjusted) info."""
    from .data.volumes import load_dicom_series, load_nifti, resize_volume

    source = nifti or dicom_series
    if dicom_series:
        target = os.path.join(out_dir, "reconstruction_dicom")
        if os.path.exists(target) and not (os.path.isdir(target) and not os.listdir(target)):
            raise FileExistsError(f"{target!r} already exists; remove it or give another --out (a DICOM series is "
                                  f"never written over)")
        x, info = load_dicom_series(dicom_series, rule="auto", channels=spec.channels)
    else:
        x, info = load_nifti(nifti, rule="minmax", channels=spec.channels)
    _check_not_smaller(x, spec.size, source)
    x, info = resize_volume(x, spec.size, info)
    if spec.is_volume:  # some volume operators carry per-slice parameters for a fixed number of slices
        try:
            with torch.no_grad():
                spec.operator().A(x)
        except ValueError as err:
            raise ValueError(f"{source!r}: its {x.shape[0]} slices do not fit the volume problem {spec.name}: "
                             f"{err}") from None
    return x.clamp(0, 1), info


def _write_user_volume(out_dir: str, x_hat: torch.Tensor, info) -> dict:
    """Write the reconstruction in the input's format: ``reconstruction.nii.gz`` (the input's
    header; its affine adjusted for the resize: in-plane voxel size scaled by input/problem size)
    or ``reconstruction_dicom/`` (a new series; pixel spacing and positions adjusted alike)."""
    from .data.volumes import NiftiInfo, save_dicom_series, save_nifti

    if info is None:
        return {}
    if isinstance(info, NiftiInfo):
        return {"nifti": save_nifti(os.path.join(out_dir, "reconstruction.nii.gz"), x_hat, info)}
    return {"dicom_series": save_dicom_series(os.path.join(out_dir, "reconstruction_dicom"), x_hat, info)}


def _has_random_parts(name: str) -> bool:
    """Whether operator ``name``'s factory draws random parts (a mask): its signature takes a ``generator``."""
    import inspect

    from .operators import OPERATORS

    return name in OPERATORS and "generator" in inspect.signature(OPERATORS[name]).parameters


def _load_npy(path: str, flag: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {flag} file at {path!r}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read {flag} {path!r} as .npy: {err}") from None


def _check_kspace_flags(kspace, mask, **others) -> None:
    """``--kspace`` and ``--mask`` come together and without the flags of the other data sources."""
    if kspace is None or mask is None:
        raise ValueError("--kspace FILE.npy and --mask FILE.npy go together (--coils FILE.npy is optional)")
    given = [flag for flag, value in others.items() if value]
    if given:
        raise ValueError(f"--kspace brings its own data and operator: drop {', '.join(given)}")


def _kspace_problem(kspace: str, mask: str, coils: str | None, sigma_y: float | None):
    """The MRI problem of the user's k-space files (:func:`invdiff.measurements.mri_from_kspace`)."""
    from .measurements import mri_from_kspace

    k = _load_npy(kspace, "--kspace")
    m = _load_npy(mask, "--mask")
    c = None if coils is None else _load_npy(coils, "--coils")
    return mri_from_kspace(k, m, c, sigma_y=sigma_y)


def run_solve(*, out_dir: str, solver: str = "diffpir", steps: int = 100, samples: int = 1, seed: int = 0,
              problem: str | None = None, index: int = 0, image: str | None = None, dicom: str | None = None,
              measurement: str | None = None, operator: str | None = None, size: int | None = None,
              n_views: int | None = None, max_angle: float | None = None, sigma_y: float | None = None,
              prior: str | None = None, progress: bool = True,
              nifti: str | None = None, dicom_series: str | None = None,
              kspace: str | None = None, mask: str | None = None, coils: str | None = None,
              distribute: bool = False, device: str = "cpu") -> dict:
    """Run one reconstruction; returns paths and (when the truth is known) PSNR/SSIM.

    ``device`` (``--device``) is where the prior and the problem (operator, measurement) go for the
    solve, checked first (:func:`invdiff.devices.resolve_device`: a ``ValueError`` naming a device
    this machine does not have); the measurement noise and the sampler's draws come from seeded
    CPU generators, so a run matches the CPU run up to the device's rounding, and everything
    written comes back to the CPU.

    ``distribute=True`` (what ``invdiff solve`` passes; every rank of the process group must then
    solve the same problem) splits the prior's network calls over the ranks, and only rank 0
    writes and gets the paths back (``{}`` elsewhere).

    ``nifti`` (``--nifti FILE``) / ``dicom_series`` (``--dicom-series DIR``) replace the
    problem's test image by the user's volume (or single slice): every slice is centre-cropped
    and resized to the problem's size, all slices are measured as one batch, and the
    reconstruction is also written in the input's format: ``reconstruction.nii.gz`` (key
    ``"nifti"``) with the input's header and affine, the affine adjusted for the resize (voxel
    size scaled in-plane by the crop/resize factor, origin moved so each voxel keeps its world
    position), or a new series ``reconstruction_dicom/`` (key ``"dicom_series"``) with pixel
    spacing and ImagePositionPatient adjusted alike (:func:`invdiff.data.volumes.resize_volume`).
    """
    from . import Problem, psnr, solve, ssim
    from .data import atomic_write, load_dicom, load_file, resize
    from .devices import resolve_device
    from .plot import save_image_row
    from .priors import load_prior
    from .problems import get_problem
    from .solvers import SOLVERS

    dev = resolve_device(device, name="--device")
    _check_volume_flags(nifti=nifti, dicom_series=dicom_series, image=image, dicom=dicom, measurement=measurement,
                        index=index)
    volume_info = None  # the geometry of --nifti / --dicom-series, to write the reconstruction back
    if kspace is not None or mask is not None or coils is not None:  # the user's MRI k-space
        _check_kspace_flags(kspace, mask, **{"--problem": problem, "--measurement": measurement, "--image": image,
                                             "--dicom": dicom, "--operator": operator, "--size": size,
                                             "--n-views": n_views, "--max-angle": max_angle, "--index": index,
                                             "--nifti": nifti, "--dicom-series": dicom_series})
    elif (problem is None) == (measurement is None):
        raise ValueError("give either --problem NAME or --measurement FILE.npy (with --operator), not both")
    if image and dicom:
        raise ValueError("give --image or --dicom, not both")
    if problem is not None:
        extra = [f for f, v in (("--operator", operator), ("--size", size), ("--n-views", n_views),
                                ("--max-angle", max_angle), ("--sigma-y", sigma_y)) if v is not None]
        if extra:
            raise ValueError(f"{', '.join(extra)} describe(s) the operator of --measurement; a named problem fixes "
                             f"its own operator and noise (drop them, or use --measurement)")
        if (image or dicom) and index:
            raise ValueError("--index picks a test image of the problem; it cannot be combined with --image/--dicom")
    else:
        extra = [f for f, v in (("--image", image), ("--dicom", dicom), ("--index", index)) if v]
        if extra:
            raise ValueError(f"{', '.join(extra)} belong(s) to --problem; --measurement brings its own data")
        size = 64 if size is None else size
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_INDEX:
        raise ValueError(f"--index must be an integer in 0..{MAX_INDEX - 1} (the test images are generated in "
                         f"order, so a large index costs all the images before it), got {index!r}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known solvers: {', '.join(SOLVERS)}")
    if steps < 1 or samples < 1:
        raise ValueError(f"--steps and --samples must be >= 1, got {steps} and {samples}")
    if problem is not None:
        spec = get_problem(problem)
        prior_name = prior or spec.prior
        if nifti or dicom_series:
            x, volume_info = _load_user_volume(spec, nifti, dicom_series, out_dir)
        elif image or dicom:
            path = image or dicom
            x = (load_dicom(path, channels=spec.channels) if dicom else load_file(path, channels=spec.channels))
            _check_not_smaller(x, spec.size, path)
            x = resize(x, spec.size)[None].clamp(0, 1)
        else:
            if spec.is_volume and index != 0:
                raise ValueError(f"--index must be 0 for the volume problem {spec.name}, got {index}")
            x = spec.images("test", 1) if spec.is_volume else spec.images("test", index + 1)[index:index + 1]
        pb = Problem.simulate(x, spec.operator(), spec.sigma_y, generator=torch.Generator().manual_seed(seed))
    elif kspace is not None:
        pb = _kspace_problem(kspace, mask, coils, sigma_y)
        prior_name = prior or "phantom64"
    else:
        if operator is None:
            raise ValueError("--measurement needs --operator NAME (e.g. ct_sparse_view)")
        if _has_random_parts(operator):
            raise ValueError(f"operator {operator} draws random parts (its factory takes a generator), so a rebuilt "
                             f"one is not the operator that made the measurement: for MRI give the k-space with its "
                             f"mask, --kspace FILE.npy --mask FILE.npy [--coils FILE.npy]")
        if sigma_y is None or sigma_y < 0:
            raise ValueError("--measurement needs --sigma-y >= 0 (the noise level of the measurement, [0, 1] units)")
        physics = _operator_from_args(operator, size, {"--n-views": n_views, "--max-angle": max_angle})
        y = _load_measurement(measurement, physics)
        pb = Problem(physics, y, float(sigma_y))
        prior_name = prior or "phantom64"
    from .distributed import rank
    from .distributed.tiles import distribute_prior

    lead = rank() == 0 or not distribute  # with distribute, rank 0 alone writes; a plain process is rank 0
    if lead:
        os.makedirs(out_dir, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(f"cannot write to the output directory {out_dir!r}")
    # a volume problem's prior is its 2D prior slice by slice; under torchrun its network calls are
    # split over the ranks (a patch prior's patches, or the batch: invdiff.distributed.tiles)
    net = (spec.build_prior(prior) if problem is not None else load_prior(prior_name)).to(dev)
    if distribute:
        net = distribute_prior(net)
    configured = spec.solver(solver) if problem is not None else SOLVERS[solver]()
    result = solve(pb.to(dev), net, configured, steps=steps, num_samples=samples,
                   generator=torch.Generator().manual_seed(seed), progress=progress).to("cpu")
    calibration = None
    if problem is not None and result.std is not None:
        calibration = spec.calibration(f"{solver}:{samples}")
        mismatch = None if calibration is None else (
            f"was fitted with its prior {spec.prior}, not {prior}" if prior not in (None, spec.prior) else
            f"is at {calibration.steps} steps, not {steps}" if calibration.steps not in (None, steps) else None)
        if mismatch:
            import warnings

            warnings.warn(f"{spec.name}'s calibration for {solver}:{samples} {mismatch}; the std map and the "
                          f"interval are left uncalibrated", RuntimeWarning, stacklevel=2)
            calibration = None
        if calibration is not None:
            result = result.calibrated(calibration)
    if not lead:
        return {}
    x_hat = result.x_hat.clamp(0, 1)
    with torch.no_grad():
        back = pb.physics.A_dagger(pb.y).clamp(0, 1)
    panels = {}
    scores = {}
    if pb.x_true is not None:
        panels["truth"] = pb.x_true[pb.x_true.shape[0] // 2]
        scores = {"psnr": float(psnr(x_hat, pb.x_true).mean()), "ssim": float(ssim(x_hat, pb.x_true).mean()),
                  "psnr_pinv": float(psnr(back, pb.x_true).mean())}
    mid = x_hat.shape[0] // 2  # the middle image of the batch (the middle slice of a volume)
    panels["A†y"] = back[mid]
    panels[solver] = x_hat[mid]
    extra = {}
    uq = {}
    if result.std is not None:
        uq, std_panel, label = _uncertainty_outputs(result, pb, spec if problem is not None else None, out_dir, mid)
        panels[label] = std_panel
        extra = dict(cmaps={label: "magma"}, ranges={label: (0.0, float(std_panel.max().clamp_min(1e-6)))})
    npy = atomic_write(os.path.join(out_dir, "reconstruction.npy"), lambda p: np.save(p, x_hat.numpy()))
    if x_hat.shape[0] > 1 and problem is not None and spec.is_volume:  # a volume: its three planes
        from .plot import save_volume_planes

        vols = {"A†y": back, solver: x_hat}
        png = save_volume_planes({"truth": pb.x_true, **vols} if pb.x_true is not None else vols,
                                 os.path.join(out_dir, "reconstruction.png"), truth=pb.x_true)
    else:
        png = save_image_row(panels, os.path.join(out_dir, "reconstruction.png"), truth=panels.get("truth"), **extra)
    written = _write_user_volume(out_dir, x_hat, volume_info)  # {} unless --nifti / --dicom-series
    return {"npy": npy, "png": png, "nfe": result.nfe, "seconds": result.seconds, **scores, **written, **uq}


def _uncertainty_outputs(result, pb, spec, out_dir: str, mid: int):
    """Write the std map and the 95 % interval bounds (calibrated where ``result`` carries a
    calibration); return the paths and coverage, the panel to show and its title."""
    from .data import atomic_write
    from .metrics import coverage

    interval = result.interval(0.95)
    out = {"std": atomic_write(os.path.join(out_dir, "std.npy"), lambda p: np.save(p, result.std.numpy())),
           "interval95": atomic_write(os.path.join(out_dir, "interval95.npy"),
                                      lambda p: np.save(p, torch.stack([interval.lower, interval.upper]).numpy())),
           "calibrated": interval.calibrated}
    std = result.std
    if interval.calibrated:
        std = result.calibrated_std
        out["std_calibrated"] = atomic_write(os.path.join(out_dir, "std_calibrated.npy"),
                                             lambda p: np.save(p, std.numpy()))
        out["calibration_scale"] = result.calibration.scale(0.95)
    label = "calibrated std" if interval.calibrated else "posterior std (uncalibrated)"
    if pb.x_true is not None:  # the coverage the user can check: fraction of pixels inside the interval
        mask = spec.support(pb.x_true) if spec is not None else None
        k = (interval.upper - result.x_hat)
        cov = coverage(result.x_hat, k, pb.x_true, 1.0, mask=mask)
        out["coverage95"] = float(cov.mean())
        label += f"\n95 % interval covers {100 * out['coverage95']:.1f} %"
    return out, std[mid].mean(0), label
