"""Forward finite differences with an exact adjoint (total variation, ADMM along z)."""

from __future__ import annotations

import deepinv
import torch

from ._base import img_size_3d

__all__ = ["FiniteDifference", "finite_difference"]


class FiniteDifference(deepinv.physics.LinearPhysics):
    """Forward differences ``(D x)_i = x_{i+1} - x_i`` along one or more tensor axes.

    The last difference along each axis is zero (Neumann boundary), so the operator maps
    ``x`` to a tensor of the same shape per axis; the outputs of several axes are concatenated
    along the channel axis (dim 1). The adjoint is the exact transpose,
    ``(D^T y)_i = y_{i-1} [i >= 1] - y_i [i <= n - 2]``.

    **A block of axis 0.** With a ``halo``, the tensor holds only the consecutive slices
    ``i = lo, …, hi − 1`` of a longer axis 0 of ``n`` slices (the other blocks live elsewhere,
    e.g. in other processes), and the operator computes exactly the rows ``lo … hi − 1`` of the
    whole axis's ``D x`` and ``Dᵀ y``:

    .. math::
        (D x)_{hi-1} = x_{hi} - x_{hi-1}, \\qquad (D^\\top y)_{lo} = y_{lo-1} - y_{lo},

    with ``x_{hi}`` (the next block's first slice) and ``y_{lo-1}`` (the previous block's last
    slice) received through the halo; at the ends of the whole axis the boundary rules above
    apply (``(D x)_{n-1} = 0``, no ``y_{-1}``, and the boundary row ``y_{n-1}`` is ignored).

    Parameters
    ----------
    dim : int or tuple of int
        Axes of the input tensor: ``(-2, -1)`` for 2D total variation of images, ``0`` for
        differences across slices of a volume ``(D, C, H, W)`` (the z axis sits on the batch
        axis, so this operator couples slices on purpose).
    halo : object, optional
        Exchange with the neighbouring blocks along axis 0; ``None`` (default): the tensor is
        the whole axis. It provides ``from_next(first)`` (sends this block's first slice
        ``first`` (shape ``(1, …)``) to the previous block and returns the next block's first
        slice, or ``None`` for the last block), ``from_previous(last)`` (sends this block's last
        slice to the next block and returns the previous block's last one, or ``None`` for the
        first block) and the attribute ``has_next`` (this block is not the last). Both calls
        are collective: every block makes them, in the same order.
    """

    def __init__(self, dim=(-2, -1), halo=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(dim, bool) or isinstance(dim, (str, bytes)):
            raise TypeError(f"FiniteDifference: dim must be an int or a tuple of ints, got {dim!r}")
        try:
            dims = (dim,) if isinstance(dim, int) else tuple(dim)
        except TypeError:
            raise TypeError(f"FiniteDifference: dim must be an int or a tuple of ints, got {dim!r}") from None
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
            raise TypeError(f"FiniteDifference: dim must be an int or a tuple of ints, got {dim!r}")
        if not dims or len(set(dims)) != len(dims):
            raise ValueError(f"FiniteDifference: dim must name one or more distinct axes, got {dim!r}")
        self.dims = dims
        if halo is not None and not (all(callable(getattr(halo, m, None)) for m in ("from_next", "from_previous"))
                                     and isinstance(getattr(halo, "has_next", None), bool)):
            raise TypeError(f"FiniteDifference: halo must provide from_next, from_previous and has_next, got "
                            f"{type(halo).__name__}")
        self.halo = halo

    @staticmethod
    def _check(t, name: str) -> None:
        """Real floating tensors only: integer differences would wrap around or truncate."""
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"FiniteDifference: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"FiniteDifference: {name} must be a real floating-point tensor, got dtype "
                            f"{t.dtype}; convert it to float first")

    def _check_dims(self, t, name: str) -> None:
        bad = [d for d in self.dims if not -t.ndim <= d < t.ndim]
        if bad:
            raise ValueError(f"FiniteDifference: dim {bad} out of range for {name} of shape {tuple(t.shape)}")

    def _split(self, t, d) -> bool:
        """Whether axis ``d`` of ``t`` is a block of a longer axis 0 (a halo is set)."""
        return self.halo is not None and d % t.ndim == 0

    def _diff(self, x, d):
        n = x.shape[d]
        if self._split(x, d):
            after = self.halo.from_next(x.narrow(0, 0, 1))
            if after is not None:  # x_{hi} − x_{hi−1} in the last row
                return torch.cat([x.narrow(0, 1, n - 1), after]) - x
        if n < 2:
            return torch.zeros_like(x)
        fwd = x.narrow(d, 1, n - 1) - x.narrow(d, 0, n - 1)
        return torch.cat([fwd, torch.zeros_like(x.narrow(d, 0, 1))], dim=d)

    def _diff_adjoint(self, y, d):
        n = y.shape[d]
        if self._split(y, d):
            before = self.halo.from_previous(y.narrow(0, n - 1, 1))
            zero = torch.zeros_like(y.narrow(0, 0, 1))
            inner = y.narrow(0, 0, n - 1)
            shifted = torch.cat([zero if before is None else before, inner])     # y_{i-1}, none before slice 0
            own = y if self.halo.has_next else torch.cat([inner, zero])         # y_i, boundary row y_{n-1} left out
            return shifted - own
        if n < 2:
            return torch.zeros_like(y)
        inner = y.narrow(d, 0, n - 1)  # y_0 .. y_{n-2}; y_{n-1} is the zero boundary row
        zero = torch.zeros_like(y.narrow(d, 0, 1))
        return torch.cat([zero, inner], dim=d) - torch.cat([inner, zero], dim=d)

    def A(self, x, **kwargs):
        self._check(x, "x")
        if x.ndim < 2:
            raise ValueError(f"FiniteDifference: expected at least a 2D tensor, got shape {tuple(x.shape)}")
        self._check_dims(x, "x")
        return torch.cat([self._diff(x, d) for d in self.dims], dim=1)

    def A_adjoint(self, y, **kwargs):
        self._check(y, "y")
        if y.ndim < 2 or y.shape[1] % len(self.dims):
            raise ValueError(f"FiniteDifference: y must stack {len(self.dims)} difference(s) along dim 1, got "
                             f"shape {tuple(y.shape)}")
        self._check_dims(y, "y")
        parts = y.chunk(len(self.dims), dim=1)
        return sum(self._diff_adjoint(p, d) for p, d in zip(parts, self.dims))


def finite_difference(img_size=None, dim=(-2, -1)):
    """Factory for :class:`FiniteDifference` (``img_size`` is accepted for registry uniformity and
    validated when given)."""
    if img_size is not None:
        img_size_3d(img_size)
    return FiniteDifference(dim=dim)
