"""Super-resolution: ``y = S (k * x)``, anti-aliasing filter ``k`` then subsampling by ``factor``.

Built on deepinv's :class:`~deepinv.physics.Downsampling` (circular boundary). Filters:
``"bicubic"`` (Keys cubic, a = -0.5, the MATLAB ``imresize`` kernel), ``"box"`` (mean over each
``factor × factor`` block), ``"gaussian"`` (std ``factor / 2``), ``"bilinear"``.
"""

from __future__ import annotations

import deepinv
import torch

from ._base import ShapeChecked, img_size_3d, positive_int

__all__ = ["super_resolution", "FILTERS"]

FILTERS = ("bicubic", "box", "gaussian", "bilinear")


class _Downsampling(ShapeChecked, deepinv.physics.Downsampling):
    """deepinv operator with invdiff shape checks."""


def super_resolution(img_size, factor: int = 4, *, filter: str = "bicubic"):
    """Downsampling by an integer ``factor`` (2, 4, 8, …) after an anti-aliasing ``filter``.

    ``H`` and ``W`` must be divisible by ``factor``.
    """
    c, h, w = img_size_3d(img_size)
    factor = positive_int(factor, "factor", minimum=2)
    if h % factor or w % factor:
        raise ValueError(f"image size ({h}, {w}) is not divisible by factor {factor}; img_size H and W must "
                         f"be multiples of factor")
    if not isinstance(filter, str) or filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    if filter == "box":
        # Aligned block mean (pixels f·i … f·i + f − 1, as avg_pool2d): deepinv centres an odd
        # kernel of size 2f + 1 and then keeps every f-th sample, so the f×f ones sit at offset 1.
        filt = torch.zeros(1, 1, 2 * factor + 1, 2 * factor + 1)
        filt[..., 1:1 + factor, 1:1 + factor] = 1.0 / factor**2
    else:
        filt = filter
    op = _Downsampling(img_size=(c, h, w), filter=filt, factor=factor, padding="circular")
    k = tuple(op.filter.shape[-2:])
    if k[0] > h or k[1] > w:  # circular padding would wrap more than once
        raise ValueError(f"image size ({h}, {w}) is smaller than the {filter} anti-aliasing filter {k} "
                         f"at factor {factor}; use a larger image, a smaller factor or filter='box'")
    op.img_shape = (c, h, w)
    op.filter_name = filter
    op._set_meas_shape()
    return op
