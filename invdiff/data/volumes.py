"""Volumes from and back to the user's files: NIfTI (nibabel) and DICOM series (pydicom).

A volume is a float32 tensor ``(D, C, H, W)`` in [0, 1] with slices on the first axis. The
loaders return it with an ``info`` object that remembers the file's geometry and how its
intensities were mapped to [0, 1], so the savers can write a reconstruction back where it came
from: the same affine / patient positions, the same on-disk data type, values mapped back to the
input's intensity scale.

* :func:`load_nifti` / :func:`save_nifti` with :class:`NiftiInfo`;
* :func:`load_dicom_series` / :func:`save_dicom_series` with :class:`DicomSeriesInfo`;
* :func:`resize_volume` centre-crops and resizes every slice (:func:`invdiff.data.resize`) and
  adjusts the geometry in ``info`` to match;
* :func:`volume_planes` gives the slices of a volume in its three orientations.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from .io import CT_HU_WINDOW, existing_file, set_channels, atomic_write, atomic_write_dir, resize

__all__ = ["NiftiInfo", "DicomSeriesInfo", "load_nifti", "save_nifti", "load_dicom_series", "save_dicom_series",
           "resize_volume", "volume_planes", "NIFTI_RULES", "DICOM_SERIES_RULES"]

#: intensity rules of :func:`load_nifti`
NIFTI_RULES = ("minmax", "percentile", "hu")
#: intensity rules of :func:`load_dicom_series`
DICOM_SERIES_RULES = ("hu", "window", "auto")
#: percentiles of the ``"percentile"`` rule
_PERCENTILES = (0.5, 99.5)


def _nibabel():
    try:
        import nibabel
    except ImportError as err:  # pragma: no cover - nibabel is installed with invdiff's test extras
        raise ImportError("reading NIfTI files needs nibabel: pip install nibabel") from err
    return nibabel


def _resize_map(h: int, w: int, size) -> tuple[float, float, float, float, int, int]:
    """Where :func:`invdiff.data.resize` samples: output pixel ``(r', c')`` of ``resize(x, size)``
    is centred on input pixel coordinates ``(r0 + sr * r', c0 + sc * c')`` (pixel centres at
    integers). Returns ``(r0, c0, sr, sc, out_h, out_w)``; mirrors ``resize``'s centre crop."""
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    ratio = out_w / out_h
    if w / h > ratio:
        crop_w = int(round(h * ratio))
        oh, ow, crop_h = 0, (w - crop_w) // 2, h
    else:
        crop_h = int(round(w / ratio))
        oh, ow, crop_w = (h - crop_h) // 2, 0, w
    sr, sc = crop_h / out_h, crop_w / out_w
    return oh + 0.5 * sr - 0.5, ow + 0.5 * sc - 0.5, sr, sc, out_h, out_w


def _as_volume(volume, name: str = "volume") -> np.ndarray:
    """``(D, C, H, W)`` or ``(D, H, W)`` tensor/array in [0, 1] -> float64 ``(D, H, W)`` (RGB -> grey)."""
    if isinstance(volume, np.ndarray):
        volume = torch.from_numpy(volume)
    if not isinstance(volume, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array (D, C, H, W), got {type(volume).__name__}")
    v = volume.detach().cpu()
    if v.ndim == 3:
        v = v[:, None]
    if v.ndim != 4 or v.shape[1] not in (1, 3) or v.numel() == 0:
        raise ValueError(f"{name} must be (D, C, H, W) with C in 1, 3 (or (D, H, W)), got shape {tuple(volume.shape)}")
    if v.is_complex() or v.dtype == torch.bool:
        raise TypeError(f"{name} must be real-valued, got dtype {v.dtype}")
    v = v.double()
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or Inf")
    if v.shape[1] == 3:
        v = torch.stack([set_channels(s, 1, name) for s in v])
    return v[:, 0].clamp(0, 1).numpy()


def _channels(x: torch.Tensor, channels: int, source: str) -> torch.Tensor:
    """``(D, 1, H, W)`` -> ``(D, channels, H, W)``."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    return x if channels == 1 else x.expand(-1, 3, -1, -1).contiguous()


# --------------------------------------------------------------------------------------------- NIfTI


@dataclasses.dataclass(frozen=True)
class NiftiInfo:
    """What :func:`save_nifti` needs to write a volume back like the NIfTI file it came from.

    Attributes
    ----------
    path : str
        The file read.
    affine : numpy.ndarray
        ``(4, 4)`` voxel-to-world affine of the voxel grid ``grid`` (the file's own affine, or
        the adjusted one after :func:`resize_volume`).
    header : nibabel header
        A copy of the file's header (data type, units, codes, description...).
    dtype : numpy.dtype
        The on-disk data type; :func:`save_nifti` writes the same one.
    slope, inter : float
        The file's ``scl_slope``/``scl_inter`` (1 and 0 when it has none): value = slope * stored + inter.
    lo, hi : float
        The intensity mapping: ``x = clip((value - lo) / (hi - lo), 0, 1)``; ``value = lo + x * (hi - lo)`` back.
    rule : str
        How ``lo, hi`` were chosen (:data:`NIFTI_RULES`).
    shape : tuple of int
        The shape of the file's data array (2D files and trailing singleton axes are written back
        the same way when the grid has not been resized).
    grid : tuple of int
        ``(I, J, K)`` voxel grid that ``affine`` describes; the volume is ``(K, C, J, I)``.
    """

    path: str
    affine: np.ndarray
    header: object
    dtype: np.dtype
    slope: float
    inter: float
    lo: float
    hi: float
    rule: str
    shape: tuple
    grid: tuple

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size along the three voxel axes (norms of the affine's columns), in the file's units."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def resized(self, size) -> "NiftiInfo":
        """The info of the volume after ``resize`` of every slice to ``size``: same world
        positions of the (resampled) voxel centres, in-plane voxel size scaled by the resize factor."""
        n_i, n_j, n_k = self.grid
        r0, c0, sr, sc, out_h, out_w = _resize_map(n_j, n_i, size)
        # volume pixel (h, w) of slice d is voxel (i, j, k) = (w, J - 1 - h, d); resized pixel
        # (h', w') sits on old (h, w) = (r0 + sr h', c0 + sc w'), and is voxel (w', J' - 1 - h', d) of the new grid
        m = np.eye(4)
        m[0, 0], m[0, 3] = sc, c0
        m[1, 1], m[1, 3] = sr, (n_j - 1 - r0) - sr * (out_h - 1)
        return dataclasses.replace(self, affine=self.affine @ m, grid=(out_w, out_h, n_k))


def load_nifti(path, *, rule: str = "minmax", channels: int = 1) -> tuple[torch.Tensor, NiftiInfo]:
    """Read a 3D (or 2D) NIfTI file with nibabel as a volume of slices.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` or ``.nii.gz`` file (NIfTI-1 or NIfTI-2) holding one real-valued 3D volume or
        2D slice. Trailing axes of length 1 are dropped; 4D data (fMRI, diffusion: several
        volumes) is refused: pick one volume first.
    rule : {"minmax", "percentile", "hu"}
        Intensity mapping to [0, 1] (after the file's ``scl_slope``/``scl_inter``):
        ``"minmax"`` maps the volume's minimum and maximum to 0 and 1 (no value is clipped, so a
        volume written back with :func:`save_nifti` keeps its values); ``"percentile"`` maps the
        0.5th and 99.5th percentiles to 0 and 1 and clips outliers; ``"hu"`` applies the CT rule
        :func:`invdiff.data.hu_to_unit` (for CT stored in Hounsfield units).
    channels : {1, 3}
        1 (grey) or 3 (the grey value repeated, for RGB priors).

    Returns
    -------
    volume : torch.Tensor
        ``(D, channels, H, W)`` float32 in [0, 1]. ``D`` runs along the file's third voxel axis
        (axial for RAS-like files); slice ``d`` is shown as viewers show a voxel array: columns
        ``w`` along the first voxel axis ``i``, rows ``h`` along the second axis ``j`` from its
        last index to its first (``volume[d, :, h, w] = data[w, J - 1 - h, d]``), so an axial
        slice of a RAS/LAS file appears anterior up, like the phantoms. A 2D file gives ``D = 1``.
    info : NiftiInfo
        Affine, header, on-disk dtype and the intensity mapping ``(lo, hi)``, for :func:`save_nifti`.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a NIfTI file; 4D (or higher) data; complex, RGB or empty data; NaN/Inf values; an
        unknown ``rule``.
    """
    nib = _nibabel()
    if rule not in NIFTI_RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, NIFTI_RULES))}, got {rule!r}")
    p = existing_file(path)
    try:
        img = nib.load(str(p))
    except Exception as err:  # noqa: BLE001 - any reader failure means "not a NIfTI file we can read"
        raise ValueError(f"{str(p)!r} is not a NIfTI file nibabel can read (.nii/.nii.gz): {err}") from err
    if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and the .hdr/.img pairs
        raise ValueError(f"{str(p)!r} is a {type(img).__name__} file, not NIfTI (.nii/.nii.gz)")
    dtype = np.dtype(img.get_data_dtype())
    shape = tuple(int(s) for s in img.shape)
    if dtype.kind == "c":
        raise ValueError(f"{str(p)!r} holds complex data ({dtype}); give a real-valued image (e.g. its magnitude)")
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise ValueError(f"{str(p)!r} holds {dtype} data (e.g. RGB); expected one real-valued (grey) volume")
    if len(shape) == 0 or 0 in shape:
        raise ValueError(f"{str(p)!r} holds no voxels (shape {shape})")
    if len(shape) == 1:
        raise ValueError(f"{str(p)!r} holds 1D data of shape {shape}; expected a 2D slice or a 3D volume")
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise ValueError(f"{str(p)!r} holds {len(shape)}D data of shape {shape} (several volumes, e.g. fMRI or "
                         f"diffusion); pick one 3D volume first, e.g. nibabel.load(path).slicer[..., t] or fslroi")
    try:
        data = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as err:  # noqa: BLE001 - truncated or corrupt data
        raise ValueError(f"cannot read the voxels of NIfTI file {str(p)!r}: {err}") from err
    grid = (shape + (1,))[:3] if len(shape) == 2 else shape[:3]
    data = data.reshape(grid)
    if not np.isfinite(data).all():
        raise ValueError(f"{str(p)!r} contains NaN or Inf values")
    if rule == "hu":
        lo, hi = CT_HU_WINDOW
    else:
        lo, hi = ((float(data.min()), float(data.max())) if rule == "minmax"
                  else tuple(float(v) for v in np.percentile(data, _PERCENTILES)))
        if not hi > lo:  # a constant volume: map it to 0 and write it back unchanged
            hi = lo + 1.0
    x = np.clip((data - lo) / (hi - lo), 0, 1)
    vol = np.ascontiguousarray(np.transpose(x[:, ::-1, :], (2, 1, 0)), dtype=np.float32)  # (K, J, I)
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    info = NiftiInfo(path=str(p), affine=np.array(img.affine, dtype=np.float64), header=img.header.copy(),
                     dtype=dtype, slope=float(1.0 if slope is None else slope),
                     inter=float(0.0 if inter is None else inter), lo=float(lo), hi=float(hi), rule=rule,
                     shape=shape, grid=tuple(int(g) for g in grid))
    return _channels(torch.from_numpy(vol)[:, None], channels, str(p)), info


def _to_stored(values: np.ndarray, dtype: np.dtype, slope: float, inter: float) -> np.ndarray:
    """Physical values -> stored values of ``dtype`` (rounded and clipped to its range for integers)."""
    stored = (values - inter) / slope
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(stored), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return stored >= 0.5
    return stored.astype(dtype)


def save_nifti(path, volume, info: NiftiInfo) -> str:
    """Write ``volume`` as a NIfTI file with the geometry and intensity scale of ``info``.

    Parameters
    ----------
    path : str or Path
        Output file, ending ``.nii`` or ``.nii.gz``; written atomically (under a temporary name,
        then renamed), so a failure leaves nothing behind.
    volume : torch.Tensor or numpy.ndarray
        ``(D, C, H, W)`` (or ``(D, H, W)``) in [0, 1] on ``info``'s grid: ``D = K``, ``H = J``,
        ``W = I`` (use :func:`resize_volume` to keep ``info`` in step with a resize). RGB
        (``C = 3``) is written as grey (ITU-R BT.709 weights).
    info : NiftiInfo
        From :func:`load_nifti` (or :func:`resize_volume`).

    Returns
    -------
    str
        ``path``.

    Notes
    -----
    Values are mapped back with ``value = lo + x * (hi - lo)`` and stored in the input's data
    type with the input's ``scl_slope``/``scl_inter``; integer types are rounded (and clipped to
    the type's range), so writing back the volume :func:`load_nifti` returned with
    ``rule="minmax"`` reproduces the input's values within the type's rounding. The header is
    the input's, with the data shape, the affine (sform and qform) and the voxel sizes updated.
    """
    nib = _nibabel()
    if not isinstance(info, NiftiInfo):
        raise TypeError(f"info must be the NiftiInfo that load_nifti returned, got {type(info).__name__}")
    name = str(path)
    if not name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"NIfTI output {name!r} must end with .nii or .nii.gz")
    x = _as_volume(volume)  # (D, H, W)
    n_i, n_j, n_k = info.grid
    if x.shape != (n_k, n_j, n_i):
        raise ValueError(f"volume has {x.shape[0]} slices of {x.shape[1]}×{x.shape[2]}, but the NIfTI grid of "
                         f"{info.path!r} is {n_k} slices of {n_j}×{n_i} (resize with resize_volume to update info)")
    values = info.lo + x * (info.hi - info.lo)
    arr = np.transpose(values, (2, 1, 0))[:, ::-1, :]  # (I, J, K): arr[i, j, d] = volume[d, J - 1 - j, i]
    if (n_i, n_j, n_k) == tuple(info.shape[:3] + (1,) * (3 - len(info.shape)))[:3]:
        arr = arr.reshape(info.shape)  # a 2D slice stays 2D; trailing singleton axes come back
    scaled = not (info.slope == 1.0 and info.inter == 0.0)
    stored = np.ascontiguousarray(_to_stored(arr, info.dtype, info.slope, info.inter))
    header = info.header.copy()
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(stored, info.affine, header=header)
    img.header.set_data_dtype(info.dtype)
    if scaled:
        img.header.set_slope_inter(info.slope, info.inter)  # kept as is: the stored values are already scaled

    def write(tmp):
        data = img.to_bytes()
        if name.endswith(".gz"):
            import gzip

            data = gzip.compress(data, compresslevel=6)
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(name, write)


# --------------------------------------------------------------------------------------------- DICOM series


@dataclasses.dataclass(frozen=True)
class DicomSeriesInfo:
    """What :func:`save_dicom_series` needs to write a volume back as a DICOM series.

    Attributes
    ----------
    folder : str
        The folder read.
    files : tuple of str
        The slices' files, in slice order.
    datasets : tuple of pydicom.Dataset
        Each slice's header (pixel data dropped), in slice order: the templates of the output
        files (patient, study, frame of reference, rescale slope/intercept, ...).
    positions : numpy.ndarray or None
        ``(D, 3)`` ImagePositionPatient of each slice (mm; centre of its first pixel) on the
        current grid; None when the files have no positions (ordered by InstanceNumber).
    orientation : numpy.ndarray or None
        The 6 direction cosines of ImageOrientationPatient (row direction, column direction).
    pixel_spacing : tuple of float or None
        PixelSpacing ``(between rows, between columns)`` in mm on the current grid.
    slice_spacing : float or None
        Distance between slices along the normal (mm), None for one slice without thickness.
    rows, columns : int
        Slice size on the current grid.
    lo, hi : float
        Intensity mapping in rescaled units (HU for CT): ``x = clip((v - lo) / (hi - lo), 0, 1)``,
        with ``v = RescaleSlope * stored + RescaleIntercept``.
    rule : str
        ``"hu"`` (the CT rule, ``lo, hi = -1000, 1000``) or ``"window"``.
    """

    folder: str
    files: tuple
    datasets: tuple
    positions: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple | None
    slice_spacing: float | None
    rows: int
    columns: int
    lo: float
    hi: float
    rule: str

    @property
    def window(self) -> tuple[float, float]:
        """``(center, width)`` of the intensity mapping (recorded as WindowCenter/WindowWidth)."""
        return (self.lo + self.hi) / 2, self.hi - self.lo

    @property
    def normal(self) -> np.ndarray | None:
        """Unit slice normal (row direction × column direction), or None without an orientation."""
        if self.orientation is None:
            return None
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / np.linalg.norm(n)

    def resized(self, size) -> "DicomSeriesInfo":
        """The info after ``resize`` of every slice to ``size``: positions moved to the centre of the
        new first pixel, pixel spacing scaled by the resize factor."""
        r0, c0, sr, sc, out_h, out_w = _resize_map(self.rows, self.columns, size)
        positions, spacing = self.positions, self.pixel_spacing
        if spacing is not None:
            if positions is not None and self.orientation is not None:
                shift = self.orientation[:3] * c0 * spacing[1] + self.orientation[3:] * r0 * spacing[0]
                positions = positions + shift
            spacing = (spacing[0] * sr, spacing[1] * sc)
        return dataclasses.replace(self, positions=positions, pixel_spacing=spacing, rows=out_h, columns=out_w)


def _floats(ds, keyword: str, n: int):
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        out = np.array([float(v) for v in (value if not isinstance(value, (str, bytes, float, int)) else [value])])
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) else None


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _read_series(d: Path) -> list:
    import pydicom
    from pydicom.errors import InvalidDicomError

    found = []
    for f in sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")):
        try:
            ds = pydicom.dcmread(str(f))
        except InvalidDicomError as err:
            if f.suffix.lower() == ".dcm":
                raise ValueError(f"cannot read DICOM file {str(f)!r}: {err}") from err
            continue  # not DICOM (a README, a .nii, ...): skipped
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"cannot read DICOM file {str(f)!r}: {err}") from err
        if "PixelData" in ds:  # DICOMDIR, reports and other non-image objects are skipped
            found.append((f, ds))
    return found


def _describe(groups: dict) -> str:
    return "; ".join(f"{key} ({len(files)} files, e.g. {files[0].name})" for key, files in groups.items())


def _group(found, key) -> dict:
    groups: dict = {}
    for f, ds in found:
        groups.setdefault(key(ds), []).append(f)
    return groups


def load_dicom_series(folder, *, rule: str = "hu", channels: int = 1) -> tuple[torch.Tensor, DicomSeriesInfo]:
    """Read a folder holding one DICOM series as a volume of slices.

    Every file of ``folder`` (not recursive, hidden files skipped) that pydicom reads as DICOM
    and that holds pixel data is a slice; other files are skipped (a ``.dcm`` file that is not
    DICOM raises). Slices are sorted by their ImagePositionPatient projected on the slice normal
    (the cross product of ImageOrientationPatient's row and column directions), or by
    InstanceNumber when the files have no positions.

    Parameters
    ----------
    folder : str or Path
    rule : {"hu", "window", "auto"}
        ``"hu"`` (default): the CT rule :func:`invdiff.data.hu_to_unit` on
        ``v = RescaleSlope * stored + RescaleIntercept`` (CT only: other modalities raise
        ``ValueError``). ``"window"``: the middle slice's first WindowCenter/WindowWidth,
        else the series' min–max, for all slices alike. ``"auto"``: ``"hu"`` for CT, else ``"window"``.
    channels : {1, 3}

    Returns
    -------
    volume : torch.Tensor
        ``(D, channels, H, W)`` float32 in [0, 1], ``H, W = Rows, Columns``; slice ``d`` is the
        pixel array as stored (row 0 at the top), ``d`` increasing along the slice normal.
    info : DicomSeriesInfo
        Headers, geometry and intensity mapping, for :func:`save_dicom_series`.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not a folder.
    ValueError
        No DICOM image files; files of several series (SeriesInstanceUID); mixed sizes
        (Rows/Columns), pixel spacings or orientations; multi-frame or colour files; duplicated
        slice positions; missing slices (a gap over 1.5× the median spacing); non-uniform
        spacing (over 1 % off the median); ``rule="hu"`` on a series that is not CT.
    """
    if rule not in DICOM_SERIES_RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, DICOM_SERIES_RULES))}, got {rule!r}")
    d = Path(folder)
    if not d.is_dir():
        raise FileNotFoundError(f"no such folder: {str(d)!r} (expected a folder of one DICOM series)")
    found = _read_series(d)
    if not found:
        raise ValueError(f"folder {str(d)!r} holds no DICOM image files")
    series = _group(found, lambda ds: str(ds.get("SeriesInstanceUID", "") or "(none)"))
    if len(series) > 1:
        raise ValueError(f"folder {str(d)!r} holds files of {len(series)} series (SeriesInstanceUID "
                         f"{_describe(series)}); put each series in a folder of its own")
    for f, ds in found:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1 or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise ValueError(f"{str(f)!r}: expected single-frame grey slices, got {frames} frame(s) of "
                             f"{ds.get('SamplesPerPixel', 1)} sample(s) per pixel")
    sizes = _group(found, lambda ds: (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)))
    if len(sizes) > 1:
        raise ValueError(f"folder {str(d)!r} mixes slice sizes (Rows, Columns) {_describe(sizes)}; "
                         f"a series has one size")
    spacings = [_floats(ds, "PixelSpacing", 2) for _, ds in found]
    if any(s is None for s in spacings) != all(s is None for s in spacings) or (
            spacings[0] is not None and not all(np.allclose(s, spacings[0], rtol=1e-4, atol=1e-6) for s in spacings)):
        groups = _group(found, lambda ds: tuple(np.round(_floats(ds, "PixelSpacing", 2), 6))
                        if _floats(ds, "PixelSpacing", 2) is not None else "none")
        raise ValueError(f"folder {str(d)!r} mixes pixel spacings (PixelSpacing {_describe(groups)}); "
                         f"a series has one spacing")
    orients = [_floats(ds, "ImageOrientationPatient", 6) for _, ds in found]
    positions = [_floats(ds, "ImagePositionPatient", 3) for _, ds in found]
    have_geometry = all(o is not None for o in orients) and all(q is not None for q in positions)
    if have_geometry and not all(np.allclose(o, orients[0], atol=1e-4) for o in orients):
        groups = _group(found, lambda ds: tuple(np.round(_floats(ds, "ImageOrientationPatient", 6), 4)))
        raise ValueError(f"folder {str(d)!r} mixes slice orientations (ImageOrientationPatient {_describe(groups)})")
    files = [f for f, _ in found]
    if have_geometry:
        orientation = np.array(orients[0])
        normal = np.cross(orientation[:3], orientation[3:])
        if not np.linalg.norm(normal) > 0.5:
            raise ValueError(f"{str(files[0])!r}: ImageOrientationPatient {orientation.tolist()} has parallel "
                             f"row and column directions")
        normal /= np.linalg.norm(normal)
        where = np.array([float(q @ normal) for q in positions])
        what, unit = "position along the slice normal", " mm"
    else:
        orientation = None
        if not all("InstanceNumber" in ds for _, ds in found):
            raise ValueError(f"folder {str(d)!r}: cannot order the slices: they have neither "
                             f"ImagePositionPatient/ImageOrientationPatient nor InstanceNumber")
        where = np.array([float(ds.InstanceNumber) for _, ds in found])
        what, unit = "InstanceNumber", ""
    order = np.argsort(where, kind="stable")
    found = [found[i] for i in order]
    files = [f for f, _ in found]
    where = where[order]
    pixel_spacing = None if spacings[0] is None else (float(spacings[0][0]), float(spacings[0][1]))
    slice_spacing = None
    if len(found) > 1:
        steps = np.diff(where)
        dup_tol = 1e-2 * min(pixel_spacing) if have_geometry and pixel_spacing else 1e-6
        dup = np.flatnonzero(steps <= dup_tol)
        if dup.size:
            i = int(dup[0])
            raise ValueError(f"{str(files[i])!r} and {str(files[i + 1])!r} have the same {what} "
                             f"({where[i]:.6g}{unit}): duplicated slices in {str(d)!r}")
        median = float(np.median(steps))
        gaps = np.flatnonzero(steps > 1.5 * median)
        if gaps.size:
            i = int(gaps[0])
            raise ValueError(f"slices missing in {str(d)!r}: between {files[i].name} and {files[i + 1].name} the "
                             f"{what} jumps by {steps[i]:.6g}{unit}, {steps[i] / median:.2g}× the median step of "
                             f"{median:.6g}{unit}")
        if np.any(np.abs(steps - median) > 0.01 * median + 1e-4):
            raise ValueError(f"non-uniform slice spacing in {str(d)!r}: the {what} steps from {steps.min():.6g} to "
                             f"{steps.max():.6g}{unit} (median {median:.6g}{unit}); expected one spacing")
        slice_spacing = median if have_geometry else None
    if slice_spacing is None:
        ds0 = found[0][1]
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            if ds0.get(key) not in (None, ""):
                slice_spacing = float(ds0.get(key))
                break
    # intensities
    try:
        stored = [ds.pixel_array for _, ds in found]
    except Exception as err:  # noqa: BLE001 - missing decoder, truncated pixel data
        raise ValueError(f"cannot decode the pixel data of the series in {str(d)!r}: {err}") from err
    values = np.stack([a.astype(np.float64) * float(ds.get("RescaleSlope", 1.0) or 1.0)
                       + float(ds.get("RescaleIntercept", 0.0) or 0.0) for a, (_, ds) in zip(stored, found)])
    modalities = {str(ds.get("Modality", "") or "").upper() for _, ds in found}
    if rule == "auto":
        rule = "hu" if modalities == {"CT"} else "window"
    if rule == "hu":
        if modalities != {"CT"}:
            f, modality = next((f, str(ds.get("Modality", "") or "missing")) for f, ds in found
                               if str(ds.get("Modality", "") or "").upper() != "CT")
            raise ValueError(f"{str(f)!r}: rule='hu' (Hounsfield units) needs a CT series, but its Modality is "
                             f"{modality!r}; load it with rule='window'")
        lo, hi = CT_HU_WINDOW
    else:
        mid = found[len(found) // 2][1]
        center, width = mid.get("WindowCenter"), mid.get("WindowWidth")
        if center not in (None, "") and width not in (None, "") and _first(width) > 0:
            lo, hi = _first(center) - _first(width) / 2, _first(center) + _first(width) / 2
        else:
            lo, hi = float(values.min()), float(values.max())
            if not hi > lo:
                hi = lo + 1.0
    x = np.clip((values - lo) / (hi - lo), 0, 1).astype(np.float32)
    headers = []
    for _, ds in found:
        h = copy.deepcopy(ds)
        del h.PixelData
        headers.append(h)
    info = DicomSeriesInfo(folder=str(d), files=tuple(str(f) for f in files), datasets=tuple(headers),
                           positions=np.array([positions[i] for i in order]) if have_geometry else None,
                           orientation=orientation, pixel_spacing=pixel_spacing, slice_spacing=slice_spacing,
                           rows=int(x.shape[1]), columns=int(x.shape[2]), lo=float(lo), hi=float(hi), rule=rule)
    return _channels(torch.from_numpy(x)[:, None], channels, str(d)), info


def _ds_number(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6g}"


def _stored_dtype(ds) -> tuple[np.dtype, int, int]:
    bits = int(ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32):
        raise ValueError(f"cannot write {bits}-bit pixel data (BitsAllocated); expected 8, 16 or 32")
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder("<")
    stored_bits = int(ds.get("BitsStored", bits) or bits)
    low, high = (-(1 << (stored_bits - 1)), (1 << (stored_bits - 1)) - 1) if signed else (0, (1 << stored_bits) - 1)
    return dtype, low, high


def save_dicom_series(folder, volume, info: DicomSeriesInfo) -> str:
    """Write ``volume`` as a new DICOM series, one file per slice, like the series of ``info``.

    Parameters
    ----------
    folder : str or Path
        Output folder; created atomically (the files are written into a temporary sibling folder
        that is renamed at the end). An existing non-empty folder (or a file) raises
        ``FileExistsError``.
    volume : torch.Tensor or numpy.ndarray
        ``(D, C, H, W)`` (or ``(D, H, W)``) in [0, 1] with ``D`` slices of ``info.rows`` ×
        ``info.columns`` (use :func:`resize_volume` to keep ``info`` in step with a resize).
    info : DicomSeriesInfo
        From :func:`load_dicom_series` (or :func:`resize_volume`).

    Returns
    -------
    str
        The folder, holding ``slice_0001.dcm``, ``slice_0002.dcm``, ... in slice order.

    Notes
    -----
    Each file is the input slice's header with: new SOPInstanceUID (and
    MediaStorageSOPInstanceUID), one new SeriesInstanceUID for the series, InstanceNumber
    ``1..D``, the geometry of ``info`` (ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing, Rows, Columns; FrameOfReferenceUID kept, so the result overlays the input),
    values ``v = lo + x * (hi - lo)`` stored as ``round((v - RescaleIntercept) / RescaleSlope)``
    with the input's slope and intercept (clipped to the stored bits), WindowCenter/WindowWidth
    set to ``info.window``, ImageType DERIVED\\SECONDARY, uncompressed (explicit VR little endian).
    """
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if not isinstance(info, DicomSeriesInfo):
        raise TypeError(f"info must be the DicomSeriesInfo that load_dicom_series returned, got {type(info).__name__}")
    x = _as_volume(volume)
    if x.shape != (len(info.datasets), info.rows, info.columns):
        raise ValueError(f"volume has {x.shape[0]} slices of {x.shape[1]}×{x.shape[2]}, but the series of "
                         f"{info.folder!r} is {len(info.datasets)} slices of {info.rows}×{info.columns} "
                         f"(resize with resize_volume to update info)")
    series_uid = generate_uid()
    center, width = info.window
    datasets = []
    for d, template in enumerate(info.datasets):
        ds = copy.deepcopy(template)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        dtype, low, high = _stored_dtype(ds)
        values = info.lo + x[d] * (info.hi - info.lo)
        stored = np.clip(np.rint((values - intercept) / slope), low, high).astype(dtype)
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = d + 1
        ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
        if info.pixel_spacing is not None:
            ds.PixelSpacing = [_ds_number(v) for v in info.pixel_spacing]
        if info.positions is not None:
            ds.ImagePositionPatient = [_ds_number(v) for v in info.positions[d]]
            ds.ImageOrientationPatient = [_ds_number(v) for v in info.orientation]
        ds.WindowCenter, ds.WindowWidth = _ds_number(center), _ds_number(width)
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenterWidthExplanation",
                        "VOILUTSequence"):
            if keyword in ds:
                delattr(ds, keyword)
        if "ImageType" in ds:
            kinds = list(ds.ImageType) if not isinstance(ds.ImageType, str) else [ds.ImageType]
            ds.ImageType = ["DERIVED", "SECONDARY"] + kinds[2:]
        ds.SeriesDescription = ((str(ds.get("SeriesDescription", "") or "") + " invdiff reconstruction").strip())[-64:]
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW" if dtype.itemsize > 1 else "OB"
        meta = ds.file_meta
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        datasets.append(ds)

    def write(tmp):
        for d, ds in enumerate(datasets):
            target = os.path.join(tmp, f"slice_{d + 1:04d}.dcm")
            try:
                ds.save_as(target, enforce_file_format=True)  # pydicom >= 3
            except TypeError:  # pragma: no cover - pydicom 2
                ds.is_little_endian, ds.is_implicit_VR = True, False
                ds.save_as(target, write_like_original=False)

    return atomic_write_dir(folder, write)


# --------------------------------------------------------------------------------------------- helpers


def resize_volume(volume: torch.Tensor, size, info=None):
    """Centre-crop and resize every slice of ``volume`` like :func:`invdiff.data.resize`.

    Parameters
    ----------
    volume : torch.Tensor
        ``(D, C, H, W)`` in [0, 1].
    size : int or (int, int)
        Output slice size.
    info : NiftiInfo or DicomSeriesInfo, optional
        The volume's info, adjusted to the new grid: in-plane voxel size (pixel spacing) scaled
        by the resize factor, origin moved so every new voxel keeps its world position (the
        NIfTI affine / the DICOM ImagePositionPatient); the slice axis is unchanged.

    Returns
    -------
    volume : torch.Tensor
        ``(D, C, size, size)`` (or ``(D, C, *size)``).
    info : NiftiInfo, DicomSeriesInfo or None
        The adjusted info (None when none was given).
    """
    if not isinstance(volume, torch.Tensor) or volume.ndim != 4:
        raise ValueError(f"volume must be a (D, C, H, W) tensor, got {getattr(volume, 'shape', type(volume).__name__)}")
    d, c, h, w = volume.shape
    out = resize(volume.reshape(d * c, h, w), size)
    out = out.reshape(d, c, *out.shape[-2:])
    if info is None:
        return out, None
    if not isinstance(info, (NiftiInfo, DicomSeriesInfo)):
        raise TypeError(f"info must be a NiftiInfo or DicomSeriesInfo, got {type(info).__name__}")
    return out, info.resized(size)


def volume_planes(volume: torch.Tensor) -> dict[str, torch.Tensor]:
    """The slices of a volume in its three orientations.

    Parameters
    ----------
    volume : torch.Tensor
        ``(D, C, H, W)``, as :func:`load_nifti` / :func:`load_dicom_series` return it.

    Returns
    -------
    dict
        ``"axial"``: the volume itself, ``(D, C, H, W)``; ``"coronal"``: ``(H, C, D, W)``, one
        image per row ``h``; ``"sagittal"``: ``(W, C, D, H)``, one image per column ``w``. In the
        coronal and sagittal images the slice axis runs upwards (``d = D - 1`` at the top). The
        names are anatomical for axial acquisitions stacked foot to head (RAS/LAS NIfTI files
        stored axially, axial DICOM series, which are sorted along the slice normal); for
        other acquisitions they name the planes of the stored slice, row and column axes.
    """
    if not isinstance(volume, torch.Tensor) or volume.ndim != 4:
        raise ValueError(f"volume must be a (D, C, H, W) tensor, got {getattr(volume, 'shape', type(volume).__name__)}")
    return {"axial": volume,
            "coronal": volume.permute(2, 1, 0, 3).flip(2),
            "sagittal": volume.permute(3, 1, 0, 2).flip(2)}
