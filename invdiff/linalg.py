"""Conjugate gradients for ``M x = b`` with ``M`` symmetric positive (semi-)definite.

The one CG routine of the package (baselines, DiffPIR's data step, MBIR's ADMM x-update, the
real-input MRI proximal step), in a neutral module that operators and solvers both use.
Batch elements are independent systems: step sizes are computed per element, and an element
stops updating once its residual falls below ``tol · ‖b‖``. The inner product can be replaced
(``dot``), e.g. by one summed over processes when the unknown is split between them.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["cg"]


def _dot(a: torch.Tensor, b: torch.Tensor, batched: bool = True) -> torch.Tensor:
    """Inner product per batch element, shaped ``(B, 1, ..., 1)`` — or of the whole tensors,
    shaped ``(1, 1, ..., 1)``, when ``batched`` is False."""
    if not batched:
        return (a * b).sum().reshape([1] * a.ndim)
    return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.ndim - 1)))


def cg(apply_M: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x0: torch.Tensor | None = None,
       *, max_iter: int = 50, tol: float = 1e-6, batched: bool = True,
       dot: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
       precond: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Solve ``M x = b`` by conjugate gradients (Hestenes & Stiefel 1952), batch-wise, optionally preconditioned.

    With a preconditioner ``P ≈ M⁻¹`` (symmetric positive definite) it is preconditioned CG
    (Saad, *Iterative Methods for Sparse Linear Systems*, 2003, Algorithm 9.1):
    ``z = P r``, ``α = ⟨r, z⟩ / ⟨p, M p⟩``, ``β = ⟨r', z'⟩ / ⟨r, z⟩``, ``p' = z' + β p``; without
    one, ``z = r`` and the iterates are plain CG's.

    Parameters
    ----------
    apply_M : callable
        ``x -> M x`` for a symmetric positive semi-definite linear ``M`` acting on tensors shaped
        like ``b``; each batch element must be independent of the others.
    b : torch.Tensor
        Right-hand side ``(B, ...)``.
    x0 : torch.Tensor, optional
        Warm start (zeros by default). Not modified.
    max_iter : int
        Number of iterations at most.
    tol : float
        Relative residual ``‖b - M x‖ / ‖b‖`` at which an element stops.
    batched : bool
        True: the batch elements are independent systems (each with its own step sizes and
        stopping). False: ``M`` couples the batch (e.g. differences across the slices of a
        volume) and the whole tensor is one unknown.
    dot : callable, optional
        ``(a, b) -> ⟨a, b⟩``, the inner product that defines the iteration (the step sizes
        ``α = ⟨r, r⟩ / ⟨p, M p⟩``, ``β = ⟨r', r'⟩ / ⟨r, r⟩`` and the stopping test), returned as
        a tensor that broadcasts against ``b``; it replaces the built-in one (per batch element,
        or of the whole tensors when ``batched`` is False), and ``batched`` is then ignored. A
        tensor that holds one block of a larger unknown (slices split over processes) passes the
        inner product of the whole unknown, ``Σ_blocks Σ_i a_i b_i``: every block then takes the
        same steps and stops together, and the iterates equal those of one process on the whole.
    precond : callable, optional
        ``r -> P r``, a symmetric positive definite approximation of ``M⁻¹`` acting like
        ``apply_M`` (e.g. :class:`invdiff.operators.preconditioner.CirculantPreconditioner`);
        the stopping test stays on the unpreconditioned residual ``‖b − M x‖``.

    Returns
    -------
    torch.Tensor
        The approximate solution, shaped like ``b``.
    """
    def inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _dot(u, v, batched) if dot is None else dot(u, v)

    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_M(x) if x0 is not None else b.clone()
    z = r if precond is None else precond(r)
    p = z.clone()
    rr = inner(r, r)
    rz = rr if precond is None else inner(r, z)
    # Below ~10 ulp the residual is rounding noise; iterating on it breaks down (M singular).
    tol = max(tol, 10 * torch.finfo(b.dtype).eps)
    stop = (tol * inner(b, b).sqrt()) ** 2
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(max_iter):
        active = rr > stop
        if not active.any():
            break
        Mp = apply_M(p)
        pMp = inner(p, Mp)
        active = (active & (pMp > tiny)).to(b.dtype)
        alpha = active * rz / pMp.clamp_min(tiny)
        x = x + alpha * p
        r = r - alpha * Mp
        rr_new = inner(r, r)
        if precond is None:
            z, rz_new = r, rr_new
        else:
            z = precond(r)
            rz_new = inner(r, z)
        p = torch.where(active > 0, z + (rz_new / rz.clamp_min(tiny)) * p, p)
        rr = torch.where(active > 0, rr_new, rr)
        rz = torch.where(active > 0, rz_new, rz)
    return x
