"""Offline corpora of real images — CT, brain MRI, photographs — found where their packages install them.

Nothing is downloaded. Each :class:`Source` names the package that ships it (pip or Debian),
the file, its license, the subject it shows and its split; :func:`corpus` gathers a corpus's
sources and :func:`corpus_images` turns one split into images of a given size in [0, 1].

**Splits are by subject (source file), never by slice of one volume**, and written down here:

===========  ===============================================  ===========================  ==============================
corpus       train                                            validation                   test
===========  ===============================================  ===========================  ==============================
``ct``       pydicom-data ``eCT_Supplemental`` (head            pydicom ``J2K_pixelrep_        pydicom-data ``explicit_VR-UN``
             perfusion, 2 frames), pydicom ``CT_small``,      mismatch`` (head)            (abdomen, pancreas study)
             pydicom-data ``bad_sequence`` (neck)
``mri``      ITK examples ``KmeansTest`` T1 (one subject,     nilearn MNI152 2009a T1      mricron-data ``ch2`` (Colin27
             2 mm), pydicom(-data) MR files (shoulder,        (population average, 1 mm)   single-subject T1, 1 mm)
             abdomen, head)
``photo``    scikit-image's training photographs              scikit-image                 scikit-image ``chelsea``,
             (:data:`~invdiff.data.splits.PHOTO_TRAIN`),      ``stereo_motorcycle`` (left)  ``rocket``
             sporco's photographs
===========  ===============================================  ===========================  ==============================

**Held out from the whole project** (:func:`is_held_out`): every DICOM file whose name starts
with ``693`` and all of matplotlib's sample data. No corpus lists them; the tests check it.

**What limits the corpora.** The packages allowed here ship few real scans of at least 256
pixels: four CT subjects (two for training, one each for validation and test) and two brain-MRI subjects with their own intensities
(the other MRIcron volumes are atlases and label maps; ITK's BrainWeb slices are simulated from
Colin27, the test subject, so they are used nowhere). The MRI validation images are slices of
an average of 152 brains: smoother than one subject, at the test subject's 1 mm pixel scale. Where a split needs several images of one
source, they are distinct windows or slices of it (:func:`corpus_images` says which).

**Intensities.** CT: Hounsfield units mapped by the shared rule ``x = clip((HU + 1000)/2000, 0, 1)``
(:func:`invdiff.data.io.hu_to_unit`; the phantoms' CT contrast follows it roughly). MRI: each volume or slice divided by its 99.5th percentile, clipped to [0, 1].
Photographs: 8-bit values / 255.

The validation and test images of the named real-data problems are available after the
README's install line alone: CT and photographs come from pip dependencies (pydicom,
pydicom-data, scikit-image); the MRI validation and test slices, which come from Debian
packages, are shipped in ``invdiff/data/real/`` (small 256² PNGs, written by
``scripts/make_real_slices.py``; sources and licenses in ``invdiff/data/real/SOURCES.md``).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .io import hu_to_unit

__all__ = ["Source", "SOURCES", "corpus", "corpus_images", "is_held_out", "source_path", "load_source",
           "volume_slices", "native_axis", "training_images", "REAL_DIR", "CORPORA", "SPLITS"]

#: the corpora and the splits every corpus has
CORPORA = ("ct", "mri", "photo")
SPLITS = ("train", "validation", "test")
#: shipped validation/test images (MRI slices from Debian packages)
REAL_DIR = Path(__file__).with_name("real")

_DEBIAN = {"mricron-data": Path("/usr/share/mricron/templates"),
           "insighttoolkit5-examples": Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")}


@dataclass(frozen=True)
class Source:
    """One real image or volume: where it comes from and which split it belongs to.

    ``package`` is a pip distribution (``pydicom``, ``pydicom-data``, ``scikit-image``, ``PyWavelets``,
    ``nilearn``, ``sporco``), a Debian package (``mricron-data``, ``insighttoolkit5-examples``)
    or ``invdiff`` (shipped in :data:`REAL_DIR`). ``file`` is the path inside it (for
    scikit-image, the name of its ``skimage.data`` function).
    """

    corpus: str
    split: str
    subject: str
    package: str
    file: str
    license: str
    description: str
    version: str = ""
    #: modules that can decode the file's pixels (any one will do; beyond ``package``); () for none
    needs: tuple = ()


SOURCES: tuple[Source, ...] = (
    # --- CT: real slices in Hounsfield units -------------------------------------------------
    Source("ct", "train", "perfusion-0010", "pydicom-data", "data/eCT_Supplemental.dcm", "MIT (pydicom-data)",
           "head CT perfusion, 2 frames of 512²", "1.0.0"),
    Source("ct", "train", "1CT1", "pydicom", "data/test_files/CT_small.dcm", "MIT (pydicom)",
           "CT slice, 128²", "3.0.2"),
    Source("ct", "train", "b2cbe507f250", "pydicom-data", "data/bad_sequence.dcm", "MIT (pydicom-data)",
           "neck CT slice, 512² at 0.29 mm (JPEG-lossless pixel data: needs pylibjpeg, in invdiff[train-data])",
           "1.0.0", needs=("libjpeg", "gdcm")),
    Source("ct", "validation", "JXD191021006", "pydicom", "data/test_files/J2K_pixelrep_mismatch.dcm",
           "MIT (pydicom)", "head CT slice, 512²", "3.0.2"),
    Source("ct", "test", "PANCREAS_0001", "pydicom-data", "data/explicit_VR-UN.dcm", "MIT (pydicom-data)",
           "abdominal CT slice (pancreas study), 512²", "1.0.0"),
    # --- MRI: brain T1 volumes and other MR files ---------------------------------------------
    Source("mri", "train", "KmeansTest-T1", "insighttoolkit5-examples",
           "KmeansTest_T1UCharRaw.nii.gz", "Apache-2.0 (ITK)", "brain T1 volume, 128×128×62 at 2×2×3 mm",
           "5.2.1-5+deb12u1"),
    Source("mri", "train", "5MR2", "pydicom-data", "data/MR2_UNCR.dcm", "MIT (pydicom-data)",
           "shoulder MR slice, 1024²", "1.0.0"),
    Source("mri", "train", "021234567", "pydicom-data", "data/MR-SIEMENS-DICOM-WithOverlays.dcm",
           "MIT (pydicom-data)", "abdominal MR slice, 484²", "1.0.0"),
    Source("mri", "train", "emri-head", "pydicom-data", "data/emri_small.dcm", "MIT (pydicom-data)",
           "head MR, 10 frames of 64²", "1.0.0"),
    Source("mri", "validation", "MNI152-2009a", "nilearn",
           "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
           "MNI ICBM 2009a template license (free use with copyright notice, as shipped by nilearn)",
           "T1 population-average template, 1 mm", "0.14.1"),
    Source("mri", "test", "Colin27", "mricron-data", "ch2.nii.gz",
           "BSD-3-clause (MRIcron package); Colin27 template (Holmes et al. 1998, MNI)",
           "single-subject brain T1 (Colin27), 181×217×181 at 1 mm", "1.2.20211006+dfsg-4"),
    # --- photographs -----------------------------------------------------------------------------
    *(Source("photo", "train", name, "scikit-image", name, "see scikit-image's skimage/data/README.txt",
             "scikit-image sample photograph", "0.26") for name in (
        "astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "camera",
        "moon", "brick", "grass", "gravel", "coins", "clock", "cell", "page", "text")),
    *(Source("photo", "train", name, "sporco", f"data/{name}.png", "BSD-3-clause (sporco) / image owners",
             "sporco sample photograph", "0.2.2") for name in ("barbara", "kodim23", "monarch", "sail", "tulips")),
    *(Source("photo", "train", name, "PyWavelets", name, "MIT (PyWavelets) / image owners",
             "PyWavelets sample photograph (grey, 512²)", "1.9.0") for name in ("aero", "ascent")),
    Source("photo", "validation", "stereo_motorcycle", "scikit-image", "stereo_motorcycle",
           "CC0 (Middlebury stereo data set, as shipped by scikit-image)", "left view of a stereo pair, 500×741",
           "0.26"),
    Source("photo", "test", "chelsea", "scikit-image", "chelsea", "CC0 (Stéfan van der Walt)", "a cat, 300×451", "0.26"),
    Source("photo", "test", "rocket", "scikit-image", "rocket", "public domain (SpaceX)", "a rocket launch, 427×640",
           "0.26"),
)

_INSTALL = {"pylibjpeg": "pip install pylibjpeg pylibjpeg-libjpeg  (or invdiff[train-data])",
            "pydicom": "pip install pydicom", "pydicom-data": "pip install pydicom-data",
            "scikit-image": "pip install scikit-image", "nilearn": "pip install nilearn  (or invdiff[train-data])",
            "sporco": "pip install sporco  (or invdiff[train-data])",
            "mricron-data": "sudo apt-get install mricron-data",
            "insighttoolkit5-examples": "sudo apt-get install insighttoolkit5-examples"}
_MODULE = {"pydicom": "pydicom", "pydicom-data": "data_store", "nilearn": "nilearn", "sporco": "sporco"}


def is_held_out(path) -> bool:
    """Whether ``path`` belongs to the project's external evaluation set: every DICOM file named
    ``693*`` and anything from matplotlib's sample data. Never train, tune, select or test on it."""
    p = Path(str(path))
    if p.name.startswith("693"):
        return True
    return "mpl-data" in p.parts or "sample_data" in p.parts and "matplotlib" in str(p)


def source_path(src: Source) -> Path:
    """Where ``src`` is installed; ``FileNotFoundError`` naming the package and its install command."""
    if src.package in ("scikit-image", "PyWavelets"):
        raise ValueError(f"{src.file!r} is read through skimage.data / pywt.data, not from a path")
    if src.package in _DEBIAN:
        path = _DEBIAN[src.package] / src.file
    else:
        spec = importlib.util.find_spec(_MODULE[src.package])
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"the {src.corpus} corpus needs the package {src.package}, which is not "
                                    f"installed: {_INSTALL[src.package]}")
        path = Path(list(spec.submodule_search_locations)[0]) / src.file
    if not path.is_file():
        raise FileNotFoundError(f"{src.file} is not where the package {src.package} installs it ({path}); install "
                                f"it with: {_INSTALL[src.package]}")
    if is_held_out(path):  # pragma: no cover - the table above never lists one
        raise ValueError(f"{path} is in the held-out evaluation set")
    if src.needs and all(importlib.util.find_spec(m) is None for m in src.needs):
        raise FileNotFoundError(f"{src.file} ({src.package}) needs a decoder for its pixels ({' or '.join(src.needs)}), "
                                f"none installed: {_INSTALL['pylibjpeg']}")
    return path


def _percentile_unit(a: np.ndarray) -> np.ndarray:
    hi = float(np.percentile(a, 99.5))
    return np.clip(a / max(hi, 1e-12), 0.0, 1.0)


def _dicom_frames(path: Path) -> tuple[np.ndarray, str]:
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float64)
    arr = arr.reshape((-1,) + arr.shape[-2:])
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return arr * slope + intercept, str(getattr(ds, "Modality", ""))


def load_source(src: Source) -> np.ndarray:
    """The images of ``src`` in [0, 1]: ``(N, H, W)`` grey (CT and MRI: slices or frames; MRI volumes
    give their axial slices) or ``(N, H, W, 3)`` RGB photographs."""
    if src.package in ("scikit-image", "PyWavelets"):
        import importlib

        img = getattr(importlib.import_module("skimage.data" if src.package == "scikit-image" else "pywt.data"),
                      src.file)()
        img = img[0] if isinstance(img, tuple) else img
        img = np.asarray(img, dtype=np.float64) / 255.0
        return img[None] if img.ndim == 2 else img[None]
    path = source_path(src)
    if path.suffix == ".png":
        from skimage.io import imread

        img = imread(str(path)).astype(np.float64) / 255.0
        return img[None, ..., :3] if img.ndim == 3 else img[None]
    if path.suffix == ".dcm":
        frames, modality = _dicom_frames(path)
        return hu_to_unit(frames) if modality == "CT" else np.stack([_percentile_unit(f) for f in frames])
    vol, zooms = _canonical_volume(path)
    return _percentile_unit(volume_slices(vol, native_axis(zooms)))


def _canonical_volume(path: Path) -> tuple[np.ndarray, tuple]:
    """A NIfTI volume in RAS+ orientation (nibabel's closest canonical) and its voxel sizes."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float64), tuple(float(z) for z in img.header.get_zooms()[:3])


def native_axis(zooms) -> int:
    """The axis across which a volume was sliced: its coarsest voxel axis (2, axial, when isotropic)."""
    return 2 if max(zooms) - min(zooms) < 1e-3 else int(np.argmax(zooms))


def volume_slices(vol: np.ndarray, axis: int) -> np.ndarray:
    """Slices of a RAS+ volume across ``axis`` (0 sagittal, 1 coronal, 2 axial), each oriented for
    display (superior or anterior up, the subject's left on the right: radiological convention)."""
    moved = np.moveaxis(vol, axis, 0)  # (n, u, v) with u, v the remaining axes in RAS order
    return moved.transpose(0, 2, 1)[:, ::-1, :]


def corpus(name: str, split: str | None = None) -> list[Source]:
    """The sources of corpus ``name`` (``"ct"``, ``"mri"``, ``"photo"``), of one split or all."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [s for s in SOURCES if s.corpus == name and (split is None or s.split == split)]


def _windows(img: np.ndarray, size: int, n: int, *, strict: bool = True) -> list[np.ndarray]:
    """``n`` distinct ``size × size`` windows of ``img`` at its own pixel scale, spread over the part
    that is not background (the corners of the content's bounding box, then its centre).

    With ``strict=False`` as many as fit (at most ``n``) instead of an error when fewer than ``n`` fit."""
    h, w = img.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"an image of {h}×{w} px is smaller than the requested {size}×{size}")
    grey = img if img.ndim == 2 else img.mean(-1)
    rows, cols = np.nonzero(grey > 0.05)
    r0, r1 = (rows.min(), rows.max()) if rows.size else (0, h - 1)
    c0, c1 = (cols.min(), cols.max()) if cols.size else (0, w - 1)
    anchors = [(r0, c0), (r0, c1 - size + 1), (r1 - size + 1, c0), (r1 - size + 1, c1 - size + 1),
               ((r0 + r1 - size) // 2, (c0 + c1 - size) // 2)]
    out, seen = [], set()
    for a, b in anchors:
        a, b = int(min(max(a, 0), h - size)), int(min(max(b, 0), w - size))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append(img[a:a + size, b:b + size])
    if len(out) < n and strict:
        raise ValueError(f"only {len(out)} distinct {size}-px windows fit in a {h}×{w} image, {n} requested")
    return out[:n]


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    """A slice placed in a ``size × size`` frame: zero-padded when smaller (MRI background is 0),
    downsampled by area averaging when larger than the frame."""
    h, w = img.shape
    if max(h, w) > size:
        t = torch.as_tensor(img.copy())[None, None]
        s = size / max(h, w)
        img = torch.nn.functional.interpolate(t, size=(max(1, round(h * s)), max(1, round(w * s))),
                                              mode="area")[0, 0].numpy()
        h, w = img.shape
    out = np.zeros((size, size), dtype=img.dtype)
    a, b = (size - h) // 2, (size - w) // 2
    out[a:a + h, b:b + w] = img
    return out


def corpus_images(name: str, split: str, size: int, n: int) -> torch.Tensor:
    """``n`` images ``(n, C, size, size)`` in [0, 1] of one split of corpus ``name``.

    * CT (grey): ``size``-pixel windows of the split's slices at their own pixel scale (512² slices
      give several distinct windows at 256; at 512 the whole slice).
    * MRI (grey): for validation and test at 256 the shipped slices (:data:`REAL_DIR`, each in a
      zero-padded 256² frame at the volume's own voxel size; see its ``SOURCES.md``); other sizes
      and the training split are cut from the installed volumes (:func:`load_source`: slices
      across the volume's acquisition axis, three per volume).
    * Photographs (RGB): ``size``-pixel windows of the split's photographs at their own scale.

    Raises ``ValueError`` when the split cannot give ``n`` distinct images of that size.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    sources = corpus(name, split)
    if name == "mri" and split in ("validation", "test") and size == 256:
        files = sorted(REAL_DIR.glob(f"mri-{split}-*.png"))
        if len(files) < n:
            raise ValueError(f"the MRI {split} split ships {len(files)} slices in {REAL_DIR}, {n} requested")
        from skimage.io import imread

        imgs = [imread(str(f)).astype(np.float64) / 65535.0 for f in files[:n]]
        return torch.as_tensor(np.stack(imgs), dtype=torch.float32)[:, None]
    pool: list[np.ndarray] = []
    for src in sources:
        imgs = load_source(src)
        if name == "mri":
            picks = [imgs[int(round(f * (len(imgs) - 1)))] for f in (0.45, 0.55, 0.65)] if len(imgs) > 3 else list(imgs)
            pool += [_fit(p, size) for p in picks]
        else:
            for img in imgs:
                if name == "photo" and img.ndim == 2:  # a grey photograph in the RGB corpus: three equal channels
                    img = np.repeat(img[..., None], 3, axis=-1)
                try:
                    k = 1 if min(img.shape[:2]) == size else math.ceil(n / max(len(sources), 1))
                    pool += _windows(img, size, k, strict=False)
                except ValueError:
                    continue  # a source smaller than the size gives nothing at this size
    if len(pool) < n:
        raise ValueError(f"the {split} split of the {name} corpus gives {len(pool)} distinct {size}-px images, "
                         f"{n} requested")
    arr = np.stack(pool[:n]).astype(np.float32)
    t = torch.as_tensor(arr)
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def _resample_isotropic(vol: np.ndarray, zooms, mm: float) -> np.ndarray:
    """``vol`` resampled (linear) to ``mm``-millimetre isotropic voxels."""
    from scipy.ndimage import zoom

    factors = [z / mm for z in zooms[:3]]
    return vol if all(abs(f - 1) < 1e-3 for f in factors) else zoom(vol, factors, order=1)


def training_images(name: str, *, mm: float = 1.0, min_content: float = 0.1, frame: int = 256) -> list[np.ndarray]:
    """Every training image of corpus ``name`` at the pixel scale its problems are solved at.

    * ``ct``: the training split's slices and frames in Hounsfield-unit intensities
      (:func:`~invdiff.data.io.hu_to_unit`), at their own pixel scale (the CT problems cut windows
      of native-scale slices).
    * ``mri``: the training volumes resampled to ``mm``-millimetre isotropic voxels (the scale of the
      MRI problems' slices), sliced in all three orientations, keeping slices whose content
      (intensity > 0.05) covers at least ``min_content`` of the slice; the single MR slices
      shrunk to fit a ``frame``-pixel frame.
    * ``photo``: the training photographs (RGB ``(H, W, 3)``; grey ones repeated over 3 channels).

    Returns a list of float arrays in [0, 1], ``(H, W)`` or ``(H, W, 3)``, sizes varying. Only the
    ``train`` split is read: validation and test sources never enter.
    """
    out: list[np.ndarray] = []
    for src in corpus(name, "train"):
        if name == "mri" and src.file.endswith((".nii", ".nii.gz")):
            vol, zooms = _canonical_volume(source_path(src))
            vol = _percentile_unit(_resample_isotropic(vol, zooms, mm))
            for axis in range(3):
                for s in volume_slices(vol, axis):
                    if (s > 0.05).mean() >= min_content:
                        out.append(np.ascontiguousarray(s))
            continue
        imgs = load_source(src)
        for img in imgs:
            if name == "photo" and img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=-1)
            if name == "mri" and max(img.shape) > frame:
                img = _fit(img, frame)
            if min(img.shape[:2]) >= 32:
                out.append(np.ascontiguousarray(img))
    if not out:
        raise ValueError(f"the training split of the {name} corpus gave no image")
    return out
