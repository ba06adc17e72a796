"""Inpainting: ``y = m ⊙ x`` with a binary mask ``m`` (deepinv's :class:`~deepinv.physics.Inpainting`).

A masking operator is its own adjoint and its own pseudo-inverse; it is a
``DecomposablePhysics`` (SVD with singular values in {0, 1}).
"""

from __future__ import annotations

import deepinv
import torch

from ._base import ShapeChecked, as_integer, check_generator, img_size_3d, real_number, real_tensor

__all__ = ["mask_inpainting", "box_inpainting", "random_inpainting"]


class _Inpainting(ShapeChecked, deepinv.physics.Inpainting):
    """deepinv operator with invdiff shape checks."""


def mask_inpainting(img_size, mask) -> deepinv.physics.Inpainting:
    """Inpainting with a given mask (1 = observed, 0 = missing).

    ``mask`` has shape ``(H, W)`` (shared by all channels), ``(C, H, W)`` or ``(1, C, H, W)``.
    """
    c, h, w = img_size_3d(img_size)
    try:
        m = real_tensor(mask, "mask", allow_bool=True)  # complex, non-numeric: TypeError
    except ValueError:
        raise ValueError("mask must contain only 0 (missing) and 1 (observed), got NaN or Inf") from None
    if m.ndim == 2:
        m = m.expand(c, h, w) if tuple(m.shape) == (h, w) else m
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]
    if tuple(m.shape) != (c, h, w):
        raise ValueError(f"mask must have shape ({h}, {w}) or ({c}, {h}, {w}), got {tuple(torch.as_tensor(mask).shape)}")
    if not torch.isfinite(m).all() or ((m != 0) & (m != 1)).any():
        raise ValueError("mask must contain only 0 (missing) and 1 (observed)")
    op = _Inpainting(img_size=(c, h, w), mask=m.clone())
    op.img_shape = (c, h, w)
    op._set_meas_shape()
    return op


def box_inpainting(img_size, box=None):
    """Missing rectangle ``box = (top, left, height, width)`` in pixels.

    Default: a centred box of half the image height and width.
    """
    c, h, w = img_size_3d(img_size)
    if box is None:
        box = (h // 4, w // 4, h // 2, w // 2)
    try:
        entries = [as_integer(v) for v in box] if not isinstance(box, (str, bytes)) else None
    except TypeError:
        entries = None
    if entries is None or None in entries:
        raise TypeError(f"box must be (top, left, height, width) of integers, got {box!r}")
    if len(entries) != 4 or min(entries) < 0:
        raise ValueError(f"box must be (top, left, height, width) of non-negative ints, got {box!r}")
    top, left, bh, bw = entries
    if bh < 1 or bw < 1 or top + bh > h or left + bw > w:
        raise ValueError(f"box {box!r} does not fit in an image of size ({h}, {w})")
    m = torch.ones(h, w)
    m[top:top + bh, left:left + bw] = 0
    return mask_inpainting((c, h, w), m)


def random_inpainting(img_size, missing_fraction: float = 0.7, *, generator: torch.Generator | None = None):
    """Each pixel missing independently with probability ``missing_fraction`` (all channels together)."""
    c, h, w = img_size_3d(img_size)
    missing_fraction = real_number(missing_fraction, "missing_fraction", low=0.0, high=1.0, high_open=True)
    check_generator(generator)
    m = (torch.rand((h, w), generator=generator) >= missing_fraction).float()
    return mask_inpainting((c, h, w), m)
