"""Measurements with a physical noise model: low-dose CT photon counts and the user's own MRI k-space.

Both functions return a :class:`MeasuredProblem`, a :class:`~invdiff.problem.Problem` (usable by
:func:`invdiff.solve` and every solver as it is) that also carries what maps the problem's
[0, 1] units back to the data's own: the intensity ``scale``, the per-entry noise std when it is
not uniform (CT) and the coil sensitivities used (MRI).

* :func:`simulate_ct_poisson` — CT with a photon-count (Poisson) noise model, as in low-dose CT,
  log-transformed to the scaled sinogram of :mod:`invdiff.operators.ct`.
* :func:`mri_from_kspace` — a Cartesian MRI problem from measured complex k-space, its sampling
  mask and (given or estimated) coil sensitivities, normalised to [0, 1] intensities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import deepinv
import numpy as np
import torch

from .problem import Problem, check_sigma_y
from .validation import positive_int, real_number

__all__ = ["MeasuredProblem", "simulate_ct_poisson", "mri_from_kspace", "estimate_coil_maps",
           "calibration_width", "MU_WATER", "FOV_MM", "MAX_CALIB", "PERCENTILE"]

#: linear attenuation coefficient of water at about 70 keV (the effective energy of a 120 kVp
#: beam), in 1/mm
MU_WATER = 0.0192
#: field of view (mm) across the image width used when ``pixel_size`` is not given: a 40 cm body
#: field of view, so the physical attenuation does not depend on the grid resolution
FOV_MM = 400.0
#: largest calibration width (k-space lines) detected automatically (BART ``ecalib``'s default)
MAX_CALIB = 24
#: percentile of the zero-filled image magnitude mapped to intensity 1 by :func:`mri_from_kspace`
PERCENTILE = 99.5
#: fraction of the largest low-resolution coil magnitude below which a pixel counts as empty
_FLOOR = 1e-6


@dataclass(frozen=True)
class MeasuredProblem(Problem):
    """A :class:`~invdiff.problem.Problem` built from a physical measurement model.

    It is a ``Problem`` (``physics``, ``y``, ``sigma_y``, ``x_true``) and solves like one; the
    extra fields map back to the data's own units and describe the noise.

    Attributes
    ----------
    scale : float
        The measurement in the data's own units is ``scale · y``. CT
        (:func:`simulate_ct_poisson`): the dimensionless physical line integral
        ``p = scale · (A x)``. MRI (:func:`mri_from_kspace`): the user's k-space is ``scale · y``
        and the image in the data's units is ``scale · x``.
    noise_std : torch.Tensor or None
        Per-entry standard deviation of the noise of ``y`` (same shape as ``y``) when it varies
        from entry to entry (CT photon counts: ``sigma_y`` is its root-mean-square); ``None``
        when the noise is white with std ``sigma_y``.
    coil_maps : torch.Tensor or None
        The complex coil sensitivities ``(N, H, W)`` of the operator (MRI), ``None`` otherwise.
    details : dict
        How the problem was built (model constants, estimation rules, counts), for the record.
    """

    scale: float = 1.0
    noise_std: torch.Tensor | None = field(default=None, compare=False)
    coil_maps: torch.Tensor | None = field(default=None, compare=False)
    details: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "scale", real_number(self.scale, "scale", low=0.0, low_open=True))
        if self.noise_std is not None:
            if not isinstance(self.noise_std, torch.Tensor) or tuple(self.noise_std.shape) != tuple(self.y.shape):
                raise ValueError(f"noise_std must be a tensor of the shape of y {tuple(self.y.shape)}, got "
                                 f"{getattr(self.noise_std, 'shape', type(self.noise_std).__name__)}")
            if not torch.isfinite(self.noise_std).all() or (self.noise_std < 0).any():
                raise ValueError("noise_std must hold finite values >= 0")
        if self.coil_maps is not None and (not isinstance(self.coil_maps, torch.Tensor)
                                           or not self.coil_maps.is_complex()):
            raise TypeError("coil_maps must be a complex tensor (N, H, W) or None")


# ---------------------------------------------------------------------------------------- CT


def _check_image01(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, C, H, W) in [0, 1], got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} spans [{lo:.4g}, {hi:.4g}]; the CT intensity rule x = (HU + 1000) / 2000 "
                         f"needs x in [0, 1] (clip it, or rescale Hounsfield units with it)")
    return x


def simulate_ct_poisson(x: torch.Tensor, physics, I0: float, *, mu_water: float = MU_WATER,
                        pixel_size: float | None = None, min_count: float = 0.5,
                        generator: torch.Generator) -> MeasuredProblem:
    r"""Simulate low-dose CT: Poisson photon counts, log-transformed to invdiff's scaled sinogram.

    The image ``x`` in [0, 1] holds CT intensities, ``x = (HU + 1000) / 2000``, so its linear
    attenuation is

    .. math:: \mu = \mu_w \left(1 + \frac{\mathrm{HU}}{1000}\right) = 2\,\mu_w\,x
              \quad [\mathrm{mm}^{-1}]

    (air ``x = 0``, water ``x = 0.5``, ``x = 1`` is +1000 HU, dense bone). ``physics.A x`` is the
    mean of ``x`` along each ray in image widths (:mod:`invdiff.operators.ct`), so the physical
    line integral of each detector bin is

    .. math:: p = s\,(A x), \qquad s = 2\,\mu_w\,W\,\Delta,

    with ``W`` the image width in pixels and ``Δ`` the pixel size in mm. Photon counts and the
    post-log measurement in sinogram units are

    .. math:: N \sim \mathrm{Poisson}\!\left(I_0\,e^{-p}\right), \qquad
              y = -\frac{1}{s}\log\frac{\max(N, n_{\min})}{I_0},

    where ``N = 0`` (photon starvation) is clamped to ``n_min = min_count`` before the log. By the
    delta method, ``y`` has mean ``≈ (p + 1/(2λ))/s`` and standard deviation

    .. math:: \sigma_i = \frac{1}{s\sqrt{\lambda_i}}, \qquad \lambda_i = I_0\,e^{-p_i},

    which varies from bin to bin (rays through more material see fewer photons). The returned
    problem's ``sigma_y`` is its root-mean-square over all bins,
    ``sqrt(mean_i σ_i²)``; ``noise_std`` holds the ``σ_i``. The delta method holds for
    ``λ_i ≳ 20`` expected photons; below that (photon starvation) ``y`` is biased and capped at
    ``−log(n_min / I0) / s`` where ``N = 0``. There is no electronic noise, scatter or beam
    hardening. With measured counts the same formula gives ``y``, and ``1/(s √N)`` estimates
    ``σ_i``.

    Parameters
    ----------
    x : torch.Tensor
        Images ``(B, C, H, W)`` in [0, 1] (values outside are refused: they have no attenuation
        under the intensity rule).
    physics : invdiff.operators.CT
        An invdiff CT operator (:func:`~invdiff.operators.ct_sparse_view`,
        :func:`~invdiff.operators.ct_limited_angle`, :func:`~invdiff.operators.ct_parallel`).
    I0 : float
        Unattenuated photons per detector bin (blank-scan count), > 0: about ``1e4`` is low dose,
        ``1e5``–``1e6`` normal dose.
    mu_water : float
        Linear attenuation of water in 1/mm, > 0 (default :data:`MU_WATER` = 0.0192 /mm, about
        70 keV).
    pixel_size : float, optional
        Pixel size in mm, > 0. Default ``FOV_MM / W``: a 400 mm field of view across the image
        whatever its resolution.
    min_count : float
        Count that replaces ``N = 0`` before the log, in (0, 1] (default half a photon).
    generator : torch.Generator
        The only source of randomness (required): the same seed gives the same counts.

    Returns
    -------
    MeasuredProblem
        ``y`` the post-log sinogram in invdiff's units (shape and dtype of ``physics.A(x)``),
        ``sigma_y`` the RMS delta-method std, ``noise_std`` the per-bin std ``σ_i``, ``scale`` the
        factor ``s`` (``p = s · A x``), ``x_true`` a copy of ``x``; ``details`` holds the model
        constants, the counts ``N`` and how many bins were clamped.

    Raises
    ------
    TypeError
        ``physics`` is not an invdiff CT operator, ``x`` is not a real floating tensor, or
        ``generator`` is not a ``torch.Generator``.
    ValueError
        ``x`` is outside [0, 1] or not finite; ``I0``, ``mu_water``, ``pixel_size`` not finite and
        > 0; ``min_count`` not in (0, 1].
    """
    from .operators.ct import CT

    if not isinstance(physics, CT):
        raise TypeError(f"physics must be an invdiff CT operator (e.g. invdiff.operators.ct_sparse_view), got "
                        f"{type(physics).__name__}: the photon-count model needs line integrals")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (the photon counts are random; invdiff draws "
                        f"only from an explicit generator), got {type(generator).__name__}")
    x = _check_image01(x)
    I0 = real_number(I0, "I0", low=0.0, low_open=True)
    mu_water = real_number(mu_water, "mu_water", low=0.0, low_open=True)
    width = physics.img_shape[-1]
    pixel_size = FOV_MM / width if pixel_size is None else real_number(pixel_size, "pixel_size", low=0.0,
                                                                       low_open=True)
    min_count = real_number(min_count, "min_count", low=0.0, high=1.0, low_open=True)
    s = 2.0 * mu_water * width * pixel_size
    with torch.no_grad():
        ax = physics.A(x)
    dev = generator.device
    p = s * ax.to(device=dev, dtype=torch.float64).clamp_min(0.0)
    lam = I0 * torch.exp(-p)
    counts = torch.poisson(lam, generator=generator)
    y = -torch.log(counts.clamp_min(min_count) / I0) / s
    std = 1.0 / (s * torch.sqrt(lam))
    if not torch.isfinite(std).all():
        raise ValueError(f"the expected count I0·exp(-p) underflows to 0 in some bins (I0 = {I0:g}, largest line "
                         f"integral {float(p.max()):.4g}): lower mu_water or pixel_size, or raise I0")
    sigma_y = float(torch.sqrt((std ** 2).mean()))
    details = {"model": "poisson", "I0": I0, "mu_water": mu_water, "pixel_size": pixel_size,
               "min_count": min_count, "counts": counts.to(ax.device, torch.float32),
               "n_clamped": int((counts < min_count).sum()), "min_expected_count": float(lam.min())}
    return MeasuredProblem(physics=physics, y=y.to(ax.device, ax.dtype), sigma_y=sigma_y, x_true=x.clone(),
                           scale=s, noise_std=std.to(ax.device, ax.dtype), details=details)


# --------------------------------------------------------------------------------------- MRI


def _as_complex_kspace(kspace) -> tuple[torch.Tensor, bool]:
    """``kspace`` as complex128 ``(N, H, W)`` and whether it was given single-coil ``(H, W)``."""
    if isinstance(kspace, np.ndarray):
        if not np.iscomplexobj(kspace):
            raise TypeError(f"kspace must be complex (Cartesian k-space has real and imaginary parts), got dtype "
                            f"{kspace.dtype}; real/imaginary channels k[..., 0], k[..., 1] convert with "
                            f"k[..., 0] + 1j * k[..., 1]")
        kspace = torch.from_numpy(np.ascontiguousarray(kspace))
    if not isinstance(kspace, torch.Tensor):
        raise TypeError(f"kspace must be a complex NumPy array or torch tensor (N, H, W) or (H, W), got "
                        f"{type(kspace).__name__}")
    if not kspace.is_complex():
        raise TypeError(f"kspace must be complex (Cartesian k-space has real and imaginary parts), got dtype "
                        f"{kspace.dtype}; real/imaginary channels k[..., 0], k[..., 1] convert with "
                        f"torch.complex(k[..., 0], k[..., 1])")
    if kspace.ndim not in (2, 3) or min(kspace.shape) < 1:
        raise ValueError(f"kspace must have shape (N, H, W) (N coils) or (H, W) (one coil), got "
                         f"{tuple(kspace.shape)}")
    k = kspace.detach().to("cpu", torch.complex128)
    if not torch.isfinite(torch.view_as_real(k)).all():
        raise ValueError("kspace contains NaN or Inf values")
    single = k.ndim == 2
    return (k[None] if single else k), single


def _as_mask(mask, h: int, w: int) -> torch.Tensor:
    """``mask`` as a float64 0/1 ``(H, W)`` tensor (a ``(W,)`` mask of phase-encoding columns is
    repeated over the rows)."""
    if isinstance(mask, (str, bytes)) or mask is None:
        raise TypeError(f"mask must be a 0/1 array (H, W) or (W,), got {type(mask).__name__}")
    try:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"mask must be a 0/1 array (H, W) or (W,), got {type(mask).__name__}") from None
    if m.is_complex():
        raise TypeError(f"mask must hold real 0/1 values (bool, integer or float), got dtype {m.dtype}")
    m = m.detach().to("cpu", torch.float64)
    if m.ndim == 1:
        if m.shape[0] != w:
            raise ValueError(f"mask of shape ({m.shape[0]},) must have one entry per k-space column (W = {w})")
        m = m[None].expand(h, w)
    if m.ndim != 2 or tuple(m.shape) != (h, w):
        raise ValueError(f"mask must have shape ({h}, {w}) (that of the k-space) or ({w},), got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("mask contains NaN or Inf values")
    if ((m != 0) & (m != 1)).any():
        raise ValueError("mask must hold only 0 (not sampled) and 1 (sampled)")
    if m.sum() == 0:
        raise ValueError("mask samples no k-space location: there is no measurement")
    return m.contiguous()


def _block(h: int, w: int, c: int) -> tuple[slice, slice]:
    """Rows and columns of the centred ``c × c`` block of centred k-space (rows capped at ``H``)."""
    ch, cw = min(c, h), min(c, w)
    r0, c0 = h // 2 - ch // 2, w // 2 - cw // 2
    return slice(r0, r0 + ch), slice(c0, c0 + cw)


def calibration_width(mask, limit: int | None = None) -> int:
    """Width ``c`` of the largest centred ``c × c`` block that ``mask`` samples fully (0 if it
    misses the k-space centre ``(H//2, W//2)``), at most ``limit`` (default ``min(H, W)``).

    ``mask`` is a 0/1 ``(H, W)`` tensor of centred k-space (DC at ``(H//2, W//2)``).
    """
    m = torch.as_tensor(mask) != 0
    h, w = m.shape
    limit = min(h, w) if limit is None else min(limit, h, w)
    c = 0
    while c < limit and bool(m[_block(h, w, c + 1)].all()):
        c += 1
    return c


def _hann(n: int) -> torch.Tensor:
    """Hann window of ``n`` points without its zero end points: ``sin²(π (k + 1) / (n + 1))``."""
    return torch.sin(math.pi * (torch.arange(n, dtype=torch.float64) + 1) / (n + 1)) ** 2


def _low_resolution(k: torch.Tensor, calib: int) -> torch.Tensor:
    """Low-resolution coil images ``(N, H, W)`` from the Hann-windowed central ``calib × calib``
    block of the k-space ``k`` (all else zero)."""
    n, h, w = k.shape
    rows, cols = _block(h, w, calib)
    win = _hann(rows.stop - rows.start)[:, None] * _hann(cols.stop - cols.start)[None, :]
    kc = torch.zeros_like(k)
    kc[:, rows, cols] = k[:, rows, cols] * win
    return deepinv.physics.MRI.ifft(kc)


def estimate_coil_maps(kspace, calib: int) -> torch.Tensor:
    r"""Coil sensitivities from the calibration region, by the sum-of-squares rule.

    With ``I_c`` the low-resolution image of coil ``c`` (inverse centred orthonormal DFT of the
    central ``calib × calib`` block of k-space, Hann-windowed so that the estimate is smooth and
    free of ringing),

    .. math:: \hat S_c = \frac{I_c}{\sqrt{\sum_{c'} |I_{c'}|^2}},

    so ``Σ_c |Ŝ_c|² = 1`` at every pixel whose low-resolution root-sum-of-squares exceeds
    ``1e-6`` of its maximum (and less in emptier pixels, where the object is zero). This is the
    sum-of-squares (Walsh-free) approximation, not full ESPIRiT: no eigen-decomposition of the
    calibration matrix and no masking of the background, where the maps are noise with unit
    norm (harmless: the object is zero there). Because ``I_c ≈ S_c m`` for a smooth ``S_c``, the
    estimate is ``Ŝ_c ≈ S_c e^{i φ}`` with ``φ`` the low-resolution phase of the object ``m``:
    the object's smooth phase goes into the maps and the image ``Σ_c Ŝ_c^* k``-combined is real
    and non-negative (its magnitude). With one coil this is the phase map ``I / |I|``.

    Parameters
    ----------
    kspace : complex tensor ``(N, H, W)``
        Centred k-space of ``N`` coils (DC at ``(H//2, W//2)``).
    calib : int
        Width in k-space lines of the centred, fully sampled calibration block (>= 1).

    Returns
    -------
    torch.Tensor
        complex128 maps ``(N, H, W)``.
    """
    k = torch.as_tensor(kspace)
    if not k.is_complex() or k.ndim != 3:
        raise TypeError(f"kspace must be a complex tensor (N, H, W), got {k.dtype} {tuple(k.shape)}")
    calib = positive_int(calib, "calib")
    low = _low_resolution(k.to(torch.complex128), calib)
    rss = torch.sqrt((low.abs() ** 2).sum(0))
    top = float(rss.max())
    if top == 0.0:
        raise ValueError("kspace is zero in the calibration region: no coil sensitivities can be estimated")
    return low / rss.clamp_min(_FLOOR * top)


def _mad_std(v: torch.Tensor) -> float:
    """Robust standard deviation ``1.4826 · median(|v − median v|)``."""
    med = v.median()
    return float(1.4826 * (v - med).abs().median())


def mri_from_kspace(kspace, mask, coils=None, *, sigma_y: float | None = None, calib: int | None = None,
                    phase_correct: bool = True, scale: float | None = None) -> MeasuredProblem:
    r"""A Cartesian MRI problem from the user's complex k-space, its sampling mask and coil maps.

    The measured k-space ``k_c`` of coil ``c`` (``c = 1..N``) at the sampled locations ``M`` is
    modelled as

    .. math:: k_c = M\,F\,(S_c\, x)\cdot s + \text{noise}, \qquad y = k / s,

    with ``F`` the orthonormal centred 2D DFT of deepinv's MRI operators
    (``fftshift(fft2(ifftshift(·), norm="ortho"))``: DC at index ``(H//2, W//2)``), ``S_c`` the
    coil sensitivities and ``x`` a **real** image in [0, 1] (invdiff's MRI operators take real
    images, :func:`~invdiff.operators.mri_cartesian`); ``s`` (``scale``) maps the [0, 1] image
    back to the data's units (``scale · x``).

    Phase. A real image model fits a real object only after the object's phase ``φ`` is put in
    the maps (``S_c e^{iφ}``). Estimated maps (``coils=None``) carry the object's low-resolution
    phase by construction (:func:`estimate_coil_maps`), with one coil too (a phase map). Given
    maps are multiplied by the phase of the low-resolution combined image
    ``Σ_c S_c^* I_c`` when ``phase_correct`` (default), so the reconstruction is the object's
    magnitude wherever its phase is smooth on the scale of the calibration region. A phase that
    varies faster (flow, susceptibility, fat–water shifts) is outside this model: the real image
    then fits only part of the data. ``phase_correct=False`` uses given maps as they are, and a
    single coil without maps as ``S = 1`` (the real part of the zero-filled image), which suits
    k-space of a real object, e.g. simulated by the invdiff operator.

    Intensities. The k-space is divided by ``s``, the 99.5th percentile
    (:data:`PERCENTILE`) of the magnitude of the zero-filled coil-combined image
    ``|Σ_c S_c^* F^{-1} M k_c|`` (or by a given ``scale``), so that the zero-filled image lies
    (almost) in [0, 1]. The reconstruction exceeds 1 where the brightest 0.5 % of the object
    is brighter than that percentile or undersampling blurred the zero-filled image; real data
    has no absolute intensity, so a prior trained on images of another range may want another
    ``scale``.

    Noise. ``sigma_y`` is the std of each real and imaginary part of ``y`` (k-space noise per
    coil, white and of equal level in all coils: pre-whiten multi-coil data with its noise
    covariance first). When not given it is estimated from the highest sampled frequencies:
    the robust std ``1.4826 · MAD`` of the real and imaginary parts of the sampled k-space
    values with ``|k_x| >= 3W/8`` and ``|k_y| >= 3H/8`` (the corners, outermost quarter of both
    axes, all coils), divided by ``s``. Images with much signal there (sharp synthetic phantoms)
    make it an overestimate; at least 16 such values are needed.

    Parameters
    ----------
    kspace : complex array or tensor, ``(N, H, W)`` or ``(H, W)``
        Centred Cartesian k-space (NumPy or torch, complex64/complex128) of ``N`` coils, or of
        one coil. Values outside the mask are ignored.
    mask : 0/1 array or tensor, ``(H, W)`` or ``(W,)``
        Sampled locations (``(W,)``: sampled phase-encoding columns, all rows read out).
    coils : complex array or tensor ``(N, H, W)`` (``(H, W)`` for one coil), optional
        Coil sensitivities. Rescaled by one global factor if ``Σ_c |S_c|²`` exceeds 1 anywhere
        (so that ``‖A‖ <= 1``; the factor goes into ``scale``); ESPIRiT-style maps (1 in the
        object, 0 outside) are used as they are. ``None``: estimated from the calibration
        region by :func:`estimate_coil_maps` (sum of squares, not full ESPIRiT).
    sigma_y : float, optional
        Noise std in the units of ``y`` (the k-space divided by ``scale``), >= 0. Default:
        estimated as above. A std ``σ`` known in the data's own units (e.g. from a noise scan)
        is ``σ / pb.scale``: ``dataclasses.replace(pb, sigma_y=σ / pb.scale)``.
    calib : int, optional
        Width in k-space lines of the centred ``calib × calib`` calibration block, which must be
        fully sampled. Default: the largest such block, at most :data:`MAX_CALIB` = 24 lines
        (:func:`calibration_width`). Needed for ``coils=None`` and ``phase_correct``.
    phase_correct : bool
        Put the object's low-resolution phase into given maps (and estimate a phase map for a
        single coil without maps); see Phase above.
    scale : float, optional
        Divide the k-space by this (> 0) instead of the percentile rule of Intensities above,
        e.g. to match the intensity range of the prior's training images.

    Returns
    -------
    MeasuredProblem
        ``physics`` a :func:`~invdiff.operators.mri_cartesian` operator (multi-coil with the maps,
        or single-coil without), ``y`` its k-space ``(1, 2, N, H, W)`` (``(1, 2, H, W)`` single
        coil without maps), ``sigma_y``, ``scale``, ``coil_maps`` (complex64 or ``None``) and
        ``details`` (calibration width, how maps and ``sigma_y`` were obtained).

    Raises
    ------
    TypeError
        ``kspace`` or ``coils`` is not complex, ``mask`` is not real.
    ValueError
        Shapes do not match, NaN or Inf values, a mask that samples nothing or is not 0/1,
        a calibration region that is not fully sampled (or absent where needed), k-space that
        is zero where sampled, too few corner samples to estimate ``sigma_y``.
    """
    from .operators.mri import mri_cartesian

    k, single = _as_complex_kspace(kspace)
    n, h, w = k.shape
    m = _as_mask(mask, h, w)
    if not isinstance(phase_correct, bool):
        raise TypeError(f"phase_correct must be True or False, got {phase_correct!r}")
    if sigma_y is not None:
        sigma_y = check_sigma_y(sigma_y)
    if scale is not None:
        scale = real_number(scale, "scale", low=0.0, low_open=True)
    found = calibration_width(m, MAX_CALIB)
    if calib is None:
        calib = found
    else:
        calib = positive_int(calib, "calib")
        if calibration_width(m, calib) < calib:
            raise ValueError(f"calib = {calib}, but the mask fully samples only the central "
                             f"{calibration_width(m)}×{calibration_width(m)} block of k-space")
    km = k * m  # sampled k-space
    if coils is None:
        if n > 1 or phase_correct:
            if calib == 0:
                raise ValueError("coils=None needs a fully sampled calibration region at the k-space centre "
                                 f"(H//2, W//2) = ({h // 2}, {w // 2}), but the mask does not sample it: give "
                                 "coils" + (" or phase_correct=False" if n == 1 else ""))
            maps = estimate_coil_maps(km, calib)
            source = f"estimated: sum of squares of Hann-windowed {calib}×{calib} calibration images"
        else:
            maps, source = None, "none (single coil, S = 1)"
    else:
        if isinstance(coils, np.ndarray):
            coils = torch.from_numpy(np.ascontiguousarray(coils))
        if not isinstance(coils, torch.Tensor):
            raise TypeError(f"coils must be a complex array or tensor (N, H, W) or None, got {type(coils).__name__}")
        if not coils.is_complex():
            raise TypeError(f"coils must be complex sensitivities (N, H, W), got dtype {coils.dtype}")
        maps = coils.detach().to("cpu", torch.complex128)
        if maps.ndim == 2:
            maps = maps[None]
        if tuple(maps.shape) != (n, h, w):
            raise ValueError(f"coils must have shape ({n}, {h}, {w}) (one map per coil of the k-space), got "
                             f"{tuple(coils.shape)}")
        if not torch.isfinite(torch.view_as_real(maps)).all():
            raise ValueError("coils contains NaN or Inf values")
        energy = (maps.abs() ** 2).sum(0)
        if float(energy.max()) == 0.0:
            raise ValueError("coils is zero everywhere")
        if float(energy.max()) > 1.0:
            maps = maps / math.sqrt(float(energy.max()))
        source = "given"
        if phase_correct:
            if calib == 0:
                raise ValueError("phase_correct needs a fully sampled calibration region at the k-space centre "
                                 f"(H//2, W//2) = ({h // 2}, {w // 2}), but the mask does not sample it: pass "
                                 "phase_correct=False")
            combined = (maps.conj() * _low_resolution(km, calib)).sum(0)
            mag = combined.abs()
            phase = torch.where(mag > _FLOOR * float(mag.max()), combined / mag.clamp_min(1e-300),
                                torch.ones_like(combined))
            maps = maps * phase
            source = f"given, times the phase of the {calib}×{calib} low-resolution combined image"
    coil_images = deepinv.physics.MRI.ifft(km)
    zero_filled = coil_images[0] if maps is None else (maps.conj() * coil_images).sum(0)
    if not float(zero_filled.abs().max()) > 0.0:
        raise ValueError("kspace is zero at the sampled locations: the zero-filled image is empty")
    scale_rule = "given" if scale is not None else f"{PERCENTILE}th percentile of the zero-filled magnitude"
    if scale is None:
        scale = float(np.percentile(zero_filled.abs().numpy(), PERCENTILE))
        if not scale > 0.0:
            raise ValueError(f"the zero-filled image is zero in more than {100 - PERCENTILE:g} % of its pixels: "
                             f"give scale")
    if sigma_y is None:
        ky = (torch.arange(h) - h // 2).abs()[:, None].expand(h, w)
        kx = (torch.arange(w) - w // 2).abs()[None, :].expand(h, w)
        corner = (m != 0) & (8 * ky >= 3 * h) & (8 * kx >= 3 * w)
        vals = torch.view_as_real(k[:, corner]).reshape(-1)
        if vals.numel() < 16:
            raise ValueError(f"cannot estimate sigma_y: the mask samples {vals.numel() // 2} k-space value(s) in the "
                             f"corners (|k_x| >= 3W/8 and |k_y| >= 3H/8, all coils), 8 are needed: give sigma_y")
        sigma_y = _mad_std(vals) / scale
        sigma_source = "estimated: 1.4826 MAD of the real and imaginary sampled k-space corners / scale"
    else:
        sigma_source = "given"
    if maps is None:
        op = mri_cartesian((h, w), mask=m.float())
        y = torch.view_as_real(km[0] / scale).moveaxis(-1, 0)[None]  # (1, 2, H, W)
    else:
        op = mri_cartesian((h, w), mask=m.float(), coil_maps=maps.to(torch.complex64))
        y = torch.view_as_real(km / scale).moveaxis(-1, 0)[None]  # (1, 2, N, H, W)
    details = {"calib": calib, "coil_maps": source, "sigma_y": sigma_source, "phase_correct": phase_correct,
               "single_coil_input": single, "scale": scale_rule}
    return MeasuredProblem(physics=op, y=y.to(torch.float32).contiguous(), sigma_y=sigma_y, scale=scale,
                           coil_maps=None if maps is None else maps.to(torch.complex64), details=details)
