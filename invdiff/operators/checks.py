"""Public numerical checks for linear operators (adjointness, linearity, batch independence).

Each check draws random inputs from ``generator`` and returns a relative error, so a test or a
user can compare it with a tolerance suited to the dtype. The inputs are drawn on the generator's
device and moved to the operator's (:func:`invdiff.devices.module_device`), so the checks run on
an operator moved to a GPU as on the CPU, with the same draws.
"""

from __future__ import annotations

import torch

from ..devices import module_device, randn

__all__ = ["check_adjoint", "check_linear", "check_batch", "operator_norm"]


def _randn(shape, dtype, generator, device=None):
    return randn(shape, generator=generator, dtype=dtype, device=device)


def check_adjoint(op, x_shape, *, dtype=torch.float64, generator: torch.Generator | None = None) -> float:
    """Relative error ``|<A x, y> - <x, Aᵀ y>| / |<A x, y>|`` for random ``x`` and ``y``.

    ``y = A x + r ‖A x‖ / √m`` with random ``r`` (``m`` entries), so that ``<A x, y> ≈ ‖A x‖²`` is not
    close to zero by chance while ``Aᵀ`` is still exercised on a generic vector, not only on the
    range of ``A``.
    """
    x = _randn(x_shape, dtype, generator, module_device(op))
    with torch.no_grad():
        ax = op.A(x)
        y = ax + _randn(ax.shape, ax.dtype, generator, ax.device) * ax.norm() / ax.numel() ** 0.5
        aty = op.A_adjoint(y)
    lhs = (ax * y).sum()
    rhs = (x * aty).sum()
    return float((lhs - rhs).abs() / lhs.abs().clamp_min(torch.finfo(dtype).tiny))


def check_linear(op, x_shape, *, dtype=torch.float64, generator: torch.Generator | None = None) -> float:
    """Relative error ``‖A(a x1 + b x2) - a A x1 - b A x2‖ / (|a| ‖A x1‖ + |b| ‖A x2‖)``."""
    device = module_device(op)
    x1, x2 = _randn(x_shape, dtype, generator, device), _randn(x_shape, dtype, generator, device)
    a, b = float(_randn((), dtype, generator)), float(_randn((), dtype, generator))
    with torch.no_grad():
        y1, y2, y12 = op.A(x1), op.A(x2), op.A(a * x1 + b * x2)
    denom = abs(a) * y1.norm() + abs(b) * y2.norm()
    return float((y12 - a * y1 - b * y2).norm() / denom.clamp_min(torch.finfo(dtype).tiny))


def check_batch(op, x_shape, *, dtype=torch.float64, generator: torch.Generator | None = None) -> float:
    """Largest relative change of ``A x_i`` when element ``i`` is applied in a batch vs alone.

    ``x_shape`` must have a batch axis of at least 2. Checks both ``A`` and ``A_adjoint``.
    """
    if x_shape[0] < 2:
        raise ValueError(f"check_batch needs a batch of at least 2, got x_shape={tuple(x_shape)}")
    x = _randn(x_shape, dtype, generator, module_device(op))
    with torch.no_grad():
        yb = op.A(x)
        y = _randn(yb.shape, yb.dtype, generator, yb.device)
        xb = op.A_adjoint(y)
        worst = 0.0
        for i in range(x.shape[0]):
            yi = op.A(x[i:i + 1])
            xi = op.A_adjoint(y[i:i + 1])
            worst = max(worst, float((yi[0] - yb[i]).norm() / yb[i].norm().clamp_min(1e-30)),
                        float((xi[0] - xb[i]).norm() / xb[i].norm().clamp_min(1e-30)))
    return worst


def operator_norm(op, x_shape, *, iters: int = 30, dtype=torch.float32, device=None,
                  generator: torch.Generator | None = None) -> float:
    """Largest singular value ``‖A‖`` by power iteration on ``AᵀA`` (``x_shape`` with batch 1).

    The iteration runs in ``dtype`` on ``device`` (default: the operator's,
    :func:`invdiff.devices.module_device`) from a start drawn from ``generator`` on its own device.
    An operator with per-slice parameters (``op.batch``, e.g. volume MRI with one mask per
    slice) is probed on its whole stack: the norm is then the largest over its slices.
    """
    batch = getattr(op, "batch", None)
    if batch:
        x_shape = (batch,) + tuple(x_shape[1:])
    x = _randn(x_shape, dtype, generator, module_device(op) if device is None else device)
    x = x / x.norm()
    s = torch.zeros((), dtype=dtype, device=x.device)
    with torch.no_grad():
        for _ in range(iters):
            z = op.A_adjoint(op.A(x))
            s = z.norm()
            x = z / s.clamp_min(torch.finfo(dtype).tiny)
    return float(s.sqrt())
