"""A 2D prior applied to every slice of a volume, a chunk of slices at a time.

A volume is ``(D, C, H, W)`` with slices on the batch axis, so a 2D denoiser already applies
to it slice by slice; :class:`SliceStackPrior` adds two things. It runs the network on at
most ``chunk_size`` slices at once, so the network's activation memory is bounded by the chunk
and not by the depth (only the volume itself, ``D·C·H·W`` numbers, grows with ``D``); and it
checks that the slice shape matches the 2D prior, with an error naming both shapes. Chunks
are independent, so they could be sent to different devices; nothing here holds global state.
"""

from __future__ import annotations

import torch

from ..validation import positive_int
from .prior import Prior, as_sigma

__all__ = ["SliceStackPrior"]


class SliceStackPrior(Prior):
    """``D(x, σ)`` of a volume = the 2D prior's ``D(x_k, σ_k)`` on each slice ``k``, in chunks.

    Parameters
    ----------
    prior2d : Prior
        Denoiser of single slices ``(B, C, H, W)``.
    chunk_size : int
        Largest number of slices passed to ``prior2d`` in one call.
    """

    def __init__(self, prior2d: Prior, chunk_size: int = 8):
        super().__init__()
        if not isinstance(prior2d, Prior):
            raise ValueError(f"SliceStackPrior needs an invdiff Prior, got {type(prior2d).__name__}")
        self.prior2d = prior2d
        self.chunk_size = positive_int(chunk_size, "chunk_size")
        self.sigma_min, self.sigma_max = prior2d.sigma_min, prior2d.sigma_max
        self.img_shape, self.channels = prior2d.img_shape, prior2d.channels
        self.data_range = prior2d.data_range
        self.data_std = prior2d.data_std

    def check_input(self, x: torch.Tensor) -> None:
        if isinstance(x, torch.Tensor) and x.ndim == 5:
            raise ValueError(f"SliceStackPrior: volumes are (D, C, H, W) with slices on the first axis, got a "
                             f"5D tensor of shape {tuple(x.shape)}")
        try:
            self.prior2d.check_input(x)
        except ValueError as err:
            raise ValueError(f"SliceStackPrior: the volume's slices do not fit the 2D prior: {err}") from None

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = as_sigma(sigma, x, owner="SliceStackPrior")  # (D, 1, 1, 1)
        parts = [self.prior2d.denoise(xc, sc) for xc, sc in
                 zip(x.split(self.chunk_size), sigma.split(self.chunk_size))]
        return torch.cat(parts)

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}, prior2d={type(self.prior2d).__name__}"
