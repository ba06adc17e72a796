"""DiffusionMBIR: a 2D diffusion prior per slice, total variation along z, ADMM between them.

Chung, Ryu, Lee, Ye, "Solving 3D Inverse Problems using Pre-trained 2D Diffusion Models"
(CVPR 2023), Algorithm 1, for a volume ``x`` of ``D`` axial slices ``(D, C, H, W)`` and
``y = A x + n`` applied slice by slice. Per diffusion step from ``σ`` to ``σ'``:

.. math::
    &\\text{(corrector, optional)}\\quad x \\leftarrow x + ε\\, s_θ(x, σ) + \\sqrt{2ε}\\, z,
        \\quad ε = 2\\,(r\\,\\lVert z\\rVert / \\lVert s_θ\\rVert)^2 \\\\
    &\\hat x_0 = D_θ(x, σ)\\ \\text{on every slice (chunks)} \\\\
    &\\text{ADMM, } \\min_v \\tfrac12\\lVert y - A v\\rVert^2 + λ \\lVert D_z v\\rVert_1
        \\text{ from } v = \\hat x_0:\\\\
    &\\qquad v \\leftarrow \\mathrm{CG}_{k}\\big[(A^\\top A + ρ D_z^\\top D_z)\\, v = A^\\top y + ρ D_z^\\top (z - u)\\big]
        \\ \\text{(warm start, } k \\text{ iterations)} \\\\
    &\\qquad z \\leftarrow \\mathrm{soft}(D_z v + u,\\ λ/ρ),\\qquad u \\leftarrow u + D_z v - z \\\\
    &x' = v + σ_{down}\\,(x - \\hat x_0)/σ + σ_{up}\\, ξ \\qquad \\text{(DDIM(η) re-noising)}

with ``z`` and ``u`` kept from one diffusion step to the next (they live in the solver's
state, never in closures or globals).

=================  ===============================================================
code               paper / official code (``HJ-harry/DiffusionMBIR``)
=================  ===============================================================
``lam``, ``rho``   λ and ρ of the ADMM-TV, *relative to ‖A‖²* (see below); ``lam=0``
                   switches the z prior off: CG on ``AᵀA v = Aᵀy`` per slice, the
                   2D-independent reconstruction with the same prior and steps
``cg_iters``       CG iterations per ADMM iteration (warm-started)
``admm_iters``     ADMM iterations per diffusion step (1 in the paper)
``tv``             ``"z"`` (paper: TV along z only) or ``"xyz"`` (all three axes)
``corrector``      one Langevin corrector step per diffusion step, ``snr`` r = 0.16
``placement``      ``"x0"``: ADMM on the denoised estimate, then re-noise; ``"xt"``: ADMM on
                   the noisy iterate after the predictor, as in the paper's code
``eta``            DDIM(η) of the predictor / re-noising
=================  ===============================================================

**Units of λ and ρ.** The paper minimises ``½‖y − R x‖² + λ‖D_z x‖₁`` with the unnormalised
parallel-beam Radon transform ``R`` of 256² slices (8 views: ‖R‖² ≈ 1985, computed with our
operator times 256²) and λ = 0.04, ρ = 10; for MRI, a unitary undersampled FFT (‖A‖ = 1)
with λ = 0.005, ρ = 0.01. invdiff's CT averages along rays (``A = R/W``), so the same balance
between data and TV is kept by giving λ and ρ relative to ‖A‖²: the solver multiplies them by
‖A‖² (power iteration, once per solve). CT: λ_rel = 0.04/1985 = 2.0e-5, ρ_rel = 10/1985 =
5.0e-3 (the defaults); MRI: λ_rel = 0.005, ρ_rel = 0.01 (``MBIR.preset("mri_cartesian")``).

**Where we differ, and why.** The paper runs 2000 VE predictor–corrector steps with the ADMM
on the noisy iterate (``placement="xt"``). On CPUs we run 50–200 steps, where applying the
data step to the denoised estimate and re-noising (``placement="x0"``, the default — the
decomposition of the follow-up "Decomposed Diffusion Sampler", Chung, Lee, Ye, ICLR 2024)
is much more accurate. Cost: ``steps · (1 + corrector)`` network calls on every slice (one
NFE counts one call on the whole volume); no VJP.

The volume is the solve's batch: run with ``num_samples=1`` (the z coupling would otherwise
join independent samples), which :func:`invdiff.solve` enforces.

**A volume split into blocks of slices.** Everything above acts slice by slice except five
volume-wide quantities, which the solver takes from its :class:`Coupling` (``coupling``; by
default the process holds the whole volume): the inner products of the coupled CG, the norms
``‖z‖``, ``‖s_θ‖`` of the corrector, the noise ``z``, ``ξ``, the rows of ``D_z`` at the
edges of a block (a halo slice from each neighbouring block), and ``‖A‖``. A process that holds
only the slices ``lo … hi − 1`` runs the same ``init``/``step``/``admm`` with a coupling that
sums those quantities over all blocks (:mod:`invdiff.distributed.volume`), and its iterates are
the rows ``lo … hi − 1`` of the one-process iterates (up to the order of floating-point sums).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..linalg import cg
from ..operators.checks import operator_norm
from ..operators.chunked import chunked
from ..operators.difference import FiniteDifference
from .base import ancestral_sigmas, ancestral_step, noise_like, Solver, State

__all__ = ["MBIR", "Coupling", "soft_threshold"]


class Coupling:
    """The volume-wide quantities of MBIR, for a process that holds the whole volume (the default).

    MBIR's update is slice by slice except for these; a process holding one block of a volume's
    slices passes a subclass whose methods return the values of the whole volume
    (:class:`invdiff.distributed.volume.BlockCoupling`), so the same code runs on each block.
    Every method is collective in that case: all blocks call it together, in the same order.

    Attributes
    ----------
    halo : object or None
        Exchange of edge slices with the neighbouring blocks for ``D_z``
        (:class:`invdiff.operators.FiniteDifference`'s ``halo``); ``None``: no neighbours.
    """

    halo = None

    @staticmethod
    def local_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``Σ_i a_i b_i`` over the slices held here, accumulated in double precision.

        Sums taken in another order (the whole volume at once, or one block per rank and then
        the blocks) then agree far below the inputs' own precision, so the float32 iterates of
        one process and of several ranks stay within float32 rounding of each other.
        """
        prod = a * b
        return prod.sum(dtype=torch.complex128 if prod.is_complex() else torch.float64)

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``⟨a, b⟩ = Σ_i a_i b_i`` over the whole volume, a 0-d tensor of ``a``'s dtype (CG's inner product)."""
        return self.local_dot(a, b).to(a.dtype)

    def norm(self, t: torch.Tensor) -> torch.Tensor:
        """``‖t‖₂`` over the whole volume, a 0-d tensor of ``t``'s real dtype."""
        m = t.abs() if t.is_complex() else t
        return self.local_dot(m, m).sqrt().to(m.dtype)

    def noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal noise shaped like ``x``: this block's slices of one draw for the whole volume."""
        return noise_like(x, generator)

    def operator_norm(self, op, x_shape, *, iters: int, dtype: torch.dtype, generator: torch.Generator,
                      device=None) -> float:
        """``‖A‖`` of the whole volume's operator, by :func:`invdiff.operators.checks.operator_norm`'s power
        iteration in ``dtype`` on ``device`` (default: the operator's) from a random start drawn from
        ``generator``; ``x_shape`` is one slice's shape with batch 1."""
        return operator_norm(op, x_shape, iters=iters, dtype=dtype, device=device, generator=generator)


_WHOLE = Coupling()


def soft_threshold(v: torch.Tensor, t: float) -> torch.Tensor:
    """``sign(v) · max(|v| − t, 0)``: the proximal map of ``t‖·‖₁``."""
    return torch.sign(v) * (v.abs() - t).clamp_min(0)


@dataclass
class _MBIRState(State):
    z: torch.Tensor | None = None      # ADMM split variable ≈ D_z x
    u: torch.Tensor | None = None      # scaled dual variable
    scale: float | None = None         # ‖A‖², estimated once
    aty: torch.Tensor | None = None    # Aᵀy, computed once


@dataclass(frozen=True)
class MBIR(Solver):
    """DiffusionMBIR with ADMM-TV along z (or all axes) coupling the slices of a volume."""

    lam: float = 2.0e-5
    rho: float = 5.0e-3
    cg_iters: int = 5
    admm_iters: int = 1
    tv: str = "z"
    corrector: bool = False
    snr: float = 0.16
    placement: str = "x0"
    eta: float = 0.85
    coupling: Coupling | None = field(default=None, repr=False, compare=False)

    couples_batch = True
    step_params = ("lam", "rho")
    benchmark_default = False  # volumes only
    presets = {"ct_sparse_view": {}, "ct_limited_angle": {}, "mri_cartesian": {"lam": 0.005, "rho": 0.01}}

    def __post_init__(self):
        if not (self.lam >= 0 and self.rho > 0 and self.snr > 0):
            raise ValueError(f"need lam >= 0, rho > 0, snr > 0; got {self.lam}, {self.rho}, {self.snr}")
        ints = (self.cg_iters, self.admm_iters)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in ints):
            raise ValueError(f"cg_iters and admm_iters must be integers >= 1, got {ints}")
        if self.tv not in ("z", "xyz"):
            raise ValueError(f"tv must be 'z' or 'xyz', got {self.tv!r}")
        if self.placement not in ("x0", "xt"):
            raise ValueError(f"placement must be 'x0' or 'xt', got {self.placement!r}")
        if not 0 <= self.eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.coupling is not None and not isinstance(self.coupling, Coupling):
            raise TypeError(f"MBIR: coupling must be an invdiff.solvers.mbir.Coupling or None, got "
                            f"{type(self.coupling).__name__}")

    def params(self) -> dict:
        """The hyperparameters (the ``coupling`` says where the slices are, not how the solver works)."""
        return {k: v for k, v in super().params().items() if k != "coupling"}

    @property
    def parts(self) -> Coupling:
        """The :class:`Coupling` in use: ``coupling``, or the whole volume in this process."""
        return _WHOLE if self.coupling is None else self.coupling

    def cost(self, steps):
        return steps * (2 if self.corrector else 1), 0

    @property
    def difference(self) -> FiniteDifference:
        """``D_z`` (or ``D`` along z, y, x), exchanging edge slices through the coupling's halo."""
        return FiniteDifference(0 if self.tv == "z" else (0, -2, -1), halo=self.parts.halo)

    def init(self, problem, prior, x_T, sigma, generator):
        A = problem.physics
        if problem.y.flatten(1).shape[1] == 0:
            # no measurement: ‖A‖² = 0, so λ and ρ (relative to it) vanish and no ADMM is run —
            # the slice prior sampled slice by slice (unconditional sampling through the same loop)
            scale = 0.0
        else:
            scale = self.parts.operator_norm(A, (1,) + tuple(x_T.shape[1:]), dtype=x_T.dtype, device=x_T.device,
                                             iters=20, generator=torch.Generator().manual_seed(0)) ** 2
        Dz = self.difference
        zero = torch.zeros_like(Dz.A(x_T))
        # the prior's chunk (SliceStackPrior) also bounds the operator's intermediates, e.g. CT's
        # rotated copies of each slice
        with torch.no_grad():
            aty = chunked(A, prior.chunk_size).A_adjoint(problem.y)
        return _MBIRState(x=x_T, z=zero, u=zero.clone(), scale=scale, aty=aty)

    def admm(self, problem, v: torch.Tensor, z: torch.Tensor, u: torch.Tensor, scale: float,
             chunk: int | None = None, aty: torch.Tensor | None = None):
        """``admm_iters`` ADMM iterations of ``½‖y − Av‖² + λ‖D v‖₁`` from ``v`` (warm start); returns ``(v, z, u)``.

        ``AᵀA`` is applied ``chunk`` slices at a time (:func:`invdiff.operators.chunked`). With
        ``scale = ‖A‖² = 0`` (no measurement) there is nothing to solve: ``v`` is returned as is."""
        if scale == 0:
            return v, z, u
        A, y, Dz = problem.physics, problem.y, self.difference
        lam, rho = self.lam * scale, self.rho * scale
        AtA = chunked(A, chunk).normal
        Aty = A.A_adjoint(y) if aty is None else aty
        if self.lam == 0:  # no z prior: the same CG data step on each slice independently
            v = cg(AtA, Aty, v, max_iter=self.cg_iters * self.admm_iters, tol=1e-7)
            return v, z, u
        for _ in range(self.admm_iters):
            rhs = Aty + rho * Dz.A_adjoint(z - u)
            v = cg(lambda w: AtA(w) + rho * Dz.A_adjoint(Dz.A(w)), rhs, v,
                   max_iter=self.cg_iters, tol=1e-7, batched=False, dot=self.parts.dot)
            dv = Dz.A(v)
            z = soft_threshold(dv + u, lam / rho)
            u = u + dv - z
        return v, z, u

    def _corrector(self, prior, x, sigma, generator):
        parts = self.parts
        score = (prior.denoise(x, sigma) - x) / sigma**2
        noise = parts.noise(x, generator)
        eps = 2 * (self.snr * parts.norm(noise) / parts.norm(score).clamp_min(1e-12)) ** 2
        return x + eps * score + (2 * eps) ** 0.5 * noise

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        chunk = prior.chunk_size
        _, up = ancestral_sigmas(sigma, sigma_next, self.eta)
        with torch.no_grad():
            x = self._corrector(prior, state.x, sigma, generator) if self.corrector else state.x
            x0 = prior.denoise(x, sigma)
            if self.placement == "x0":
                v, z, u = self.admm(problem, x0, state.z, state.u, state.scale, chunk, state.aty)
                x_next = ancestral_step(x, x0, sigma, sigma_next, self.eta, base=v, noise=False)
            else:
                v = x0
                mean = ancestral_step(x, x0, sigma, sigma_next, self.eta, noise=False)
                x_next, z, u = self.admm(problem, mean, state.z, state.u, state.scale, chunk, state.aty)
            if up > 0:  # + σ_up ξ, for either placement
                x_next = x_next + up * self.parts.noise(x_next, generator)
        return _MBIRState(x=x_next, x0=v, z=z, u=u, scale=state.scale, aty=state.aty), {}
