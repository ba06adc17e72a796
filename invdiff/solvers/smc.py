"""Sequential Monte Carlo for posterior sampling: Feynman–Kac steering with twisted proposals.

Singhal, Horvitz, Teehan, Ren, Yu, Cho, Ranganath, "A General Framework for Inference-time
Scaling and Steering of Diffusion Models" (FK steering, 2025); twisted proposals as in Wu,
Trippe, Naesseth, Blei, Cunningham, "Practical and Asymptotically Exact Conditional Sampling in
Diffusion Models" (TDS, NeurIPS 2023).

Model. ``K`` particles per problem follow the prior's reverse kernel (DDIM(η) in VE form,
:mod:`invdiff.solvers.ddim`), ``p(x' | x) = N(μ(x), σ_up² I)``,
``μ(x) = x̂0 + σ_down (x − x̂0)/σ``. Each particle path carries a reward

.. math:: r_σ(x) = -\\frac{\\lVert y - A\\,\\hat x_0(x)\\rVert^2}{2(σ_y^2 + ρ_σ^2)},\\qquad
          ρ_σ^2 = \\frac{τ^2 σ^2}{τ^2 + σ^2},

a tempered log-likelihood at the denoised estimate (``ρ_σ²`` is ``Var[x0 | x_σ]`` of a
Gaussian prior of variance ``τ²``; it vanishes as ``σ → 0``). With ``cov="jacobian"`` the isotropic
``ρ_σ² I`` is replaced by Tweedie's second moment ``Cov[x0 | x_σ] = σ² J``, ``J = ∂x̂0/∂x``
(the moment projection of Boys et al., "Tweedie Moment Projected Diffusions for Inverse
Problems", TMLR 2024):

.. math:: r_σ(x) = -\\tfrac12\\, ρᵀ S_σ^{-1} ρ,\\quad ρ = y - A\\hat x_0(x),\\quad
          S_σ = σ_y^2 I + σ^2 A J Aᵀ,

with ``S_σ⁻¹ρ`` from ``cg_iters`` conjugate-gradient steps, each one VJP through the network
(``Jᵀ = J`` for an exact denoiser), and the twist gradient ``λ Jᵀ Aᵀ S_σ⁻¹ ρ`` (``S_σ`` held
fixed). For a Gaussian prior this is the exact ``log p(y | x_σ)`` (up to a constant), so the
weights stay nearly uniform; the isotropic twist ignores the prior's correlations, which on
correlated image priors leaves the weights uneven and the particle system degenerate (see
``benchmarks/smc_particles.md``). For a network ``J`` is only approximately symmetric and
positive; the twist is then an approximation like any other, and the weights stay exact.
One step from ``σ`` to ``σ'``:

.. math::
    x' &\\sim q(x' \\mid x) = N\\big(μ(x) + σ_{up}^2 ∇_x λ r_σ(x),\\ σ_{up}^2 I\\big)
        \\quad\\text{(twisted; derivative-free: } q = p\\text{)},\\\\
    \\log w &\\mathrel{+}= \\log p(x' \\mid x) - \\log q(x' \\mid x) + \\log G_{σ'}(\\text{path}),

with the potential ``G`` of FK steering computed from the rewards along the particle's path:
``difference`` λ(r_{σ'} − r_σ), ``max`` λ max_{s ≥ σ'} r_s, ``sum`` λ Σ_{s ≥ σ'} r_s,
``current`` λ r_{σ'}. When the effective sample size falls below ``ess_threshold · K`` the
particles are resampled (weights reset, paths and their accumulated potentials copied); the
weights accumulate multiplicatively (additively in log space) between resamplings. At the last
step (``σ' = 0``, ``x' = x̂0(x)``) the accumulated potentials are divided out and the exact
log-likelihood ``λ·(−‖y − A x_0‖²/(2σ_y²))`` put in, so the weighted particles target
``p(x_0) p(y | x_0)^λ`` — the posterior for ``λ = 1`` — exactly as ``K → ∞`` (up to the
discretisation of the reverse kernel).

=====================  ==========================================================
code                   paper
=====================  ==========================================================
``particles``          K
``lam``                λ (FK steering: reward weight; 1 for the posterior)
``potential``          FK steering potential type
``twist``              TDS gradient-twisted proposal (1 VJP per step) or not (0 VJP)
``tau``                τ of the tempering ρ_σ² = τ²σ²/(τ² + σ²) (``cov="isotropic"``); ``None``:
                       the prior's ``data_std`` (0.25 for [0, 1] image priors), so the default
                       follows the prior's scale
``cov``                twist covariance: ``"isotropic"`` ρ_σ² I or ``"jacobian"`` σ² J
``cg_iters``           CG iterations for S_σ⁻¹ρ (``cov="jacobian"``; one VJP each)
``log_w``              log importance weights, ``(N, K)``
``log_g``              Σ of log potentials along each particle's path
``comm``               particle communicator: the ``K`` particles over processes (not a
                       hyperparameter; default one process)
=====================  ==========================================================

Cost: one batched network call over all ``K·N`` particles per step, plus one VJP when
twisting and at most ``cg_iters`` VJPs for the Jacobian twist covariance. The derivative-free
mode (no VJP at all) is ``twist=False`` with ``cov="isotropic"``. The isotropic twist is the
default (one VJP per step, as in TDS), but its ``τ`` must be tuned per problem; the Jacobian
twist has nothing to tune and, for ~6× the backward passes, is far more accurate per step
(``benchmarks/smc_particles.md``, ``benchmarks/solver_convergence.md``). Official FK defaults
(λ = 10, K = 4, resampling every 5 steps) target reward steering, not posteriors; for inverse
problems λ = 1, ESS-triggered resampling.
Known bugs of the official code avoided here: weights accumulated across non-resampling steps,
max-subtraction before exponentiating, and a deterministic kernel with resampling is refused.

**Particles over processes.** ``comm`` (a particle communicator,
:mod:`invdiff.solvers.resampling`; default: the one-process :data:`~invdiff.solvers.resampling.LOCAL`)
splits the ``K`` particles of every problem over ``comm.size`` processes, ``K/size`` each
(:func:`invdiff.distributed.particles.solve_particles` runs it over the ranks of a
``torch.distributed`` process group). The algorithm is the same code: every process draws the
*whole* ``K``-particle noise from its generator (all hold the same generator state) and keeps its
own rows, so the particles are those of the one-process run (bit for bit where the prior
computes each image the same in a smaller batch); the ESS normalises the log-weights
with the communicator's log-sum-exp (an all-reduce across processes); resampling gathers the
``(N, K)`` log-weights, every process draws the ancestors from the same generator state and
process 0's draw is broadcast (so all agree), and ``take`` moves the particles whose ancestor
lives elsewhere; the last step gathers every particle, so every process returns the whole
result. ``comm`` is not a hyperparameter (not in :meth:`params`, not compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..linalg import cg
from .base import ancestral_sigmas, ancestral_step, Final, noise_like, Solver, State
from .resampling import LOCAL, LocalParticles, RESAMPLING, ess

__all__ = ["SMC", "POTENTIALS", "COVARIANCES"]


# -- FK potentials: (reward at σ', reward at σ, path statistic, λ) -> (log G increment, statistic) --

def _difference(r_new, r_old, stat, lam):
    """λ (r_σ' − r_σ) (λ r at the start of the path): the potentials telescope to λ r of the last state."""
    return lam * (r_new if r_old is None else r_new - r_old), stat


def _current(r_new, r_old, stat, lam):
    """λ r_σ'."""
    return lam * r_new, stat


def _max(r_new, r_old, stat, lam):
    """λ max_{s ≥ σ'} r_s."""
    stat = r_new if stat is None else torch.maximum(stat, r_new)
    return lam * stat, stat


def _sum(r_new, r_old, stat, lam):
    """λ Σ_{s ≥ σ'} r_s."""
    stat = r_new if stat is None else stat + r_new
    return lam * stat, stat


POTENTIALS = {"difference": _difference, "max": _max, "sum": _sum, "current": _current}


# -- twist covariances: (smc, problem, prior, y_rep, x, σ) -> (x̂0, reward, ∇_x λ r or None) --

def _isotropic(smc, problem, prior, y_rep, x, sigma):
    """``r = −‖y − A x̂0‖² / (2(σ_y² + ρ_σ²))``, ``ρ_σ² = τ²σ²/(τ² + σ²)``; 1 NFE and, twisting, 1 VJP."""
    tau = prior.data_std if smc.tau is None else smc.tau
    rho2 = tau**2 * sigma**2 / (tau**2 + sigma**2)

    def reward(x0):
        resid = (y_rep - problem.physics.A(x0)).flatten(1)
        return -(resid**2).sum(1) / (2 * (problem.sigma_y**2 + rho2))

    if not smc.twist:
        with torch.no_grad():
            x0 = prior.denoise(x, sigma)
            return x0, reward(x0), None
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0 = prior.denoise(xg, sigma)
        r = reward(x0)
        grad = torch.autograd.grad(smc.lam * r.sum(), xg)[0]
    return x0.detach(), r.detach(), grad


def _jacobian(smc, problem, prior, y_rep, x, sigma):
    """``r = −½ ρᵀ S⁻¹ ρ``, ``S = σ_y² I + σ² A J Aᵀ`` by CG (one VJP per iteration), twist ``λ Jᵀ Aᵀ S⁻¹ ρ``."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0 = prior.denoise(xg, sigma)

        def vjp(v):  # Jᵀ v, J = ∂x̂0/∂x
            return torch.autograd.grad(x0, xg, grad_outputs=v, retain_graph=True)[0]

        A, At = problem.physics.A, problem.physics.A_adjoint
        resid = (y_rep - A(x0)).detach()
        u = cg(lambda v: problem.sigma_y**2 * v + sigma**2 * A(vjp(At(v))), resid, max_iter=smc.cg_iters)
        r = -0.5 * (resid * u).flatten(1).sum(1)
        grad = smc.lam * vjp(At(u)) if smc.twist else None
    return x0.detach(), r.detach(), grad


COVARIANCES = {"isotropic": _isotropic, "jacobian": _jacobian}


@dataclass
class _Particles(State):
    y_rep: torch.Tensor | None = None      # y repeated for the K particles of each problem (k·N + n)
    log_w: torch.Tensor | None = None      # (N, K)
    reward: torch.Tensor | None = None     # (K·N,) r at the current x
    grad: torch.Tensor | None = None       # ∇_x λ r at the current x (twist), else None
    log_g: torch.Tensor | None = None      # accumulated log potentials along each path
    stat: torch.Tensor | None = None       # running max or sum of rewards (max / sum potentials)
    samples: torch.Tensor | None = None    # final equally weighted draws (K, N, ...)
    mean: torch.Tensor | None = None       # final weighted mean (N, ...)


@dataclass(frozen=True)
class SMC(Solver):
    """Sequential Monte Carlo / FK steering posterior sampler with twisted proposals (TDS)."""

    particles: int = 64
    lam: float = 1.0
    potential: str = "difference"
    twist: bool = True
    tau: float | None = None
    cov: str = "isotropic"
    cg_iters: int = 5
    eta: float = 1.0
    ess_threshold: float = 0.5
    resampling: str = "systematic"
    comm: LocalParticles | None = field(default=None, repr=False, compare=False)

    uses_vjp = True
    step_params = ("lam", "tau")
    benchmark_default = False  # K particles per problem in every network call

    def __post_init__(self):
        if self.particles < 1:  # the type (an int, not a bool) is checked by Solver's field checks
            raise ValueError(f"particles must be an integer >= 1, got {self.particles!r}")
        if self.potential not in POTENTIALS:
            raise ValueError(f"potential must be one of {tuple(POTENTIALS)}, got {self.potential!r}")
        if self.cov not in COVARIANCES:
            raise ValueError(f"cov must be one of {tuple(COVARIANCES)}, got {self.cov!r}")
        if self.cg_iters < 1:
            raise ValueError(f"cg_iters must be an integer >= 1, got {self.cg_iters!r}")
        if self.resampling not in RESAMPLING:
            raise ValueError(f"resampling must be one of {sorted(RESAMPLING)}, got {self.resampling!r}")
        if not (0 <= self.eta <= 1):
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.eta == 0 and self.ess_threshold > 0:
            raise ValueError("a deterministic transition (eta = 0) cannot be combined with resampling: "
                             "resampled copies would stay identical; use eta > 0 or ess_threshold = 0")
        if not ((self.tau is None or self.tau > 0) and self.lam >= 0 and 0 <= self.ess_threshold <= 1):
            raise ValueError(f"need tau > 0 (or None: the prior's data_std), lam >= 0 and 0 <= ess_threshold <= 1; "
                             f"got tau={self.tau}, lam={self.lam}, ess_threshold={self.ess_threshold}")
        if self.comm is not None:
            missing = [a for a in ("rank", "size", "logsumexp", "all_gather", "broadcast", "take")
                       if not hasattr(self.comm, a)]
            if missing:
                raise TypeError(f"comm must be a particle communicator (invdiff.solvers.resampling), "
                                f"{type(self.comm).__name__} has no {', '.join(missing)}")
            size = self.comm.size
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"comm.size must be an integer >= 1, got {size!r}")
            if self.particles % size:
                raise ValueError(f"SMC: K={self.particles} particles cannot be split over N={size} processes: "
                                 f"K must be a multiple of N")

    def params(self):
        """The hyperparameters (every field but ``comm``)."""
        return {k: v for k, v in super().params().items() if k != "comm"}

    @property
    def _comm(self):
        return LOCAL if self.comm is None else self.comm

    def cost(self, steps):
        """NFE and VJP; with ``cov="jacobian"`` the VJP count is an upper bound (CG stops at
        convergence, e.g. after ``m`` iterations for ``m`` measurements)."""
        per_step = int(self.twist) + (self.cg_iters if self.cov == "jacobian" else 0)
        return steps, steps * per_step

    def _evaluate(self, problem, prior, y_rep, x, sigma):
        """x̂0, reward and (when twisting) ∇_x λ r at noise level ``sigma``."""
        if y_rep.flatten(1).shape[1] == 0:  # no measurement: zero reward, the prior's own kernel
            with torch.no_grad():
                x0 = prior.denoise(x, sigma)
            return x0, x.new_zeros(x.shape[0]), (torch.zeros_like(x) if self.twist else None)
        return COVARIANCES[self.cov](self, problem, prior, y_rep, x, sigma)

    # -- protocol ------------------------------------------------------------------------

    def _mine(self, whole: torch.Tensor) -> torch.Tensor:
        """This process's rows ``[r·L, (r+1)·L)`` of a tensor holding every particle (row ``k·N + n``)."""
        comm = self._comm
        rows = whole.shape[0] // comm.size
        return whole[comm.rank * rows:(comm.rank + 1) * rows]

    def init(self, problem, prior, x_T, sigma, generator):
        """``K`` fresh particles per problem at ``σ_0``, each weighted by its first potential
        ``G_0 = exp(λ r_σ0)`` (``x_T`` is not used: the particle system is drawn here; split over
        processes, this process's ``K/size`` of them)."""
        K, N = self.particles, problem.y.shape[0]
        k_here = K // self._comm.size
        y_rep = problem.y.repeat((k_here,) + (1,) * (problem.y.ndim - 1))  # particle k·N + n
        noise = self._mine(noise_like(x_T, generator, (K * N,) + tuple(x_T.shape[1:])))  # the whole draw, our rows
        x = sum(prior.data_range) / 2 + sigma * noise
        x0, r, grad = self._evaluate(problem, prior, y_rep, x, sigma)
        log_g, stat = POTENTIALS[self.potential](r, None, None, self.lam)
        return _Particles(x=x, x0=x0, y_rep=y_rep, log_w=log_g.reshape(k_here, N).T.clone(), reward=r, grad=grad,
                          log_g=log_g, stat=stat)

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        K, N = self.particles, problem.y.shape[0]
        k_here = K // self._comm.size
        x, x0, y_rep = state.x, state.x0, state.y_rep
        if sigma_next == 0:  # last step: x' = x̂0, exact likelihood, divide out the potentials
            resid = (y_rep - problem.physics.A(x0)).flatten(1)
            loglik = -(resid**2).sum(1) / (2 * max(problem.sigma_y, 1e-12) ** 2)
            log_w = state.log_w + (self.lam * loglik - state.log_g).reshape(k_here, N).T
            return self._final(x0, log_w, state, generator)
        mean = ancestral_step(x, x0, sigma, sigma_next, self.eta, noise=False)
        _, up = ancestral_sigmas(sigma, sigma_next, self.eta)
        shift = (up**2) * state.grad if self.twist else None
        x_new = ancestral_step(x, x0, sigma, sigma_next, self.eta, shift=shift, noise=False)
        if up > 0:  # the whole K-particle noise, our rows (as ancestral_step would add it in one process)
            x_new = x_new + up * self._mine(noise_like(x, generator, (K * N,) + tuple(x.shape[1:])))
        # log p(x'|x) − log q(x'|x) for Gaussians of equal variance up²
        if self.twist:
            log_pq = (-((x_new - mean) ** 2) + (x_new - mean - shift) ** 2).flatten(1).sum(1) / (2 * up**2)
        else:
            log_pq = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        x0_new, r_new, grad_new = self._evaluate(problem, prior, y_rep, x_new, sigma_next)
        log_g_inc, stat = POTENTIALS[self.potential](r_new, state.reward, state.stat, self.lam)
        log_w = state.log_w + (log_pq + log_g_inc).reshape(k_here, N).T
        new = _Particles(x=x_new, x0=x0_new, y_rep=y_rep, log_w=log_w, reward=r_new, grad=grad_new,
                         log_g=state.log_g + log_g_inc, stat=stat)
        e = ess(log_w, self._comm)  # normalised over every process's particles
        if self.ess_threshold > 0 and bool((e < self.ess_threshold * K).any()):
            new = self._resample(new, e < self.ess_threshold * K, generator)
        return new, {"ess": e}

    def _ancestors(self, log_w_all: torch.Tensor, generator) -> torch.Tensor:
        """``(N, K)`` ancestor indices drawn from the normalised weights of every particle; each
        process draws (so the generators stay in step) and process 0's draw is kept."""
        return self._comm.broadcast(RESAMPLING[self.resampling](torch.softmax(log_w_all, -1), generator))

    def _resample(self, s: _Particles, which: torch.Tensor, generator) -> _Particles:
        """Resample the systems flagged in ``which`` (N,), copying paths; reset their weights."""
        K, N = self.particles, s.log_w.shape[0]
        idx = self._ancestors(self._comm.all_gather(s.log_w, 1), generator)  # (N, K)
        keep = torch.arange(K, device=idx.device)[None].expand(N, K)
        idx = torch.where(which[:, None], idx, keep)
        flat = (idx.T * N + torch.arange(N, device=idx.device)[None]).reshape(-1)  # particle k·N + n
        x, x0, reward, grad, log_g, stat = self._comm.take([s.x, s.x0, s.reward, s.grad, s.log_g, s.stat], flat)
        log_w = torch.where(which[:, None], torch.zeros_like(s.log_w), s.log_w)
        return _Particles(x=x, x0=x0, y_rep=s.y_rep, log_w=log_w, reward=reward, grad=grad, log_g=log_g, stat=stat)

    def _final(self, x0, log_w, state, generator):
        """The weighted mean and ``K`` equally weighted draws per problem from every particle
        (gathered from every process), and the last ESS."""
        K, N = self.particles, log_w.shape[0]
        log_w = self._comm.all_gather(log_w, 1)  # (N, K)
        w = torch.softmax(log_w, -1)
        xs = self._comm.all_gather(x0, 0).reshape((K, N) + tuple(x0.shape[1:]))
        mean = torch.einsum("nk,kn...->n...", w.to(xs.dtype), xs)
        idx = self._ancestors(log_w, generator)
        draws = xs[idx.T, torch.arange(N, device=idx.device)[None]]  # (K, N, ...): K equally weighted draws per problem
        # x: the draws of every particle; x0: this process's particles (as in the earlier steps)
        return (_Particles(x=draws.reshape((K * N,) + tuple(x0.shape[1:])), x0=x0, y_rep=state.y_rep, log_w=log_w,
                           mean=mean, samples=draws),
                {"ess": ess(log_w)})

    def finalize(self, state, batch):
        """``K`` equally weighted draws per problem (after a final resampling), ``(K·S, B, C, H, W)``,
        and the weighted particle mean of each problem as the point estimate."""
        shape = tuple(state.samples.shape[2:])
        draws = state.samples.reshape((-1, batch) + shape)
        return Final(draws, state.mean.reshape((-1, batch) + shape).mean(0))

