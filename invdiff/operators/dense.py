"""Dense matrices as operators: ``y = M vec(x)``, stored through their SVD.

``M = U S Vᵀ`` (``m × d``) is kept as a deepinv ``DecomposablePhysics`` with a full ``d × d``
right basis ``V`` and singular values ``s = (S, 0, …, 0)`` of length ``d``, so SVD-based
solvers (DDRM, ΠGDM) run on it and the unobserved directions (``s_i = 0``) are explicit.
This is the operator of the exactness tests (random linear problems with a Gaussian or
Gaussian-mixture prior, whose posterior is known in closed form) and of compressed sensing
with a random Gaussian matrix.
"""

from __future__ import annotations

import deepinv
import torch

from ._base import ShapeChecked, check_generator, img_size_3d, positive_int

__all__ = ["DenseOperator", "dense_operator"]


class DenseOperator(ShapeChecked, deepinv.physics.DecomposablePhysics):
    """``A x = M vec(x)`` for a dense ``M`` of shape ``(m, C·H·W)``, in SVD form.

    Parameters
    ----------
    matrix : tensor (m, d)
        The matrix; ``d`` must equal ``C·H·W`` of ``img_size``.
    img_size : int or (H, W) or (C, H, W)
        Shape of one image.
    """

    def __init__(self, matrix: torch.Tensor, img_size):
        c, h, w = img_size_3d(img_size)
        if matrix is None or isinstance(matrix, (str, bytes)):
            raise TypeError(f"dense operator: matrix must be a real 2D tensor or array, got {type(matrix).__name__}")
        try:
            M = torch.as_tensor(matrix)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"dense operator: matrix must be a real 2D tensor or array, "
                            f"got {type(matrix).__name__}") from None
        if M.is_complex() or M.dtype == torch.bool:
            raise TypeError(f"dense operator: matrix must be real, got dtype {M.dtype}")
        if not M.is_floating_point():
            M = M.to(torch.get_default_dtype())  # integer entries: exact in float, not truncated later
        if M.ndim != 2 or M.shape[1] != c * h * w or M.shape[0] < 1:
            raise ValueError(f"dense operator: matrix must have shape (m, {c * h * w}) for images "
                             f"{(c, h, w)}, got {tuple(M.shape)}")
        if not torch.isfinite(M).all():
            raise ValueError("dense operator: matrix contains NaN or Inf")
        m, d = M.shape
        U, S, Vh = torch.linalg.svd(M.double(), full_matrices=True)  # float64 factors, stored in M's dtype
        r = min(m, d)
        s = torch.zeros(d, dtype=torch.float64)
        s[:r] = S
        super().__init__(mask=s.to(M.dtype))
        self.register_buffer("left", U[:, :r].to(M.dtype).contiguous())   # m × r
        self.register_buffer("right", Vh.T.to(M.dtype).contiguous())      # d × d, orthogonal
        self.img_shape = (c, h, w)
        self.meas_shape = (m,)

    def V_adjoint(self, x, **kw):
        return x.reshape(x.shape[0], -1) @ self.right

    def V(self, z, **kw):
        return (z @ self.right.T).reshape((z.shape[0],) + self.img_shape)

    def U(self, z, **kw):
        return z[:, : self.left.shape[1]] @ self.left.T

    def U_adjoint(self, y, **kw):
        z = y @ self.left
        pad = self.right.shape[0] - z.shape[1]
        return torch.cat([z, z.new_zeros(z.shape[0], pad)], dim=1) if pad else z

    @property
    def matrix(self) -> torch.Tensor:
        """``M = U diag(s) Vᵀ`` (the operator is applied through these factors, so ``A``, ``Aᵀ`` and
        the SVD agree to rounding in any dtype)."""
        r = self.left.shape[1]
        return (self.left * self.mask[:r]) @ self.right[:, :r].T


def dense_operator(img_size, matrix: torch.Tensor | None = None, *, measurements: int | None = None,
                   generator: torch.Generator | None = None) -> DenseOperator:
    """A given ``matrix``, or a random Gaussian one with ``measurements`` rows (default ``d // 4``).

    The random matrix has i.i.d. ``N(0, 1/d)`` entries, so ``‖A x‖ ≈ ‖x‖ sqrt(m/d)``.
    """
    c, h, w = img_size_3d(img_size)
    check_generator(generator)
    d = c * h * w
    if matrix is None:
        m = positive_int(measurements if measurements is not None else max(1, d // 4), "measurements")
        matrix = torch.randn(m, d, generator=generator, dtype=torch.float32) / d**0.5
    elif measurements is not None:
        raise ValueError("give either matrix or measurements, not both")
    return DenseOperator(matrix, (c, h, w))
