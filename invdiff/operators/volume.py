"""Operators for volumes ``(D, C, H, W)``: slices on the batch axis.

Every 2D operator in invdiff already applies slice by slice to a volume, because slices sit
on the batch axis. What 3D problems add is the choice of *shared* or *per-slice* parameters:

* 3D CT (:func:`volume_ct`): one scanner geometry shared by all slices (a stack of parallel
  2D fan/parallel-beam slices, as in DiffusionMBIR's sparse-view and limited-angle settings).
* 3D MRI (:func:`volume_mri`): Cartesian sampling of each axial slice, either one mask shared
  by all slices (``masks="shared"``, the 2D+1D setting where the third axis is read-out) or an
  independent mask per slice (``masks="per_slice"``, default; the operator then only accepts
  exactly ``depth`` slices).
* :func:`check_volume` gives a clear error for 5D ``(B, C, D, H, W)`` tensors and other layouts.
"""

from __future__ import annotations

import torch

from ._base import positive_int
from .ct import ct_limited_angle
from .mri import mri_cartesian

__all__ = ["volume_ct", "volume_mri", "check_volume"]


def check_volume(x: torch.Tensor, *, name: str = "volume") -> torch.Tensor:
    """Return ``x`` if it is a ``(D, C, H, W)`` tensor, else raise ``ValueError`` explaining the layout."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 5:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: invdiff volumes are (D, C, H, W) with slices "
                         f"on the first axis; for a (B, C, D, H, W) tensor use x[0].transpose(0, 1)")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a (D, C, H, W) tensor, got shape {tuple(x.shape)}")
    return x


def volume_ct(img_size, n_views: int = 8, *, max_angle_deg: float = 180.0, fbp_filter: str = "ramp"):
    """CT of a volume, slice by slice with one shared parallel-beam geometry.

    ``n_views`` angles equally spaced over [0°, ``max_angle_deg``): sparse-view CT at 180° (the
    default), limited-angle CT below; ``max_angle_deg`` must be in (0, 180]. Accepts any number
    of slices.
    """
    return ct_limited_angle(img_size, max_angle_deg, n_views, fbp_filter=fbp_filter)


def volume_mri(depth: int, img_size, acceleration: float = 4.0, center_fraction: float = 0.08, *,
               mask: str = "random", masks: str = "per_slice", coils: int = 1,
               generator: torch.Generator | None = None):
    """Cartesian MRI of a volume of ``depth`` slices; ``masks`` is ``"per_slice"`` or ``"shared"``."""
    depth = positive_int(depth, "depth")
    if not isinstance(masks, str) or masks not in ("per_slice", "shared"):
        raise ValueError(f"masks must be 'per_slice' or 'shared', got {masks!r}")
    n_slices = depth if masks == "per_slice" else None  # one slice: a shared mask either way
    return mri_cartesian(img_size, acceleration, center_fraction, mask=mask, coils=coils,
                         n_slices=n_slices, generator=generator)
