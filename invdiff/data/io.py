"""Image loaders: PNG/JPEG (scikit-image), DICOM (pydicom), ``.npy``, and bundled samples.

Every loader returns a float32 tensor ``(C, H, W)`` with intensities in [0, 1]. Nothing is
downloaded: the photographs are those scikit-image ships in its wheel, the DICOM samples those
pydicom ships.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["load_image", "load_dicom", "load_npy", "load_file", "load_folder", "sample_photo", "photo_crops", "atomic_write",
           "sample_photo_names", "dicom_sample", "DICOM_SAMPLES", "resize", "CT_HU_WINDOW", "hu_to_unit",
           "unit_to_hu", "atomic_write_dir"]

# Photographs shipped inside scikit-image's wheel (skimage.data), colour or grey.
_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
           "immunohistochemistry", "moon", "page", "text", "retina", "rocket", "colorwheel",
           "brick", "grass", "gravel", "clock", "cell")

# CT and MR test files shipped inside pydicom's wheel (pydicom.data).
DICOM_SAMPLES = ("CT_small.dcm", "MR_small.dcm")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: The CT intensity rule, in Hounsfield units: ``(lo, hi)`` maps to [0, 1] linearly (see :func:`hu_to_unit`).
CT_HU_WINDOW = (-1000.0, 1000.0)


def hu_to_unit(hu):
    """Hounsfield units to [0, 1] by the one CT intensity rule of invdiff.

    ``x = clip((HU + 1000) / 2000, 0, 1)`` (:data:`CT_HU_WINDOW`): air (-1000 HU) is 0, water
    (0 HU) is 0.5 and dense bone (+1000 HU and above) is 1. The CT contrast of the phantoms
    (:mod:`invdiff.data.phantoms`: air 0, lung 0.1, fat 0.36, soft tissue 0.5, bone 0.92)
    follows this rule roughly (lung about -800 HU, fat about -280 HU, bone about +840 HU), so
    real CT loaded with it (``load_dicom(..., rule="hu")``, ``load_dicom_series``) looks like
    what the shipped CT priors were trained on.

    Parameters
    ----------
    hu : float, numpy.ndarray or torch.Tensor
        Values in Hounsfield units.

    Returns
    -------
    float, numpy.ndarray or torch.Tensor
        Same type (arrays and tensors as float32) with values in [0, 1].
    """
    lo, hi = CT_HU_WINDOW
    if isinstance(hu, torch.Tensor):
        return ((hu.float() - lo) / (hi - lo)).clamp(0, 1)
    if isinstance(hu, np.ndarray):
        return np.clip((hu.astype(np.float64) - lo) / (hi - lo), 0, 1).astype(np.float32)
    return float(min(max((float(hu) - lo) / (hi - lo), 0.0), 1.0))


def unit_to_hu(x):
    """The inverse of :func:`hu_to_unit` on [0, 1]: ``HU = -1000 + 2000 * clip(x, 0, 1)``.

    HU outside :data:`CT_HU_WINDOW` are not recovered: ``unit_to_hu(hu_to_unit(hu))`` is
    ``clip(hu, -1000, 1000)``. Arrays and tensors come back as float32 (float64 for numpy
    inputs that are float64, so stored values can be rounded exactly).
    """
    lo, hi = CT_HU_WINDOW
    if isinstance(x, torch.Tensor):
        return lo + (hi - lo) * x.float().clamp(0, 1)
    if isinstance(x, np.ndarray):
        out = lo + (hi - lo) * np.clip(x.astype(np.float64), 0, 1)
        return out if x.dtype == np.float64 else out.astype(np.float32)
    return lo + (hi - lo) * min(max(float(x), 0.0), 1.0)


def _to_tensor(arr: np.ndarray, channels: int | None, source: str) -> torch.Tensor:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / np.iinfo(arr.dtype).max
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise ValueError(f"{source}: expected a 2D image or (H, W, C) with C in 1, 3, 4, got shape {arr.shape}")
    if arr.shape[0] == 4:  # drop alpha
        arr = arr[:3]
    if not np.isfinite(arr).all():
        raise ValueError(f"{source}: image contains NaN or Inf values")
    x = torch.from_numpy(np.ascontiguousarray(arr))
    return set_channels(x, channels, source)


def set_channels(x: torch.Tensor, channels: int | None, source: str) -> torch.Tensor:
    if channels is None or x.shape[0] == channels:
        return x
    if channels == 1 and x.shape[0] == 3:
        w = torch.tensor([0.2125, 0.7154, 0.0721])  # ITU-R BT.709, as skimage.color.rgb2gray
        return (x * w[:, None, None]).sum(0, keepdim=True)
    if channels == 3 and x.shape[0] == 1:
        return x.expand(3, -1, -1).clone()
    raise ValueError(f"{source}: cannot convert {x.shape[0]} channels to {channels}")


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Centre-crop ``x`` ``(C, H, W)`` to a square and resize (area averaging) to ``size``."""
    import torch.nn.functional as F

    if isinstance(size, int):
        size = (size, size)
    c, h, w = x.shape
    ratio = size[1] / size[0]
    if w / h > ratio:
        nw = int(round(h * ratio))
        x = x[:, :, (w - nw) // 2:(w - nw) // 2 + nw]
    else:
        nh = int(round(w / ratio))
        x = x[:, (h - nh) // 2:(h - nh) // 2 + nh, :]
    mode = "area" if x.shape[-1] >= size[1] else "bicubic"
    out = F.interpolate(x[None], size=tuple(size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return out[0].clamp(0, 1)


def existing_file(path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {str(p)!r}")
    return p


def load_image(path, *, channels: int | None = None) -> torch.Tensor:
    """Read a PNG/JPEG/TIFF with scikit-image; integers are scaled by their dtype's maximum."""
    from skimage import io as skio

    p = existing_file(path)
    try:
        arr = skio.imread(str(p))
    except Exception as err:  # noqa: BLE001 - any decoder failure is reported the same way
        raise ValueError(f"cannot read image {str(p)!r}: {err}") from err
    return _to_tensor(arr, channels, str(p))


def load_npy(path, *, channels: int | None = None, normalize: bool = False) -> torch.Tensor:
    """Read a ``.npy`` array ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)``.

    Values are taken as they are (they should already be in [0, 1]; an array reaching beyond
    [-1, 2], such as 8-bit 0–255 data, raises ``ValueError``); ``normalize=True`` maps the
    array's minimum and maximum to 0 and 1.
    """
    p = existing_file(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read .npy file {str(p)!r}: {err}") from err
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.size == 0 or arr.dtype.kind not in "biuf":
        raise ValueError(f".npy file {str(p)!r} must hold a non-empty real array, got dtype {arr.dtype} and "
                         f"shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f".npy file {str(p)!r} contains NaN or Inf")
    lo, hi = float(arr.min()), float(arr.max())
    if normalize:
        arr = (arr - lo) / max(hi - lo, 1e-12)
    elif lo < -1.0 or hi > 2.0:
        raise ValueError(f".npy file {str(p)!r} spans [{lo:.4g}, {hi:.4g}], but images are in [0, 1]: rescale it "
                         f"(e.g. divide 8-bit data by 255) or load it with normalize=True")
    return _to_tensor(arr, channels, str(p))


def load_dicom(path, *, window: tuple[float, float] | None = None,
               channels: int | None = None, rule: str = "window") -> torch.Tensor:
    """Read one DICOM slice with pydicom, apply rescale slope/intercept, window to [0, 1].

    Parameters
    ----------
    path : str or Path
    window : (center, width), optional
        Intensity window in rescaled units (Hounsfield units for CT). Defaults to the file's
        first ``WindowCenter``/``WindowWidth`` when present, else the slice's min–max.
        Only with ``rule="window"``.
    rule : {"window", "hu"}
        ``"window"`` (default): the window above. ``"hu"``: the shared CT rule
        :func:`hu_to_unit` (``clip((HU + 1000) / 2000, 0, 1)``), for CT files only (Modality CT;
        other modalities raise ``ValueError``).

    Returns
    -------
    torch.Tensor
        ``(1, H, W)`` float32 in [0, 1]: ``clip((v - (center - width/2)) / width, 0, 1)``
        with ``v = slope * stored + intercept``.
    """
    if rule not in ("window", "hu"):
        raise ValueError(f"rule must be 'window' or 'hu', got {rule!r}")
    if rule == "hu" and window is not None:
        raise ValueError("give either window=(center, width) or rule='hu' (a fixed window of -1000..1000 HU), not both")
    import pydicom

    p = existing_file(path)
    try:
        ds = pydicom.dcmread(str(p))
        arr = ds.pixel_array.astype(np.float64)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read DICOM file {str(p)!r}: {err}") from err
    if arr.ndim != 2:
        raise ValueError(f"{str(p)!r}: expected a single 2D grey slice, got pixel array of shape {arr.shape}")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    v = arr * slope + intercept
    if rule == "hu":
        modality = str(getattr(ds, "Modality", "") or "")
        if modality.upper() != "CT":
            raise ValueError(f"{str(p)!r}: rule='hu' (Hounsfield units) needs a CT file, but its Modality is "
                             f"{modality or 'missing'!r}; load it with rule='window'")
        return _to_tensor(hu_to_unit(v), channels, str(p))
    if window is None:
        center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
        if center is not None and width is not None:
            first = lambda t: float(t[0]) if isinstance(t, pydicom.multival.MultiValue) else float(t)  # noqa: E731
            window = (first(center), first(width))
        else:
            window = ((v.max() + v.min()) / 2, max(v.max() - v.min(), 1e-12))
    center, width = window
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    out = np.clip((v - (center - width / 2)) / width, 0, 1).astype(np.float32)
    return _to_tensor(out, channels, str(p))


def load_file(path, *, channels: int | None = None) -> torch.Tensor:
    """Dispatch on the suffix: ``.dcm`` → :func:`load_dicom`, ``.npy`` → :func:`load_npy`,
    image suffixes → :func:`load_image`."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".dcm":
        return load_dicom(p, channels=channels)
    if suffix == ".npy":
        return load_npy(p, channels=channels)
    if suffix in IMAGE_SUFFIXES:
        return load_image(p, channels=channels)
    raise ValueError(f"{str(p)!r}: unknown file type {suffix!r}; expected .dcm, .npy or one of {IMAGE_SUFFIXES}")


def load_folder(folder, *, channels: int | None = None) -> list[torch.Tensor]:
    """Every PNG/JPEG/TIFF/DICOM/npy file in ``folder`` (sorted, not recursive)."""
    d = Path(folder)
    if not d.is_dir():
        raise FileNotFoundError(f"no such folder: {str(d)!r}")
    files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES + (".dcm", ".npy"))
    if not files:
        raise ValueError(f"folder {str(d)!r} holds no .png/.jpg/.tif/.dcm/.npy files")
    return [load_file(f, channels=channels) for f in files]


def sample_photo_names() -> tuple[str, ...]:
    """Names of the photographs scikit-image ships (usable offline)."""
    return _PHOTOS


def sample_photo(name: str, *, channels: int | None = 3, size=None) -> torch.Tensor:
    """A photograph that scikit-image ships, ``(C, H, W)`` in [0, 1].

    ``size`` (int or (H, W)) centre-crops to the aspect ratio and resizes.
    """
    import skimage.data

    if name not in _PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; available: {', '.join(_PHOTOS)}")
    x = _to_tensor(getattr(skimage.data, name)(), channels, f"skimage.data.{name}")
    return resize(x, size) if size is not None else x


def dicom_sample(name: str = "CT_small.dcm", *, window=None) -> torch.Tensor:
    """One of the DICOM files pydicom ships (``CT_small.dcm``, ``MR_small.dcm``), ``(1, H, W)``."""
    from pydicom.data import get_testdata_file

    if name not in DICOM_SAMPLES:
        raise ValueError(f"unknown DICOM sample {name!r}; available: {', '.join(DICOM_SAMPLES)}")
    return load_dicom(get_testdata_file(name), window=window)


def photo_crops(names, n, size, generator):
    """``n`` random ``size``-pixel crops of the scikit-image photographs ``names``, at scales 0.125–0.5.

    Photographs are used in turn; each crop first shrinks its photograph by a random factor in
    [0.125, 0.5] (area averaging), then takes a random window. Returns ``(n, 3, size, size)``.
    """
    import torch.nn.functional as F

    images = [sample_photo(name, channels=3) for name in names]
    out = []
    for i in range(n):
        img = images[i % len(images)]
        s = float(torch.empty(()).uniform_(0.125, 0.5, generator=generator))
        h, w = max(size, int(img.shape[-2] * s)), max(size, int(img.shape[-1] * s))
        lv = F.interpolate(img[None], size=(h, w), mode="area")[0]
        a = int(torch.randint(h - size + 1, (1,), generator=generator))
        b = int(torch.randint(w - size + 1, (1,), generator=generator))
        out.append(lv[:, a:a + size, b:b + size])
    return torch.stack(out).clamp(0, 1)


def atomic_write(path, writer) -> str:
    """Call ``writer(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    An interrupted or failing write never leaves a partial file at ``path`` (nor the temporary).
    """
    import os
    import tempfile

    path = str(path)
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1], dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        writer(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions of an ordinary new file, not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_dir(folder, writer) -> str:
    """Call ``writer(tmp)`` on a new temporary folder next to ``folder``, then rename it to ``folder``.

    The folder appears whole or not at all: a failing ``writer`` leaves neither ``folder`` nor
    the temporary folder behind. An existing empty ``folder`` is replaced; an existing file or
    non-empty folder raises ``FileExistsError`` (nothing is overwritten).

    Parameters
    ----------
    folder : str or Path
        The folder to create.
    writer : callable
        ``writer(tmp)`` writes the folder's files into ``tmp`` (a ``str`` path that exists).

    Returns
    -------
    str
        ``folder``.
    """
    import os
    import shutil
    import tempfile

    folder = os.path.abspath(str(folder))
    parent = os.path.dirname(folder)

    def refuse_existing():
        if os.path.isdir(folder) and os.listdir(folder):
            raise FileExistsError(f"output folder {folder!r} exists and is not empty; give a new or empty folder")
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise FileExistsError(f"output folder {folder!r} exists as a file")

    refuse_existing()
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"no such folder: {parent!r} (the parent of the output folder {folder!r})")
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(folder) + ".", suffix=".tmp", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new folder
        writer(tmp)
        refuse_existing()
        os.replace(tmp, folder)  # POSIX rename: replaces an empty folder, fails on a non-empty one
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
