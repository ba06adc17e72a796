"""Write the shipped MRI validation and test slices (``invdiff/data/real/``) from the Debian packages.

The MRI subjects of the validation and test splits live in Debian packages (see
``invdiff.data.corpora``), which the README's install line does not bring; their few 256² slices
are therefore shipped as 16-bit PNGs, zero-padded into a 256² frame at the volume's own voxel size
(no interpolation), intensities divided by the volume's 99.5th percentile. Run once::

    sudo apt-get install mricron-data && pip install nilearn
    python scripts/make_real_slices.py

Validation (MNI152 2009a T1 from nilearn, 1 mm) and test (Colin27, mricron-data's ch2, 1 mm):
three axial, one coronal and one sagittal slice each.
The volumes of the 3D problem (each subject's brain box resampled to 128 × 128 × 64 by area
averaging: downsampling only) are written as ``mri-<split>-volume.npy`` (uint16, axial slices).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invdiff.data.corpora import (REAL_DIR, _canonical_volume, _fit, _percentile_unit, corpus,  # noqa: E402
                                  source_path, volume_slices)
from invdiff.data.io import atomic_write  # noqa: E402


def _png16(path: Path, img: np.ndarray) -> None:
    from skimage.io import imsave

    atomic_write(path, lambda tmp: imsave(tmp, np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16),
                                          check_contrast=False))


def main() -> None:
    REAL_DIR.mkdir(exist_ok=True)
    plan = [(2, 0.4), (2, 0.55), (2, 0.7), (1, 0.5), (0, 0.45)]  # (axis: 0 sagittal, 1 coronal, 2 axial; position)
    for split in ("validation", "test"):
        (src,) = corpus("mri", split)
        vol, _ = _canonical_volume(source_path(src))
        vol = _percentile_unit(vol)
        for k, (axis, frac) in enumerate(plan):
            slices = volume_slices(vol, axis)
            img = _fit(np.ascontiguousarray(slices[int(round(frac * (len(slices) - 1)))]), 256)
            _png16(REAL_DIR / f"mri-{split}-{k}.png", img)
        # the volume problem: brain bounding box, area-averaged to 128 × 128 × 64
        nz = np.argwhere(vol > 0.05)
        lo, hi = nz.min(0), nz.max(0) + 1
        box = torch.as_tensor(np.ascontiguousarray(vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]))
        small = torch.nn.functional.interpolate(box[None, None].float(), size=(128, 128, 64), mode="area")[0, 0]
        axial = volume_slices(small.numpy().astype(np.float64), 2)  # (64, 128, 128), slice 0 inferior
        atomic_write(REAL_DIR / f"mri-{split}-volume.npy",
                     lambda tmp: np.save(tmp, np.round(np.clip(axial, 0, 1) * 65535).astype(np.uint16)))
    print(f"wrote {sorted(p.name for p in REAL_DIR.iterdir())}")


if __name__ == "__main__":
    main()
