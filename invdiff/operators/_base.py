"""Input validation shared by every invdiff operator.

:class:`ShapeChecked` is a mixin placed before the deepinv class; factory arguments are checked
where they enter with :mod:`invdiff.validation` (re-exported here for the operator files).
"""

from __future__ import annotations

import math
import operator

import torch

from ..validation import as_integer, check_generator, img_size_3d, positive_int, real_number, real_tensor  # noqa: F401

__all__ = ["ShapeChecked", "img_size_3d", "positive_int", "real_number", "real_tensor", "check_generator"]


class ShapeChecked:
    """Mixin giving an operator an input shape and clear errors for tensors that do not fit.

    Images are ``(B, C, H, W)``; volumes are ``(D, C, H, W)`` with slices on the batch axis, so
    a 5D tensor (or a 3D one) is refused with a message saying which layout is expected.
    ``batch`` is the fixed batch size of operators that carry per-slice parameters (e.g. one
    MRI mask per slice), ``None`` otherwise.

    Dtype policy (``A``, ``A_adjoint`` and ``A_dagger``)
    ----------------------------------------------------
    * The operator computes in its *working dtype*, the real dtype of its buffers and parameters
      (``torch.float32`` unless it was built in or converted to another, e.g. ``op.double()``).
    * A real floating input of another dtype (float16, bfloat16, float64, ...) is cast to the
      working dtype, and the result is cast back to the input's dtype: ``A(x)`` has ``x``'s dtype
      and shape ``(B,) + meas_shape``. A float64 input into a float32 operator therefore gets
      float32 accuracy; convert the operator with ``.double()`` for float64 accuracy.
    * Integer and bool tensors (e.g. ``uint8`` images) raise ``TypeError``: convert them to float
      with values in [0, 1] first (invdiff never guesses a 0–255 scale).
    * Complex tensors raise ``TypeError``: images are real (complex MRI images and k-space are
      stored as real and imaginary channels). Non-tensors raise ``TypeError``.
    * A float32 input into a float32 operator is passed through untouched.
    """

    img_shape: tuple[int, int, int]
    batch: int | None = None
    #: how complex data is passed to this operator (appended to the ``TypeError`` for complex input)
    complex_hint: str = "this operator takes real tensors"

    def _to_inner(self, x: torch.Tensor) -> torch.Tensor:
        """Map an invdiff image to the wrapped deepinv operator's input (identity by default)."""
        return x

    def _from_inner(self, x: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`_to_inner` (identity by default)."""
        return x

    def A(self, x, **kwargs):
        x, dtype = self._as_working(x, "x")
        self._check_x(x)
        return self._apply_A(x, **kwargs).to(dtype)

    def A_adjoint(self, y, **kwargs):
        y, dtype = self._as_working(y, "y")
        self._check_y(y)
        return self._from_inner(super().A_adjoint(y, **kwargs)).to(dtype)

    def A_dagger(self, y, **kwargs):
        """The wrapped operator's pseudo-inverse, under the same dtype policy as ``A_adjoint``."""
        y, dtype = self._as_working(y, "y")
        self._check_y(y)
        return self._from_inner(super().A_dagger(y, **kwargs)).to(dtype)

    def _apply_A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """The wrapped deepinv forward on a checked image ``x`` already in the working dtype."""
        return super().A(self._to_inner(x), **kwargs)

    def working_dtype(self) -> torch.dtype | None:
        """Real dtype the operator computes in: that of its first floating (or complex, mapped to
        its real counterpart) buffer or parameter; ``None`` if it has none. deepinv's
        ``_device_holder`` (always float32 at construction) does not count."""
        for name, t in self.named_buffers():
            if name.rsplit(".", 1)[-1] == "_device_holder":
                continue
            if t.is_complex():
                return t.real.dtype
            if t.is_floating_point():
                return t.dtype
        for t in self.parameters():
            if t.is_floating_point():
                return t.dtype
        return None

    def _as_working(self, t, name: str) -> tuple[torch.Tensor, torch.dtype]:
        """Apply the dtype policy to the input ``t`` named ``name`` (``x`` or ``y``).

        Returns ``t`` in the working dtype and the dtype to give the result back in.
        """
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{self._describe()}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.is_complex():
            raise TypeError(f"{self._describe()}: {name} must be a real floating-point tensor, got complex "
                            f"dtype {t.dtype}; {self.complex_hint}")
        if not t.is_floating_point():
            what = "images" if name == "x" else "measurements"
            raise TypeError(f"{self._describe()}: {name} must be a floating-point tensor, got dtype {t.dtype}; "
                            f"convert {what} to float first ({'with values in [0, 1], ' if name == 'x' else ''}"
                            f"invdiff does not guess a 0-255 scale)")
        work = self.working_dtype()
        return (t if work is None else t.to(work)), t.dtype

    def _describe(self) -> str:
        # the first public class in the MRO (e.g. deepinv's MRI for the private invdiff wrapper)
        name = next((c.__name__ for c in type(self).__mro__
                     if not c.__name__.startswith("_") and c is not ShapeChecked), type(self).__name__)
        return f"{name}({', '.join(map(str, self.img_shape))})"

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self._describe()}: x must be a torch.Tensor, got {type(x).__name__}")
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
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{self._describe()}: y must be a torch.Tensor, got {type(y).__name__}")
        if y.ndim != len(meas) + 1 or tuple(y.shape[1:]) != tuple(meas):
            got = tuple(y.shape)
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
