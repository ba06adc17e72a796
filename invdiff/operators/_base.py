"""Shape validation shared by every invdiff operator (a mixin placed before the deepinv class)."""

from __future__ import annotations

import torch

__all__ = ["ShapeChecked", "img_size_3d", "positive_int"]


def img_size_3d(img_size, name: str = "img_size") -> tuple[int, int, int]:
    """Normalise ``img_size`` (int, (H, W) or (C, H, W)) to ``(C, H, W)``; ``ValueError`` otherwise."""
    if isinstance(img_size, int):
        size = (1, img_size, img_size)
    else:
        try:
            size = tuple(int(s) for s in img_size)
        except TypeError:
            raise ValueError(f"{name} must be an int, (H, W) or (C, H, W), got {img_size!r}") from None
        if len(size) == 2:
            size = (1,) + size
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"{name} must be an int, (H, W) or (C, H, W) with positive entries, got {img_size!r}")
    return size


def positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class ShapeChecked:
    """Mixin giving an operator an input shape and clear errors for tensors that do not fit.

    Images are ``(B, C, H, W)``; volumes are ``(D, C, H, W)`` with slices on the batch axis, so
    a 5D tensor (or a 3D one) is refused with a message saying which layout is expected.
    ``batch`` is the fixed batch size of operators that carry per-slice parameters (e.g. one
    MRI mask per slice), ``None`` otherwise.
    """

    img_shape: tuple[int, int, int]
    batch: int | None = None

    def _to_inner(self, x: torch.Tensor) -> torch.Tensor:
        """Map an invdiff image to the wrapped deepinv operator's input (identity by default)."""
        return x

    def _from_inner(self, x: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`_to_inner` (identity by default)."""
        return x

    def A(self, x, **kwargs):
        self._check_x(x)
        return super().A(self._to_inner(x), **kwargs)

    def A_adjoint(self, y, **kwargs):
        self._check_y(y)
        return self._from_inner(super().A_adjoint(y, **kwargs))

    def _describe(self) -> str:
        return f"{type(self).__name__}({', '.join(map(str, self.img_shape))})"

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{self._describe()}: x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(
                f"{self._describe()}: expected an image batch (B, C, H, W) or a volume (D, C, H, W) "
                f"with slices on the first axis, got a {x.ndim}D tensor of shape {tuple(x.shape)}")
        if tuple(x.shape[1:]) != self.img_shape:
            c, h, w = self.img_shape
            raise ValueError(f"{self._describe()}: expected x of shape (B, {c}, {h}, {w}), got {tuple(x.shape)}")
        if self.batch is not None and x.shape[0] != self.batch:
            raise ValueError(f"{self._describe()}: this operator has per-slice parameters for "
                             f"{self.batch} slices, got {x.shape[0]}")

    def _check_y(self, y: torch.Tensor) -> None:
        meas = getattr(self, "meas_shape", None)
        if meas is None:
            return
        if not isinstance(y, torch.Tensor) or y.ndim != len(meas) + 1 or tuple(y.shape[1:]) != tuple(meas):
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{self._describe()}: expected a measurement of shape "
                             f"(B, {', '.join(map(str, meas))}), got {got}")
        if self.batch is not None and y.shape[0] != self.batch:
            raise ValueError(f"{self._describe()}: this operator has per-slice parameters for "
                             f"{self.batch} slices, got {y.shape[0]}")

    def _set_meas_shape(self) -> None:
        """Record the measurement shape by applying the operator to zeros once."""
        b = self.batch or 1
        with torch.no_grad():
            y = self.A(torch.zeros((b,) + tuple(self.img_shape)))
        self.meas_shape = tuple(y.shape[1:])
