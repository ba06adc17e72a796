"""Forward finite differences with an exact adjoint (total variation, ADMM along z)."""

from __future__ import annotations

import deepinv
import torch

__all__ = ["FiniteDifference", "finite_difference"]


class FiniteDifference(deepinv.physics.LinearPhysics):
    """Forward differences ``(D x)_i = x_{i+1} - x_i`` along one or more tensor axes.

    The last difference along each axis is zero (Neumann boundary), so the operator maps
    ``x`` to a tensor of the same shape per axis; the outputs of several axes are concatenated
    along the channel axis (dim 1). The adjoint is the exact transpose,
    ``(D^T y)_i = y_{i-1} [i >= 1] - y_i [i <= n - 2]``.

    Parameters
    ----------
    dim : int or tuple of int
        Axes of the input tensor: ``(-2, -1)`` for 2D total variation of images, ``0`` for
        differences across slices of a volume ``(D, C, H, W)`` (the z axis sits on the batch
        axis, so this operator couples slices on purpose).
    """

    def __init__(self, dim=(-2, -1), **kwargs):
        super().__init__(**kwargs)
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        if not dims or not all(isinstance(d, int) for d in dims):
            raise ValueError(f"FiniteDifference: dim must be an int or a tuple of ints, got {dim!r}")
        self.dims = dims

    def _diff(self, x, d):
        n = x.shape[d]
        if n < 2:
            return torch.zeros_like(x)
        fwd = x.narrow(d, 1, n - 1) - x.narrow(d, 0, n - 1)
        return torch.cat([fwd, torch.zeros_like(x.narrow(d, 0, 1))], dim=d)

    def _diff_adjoint(self, y, d):
        n = y.shape[d]
        if n < 2:
            return torch.zeros_like(y)
        inner = y.narrow(d, 0, n - 1)  # y_0 .. y_{n-2}; y_{n-1} is the zero boundary row
        zero = torch.zeros_like(y.narrow(d, 0, 1))
        return torch.cat([zero, inner], dim=d) - torch.cat([inner, zero], dim=d)

    def A(self, x, **kwargs):
        if x.ndim < 2:
            raise ValueError(f"FiniteDifference: expected at least a 2D tensor, got shape {tuple(x.shape)}")
        return torch.cat([self._diff(x, d) for d in self.dims], dim=1)

    def A_adjoint(self, y, **kwargs):
        parts = y.chunk(len(self.dims), dim=1)
        return sum(self._diff_adjoint(p, d) for p, d in zip(parts, self.dims))


def finite_difference(img_size=None, dim=(-2, -1)):
    """Factory for :class:`FiniteDifference` (``img_size`` is accepted for registry uniformity)."""
    return FiniteDifference(dim=dim)
