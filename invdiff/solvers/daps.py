"""DAPS: decoupled annealing posterior sampling.

Zhang, Chu, Berner, Meng, Anandkumar, Song, "Improving Diffusion Inverse Problem Solving with
Decoupled Noise Annealing", CVPR 2025 (arXiv:2407.01521), Algorithm 1. For each annealing level
``σ_j`` (descending, ending in 0):

.. math::
    \\hat x_0 &= \\mathrm{ODE}_{σ_j \\to 0}(x_j)
        \\qquad\\text{(probability-flow ODE, ``ode_steps`` Euler steps)} \\\\
    x_0^{(k+1)} &= x_0^{(k)} - η_j \\nabla U(x_0^{(k)}) + \\sqrt{2 η_j}\\, ε_k,\\quad
        U(x_0) = \\frac{\\lVert y - A x_0\\rVert^2}{2 τ^2} + \\frac{\\lVert x_0 - \\hat x_0\\rVert^2}{2 σ_j^2},
        \\quad k = 0 … K−1,\\ x_0^{(0)} = \\hat x_0 \\\\
    x_{j+1} &= x_0^{(K)} + σ_{j+1}\\, ε,\\qquad ε \\sim N(0, I).

The Langevin chain samples ``p(x_0 | x_j, y) ∝ p(y | x_0)\\,N(x_0; \\hat x_0, σ_j^2 I)`` — the
paper's Gaussian approximation of ``p(x_0 | x_j)`` with ``r_j = σ_j`` — so the measurement is
used only through ``A`` and ``Aᵀ``: no gradient through the network (no VJP). The noise of
``x_{j+1}`` is *decoupled* from ``x_j``: large jumps between levels can correct early mistakes.

===================  ================================================================
code                 paper / official code (``zhangbingliang2019/DAPS``)
===================  ================================================================
``sigma``            σ_j, annealing levels (Karras ``poly-7`` spacing)
``ode_steps``        steps of the inner ODE solve (``diffusion_scheduler.num_steps``)
``langevin_steps``   K (``lgvd.num_steps``)
``lr``               η at the first level; falls linearly in the level index to
                     ``lr · lr_min_ratio`` (``lgvd.lr``, ``lr_min_ratio``)
``tau``              τ, the likelihood's noise scale (``lgvd.tau``); ``None`` = ``σ_y``
===================  ================================================================

**Defaults = the official DAPS-1K config, in [0, 1] units.** The official code works on
[−1, 1] images (``u = 2x − 1``): σ_max = 100, σ_min = 0.1, 200 annealing levels × 5 Euler
steps (1000 NFE), 100 Langevin steps, lr = 1e-4, τ = 0.01, lr_min_ratio = 0.01. With
``u = 2x − 1`` the noise levels and τ halve (σ_max = 50, σ_min = 0.05, τ = 0.005) and the
Langevin step size is divided by four (``lr = 2.5e-5``): ``U`` is the same function in both
units and ``∇_u = ∇_x / 2``. The official τ = 0.01 is *not* the measurement noise (its
configs use σ_y = 0.05 on [−1, 1]); it weights the data more than the Bayesian choice
``τ = σ_y``, which ``tau=None`` selects (the exactness tests use it).

Differences from the official code, stated: the learning-rate decay is written in the
position of ``σ_j`` on the Karras grid between the solver's ``sigma_max`` and ``sigma_min``,
which for the default schedule is exactly the official linear decay in the level index (it
reaches ``lr · lr_min_ratio`` at the last level instead of one level after it); a NaN does
not silently restart from zeros — the loop stops with an error suggesting a smaller ``lr``.

Stability needs ``lr · (‖A‖²/τ² + 1/σ_j²) < 2``; cost per level: ``ode_steps`` NFE and
``langevin_steps`` applications of ``A`` and ``Aᵀ`` — except where ``AᵀA`` is diagonal in a known
basis (masks, circular blur, single-coil MRI: :func:`invdiff.operators.spectral.diagonal_normal`).
There the chain is a linear Gaussian recursion, diagonal in that basis, and its ``K``-step output
is drawn in one step from its exact law (:meth:`DAPS.chain_law`): the sampler's law is unchanged,
its random numbers are not (one draw per level instead of ``K``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..operators.spectral import diagonal_normal
from ..schedules import karras
from .base import noise_like, Solver, State
from .ddim import ddim_step

__all__ = ["DAPS"]


@dataclass(frozen=True)
class DAPS(Solver):
    """DAPS with an inner ODE of ``ode_steps`` Euler steps and ``langevin_steps`` Langevin steps."""

    ode_steps: int = 5
    langevin_steps: int = 100
    lr: float = 2.5e-5
    lr_min_ratio: float = 0.01
    tau: float | None = 0.005
    sigma_max: float = 50.0
    sigma_min: float = 0.05
    rho: float = 7.0
    step_params = ("lr", "tau")
    benchmark_default = False  # ≈ 5 NFE and 100 Langevin steps per level

    def __post_init__(self):
        ints = (self.ode_steps, self.langevin_steps)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in ints):
            raise ValueError(f"ode_steps and langevin_steps must be integers >= 1, got {ints}")
        if not (self.lr > 0 and 0 < self.lr_min_ratio <= 1):
            raise ValueError(f"need lr > 0 and 0 < lr_min_ratio <= 1, got {self.lr}, {self.lr_min_ratio}")
        if self.tau is not None and not self.tau > 0:
            raise ValueError(f"tau must be > 0 (or None for sigma_y), got {self.tau}")
        if not (0 < self.sigma_min <= self.sigma_max and self.rho > 0):
            raise ValueError(f"need 0 < sigma_min <= sigma_max and rho > 0, got {self.sigma_min}, "
                             f"{self.sigma_max}, {self.rho}")

    def _bounds(self, prior) -> tuple[float, float]:
        lo = max(self.sigma_min, prior.sigma_min)
        return lo, max(lo, min(self.sigma_max, prior.sigma_max))

    def default_sigmas(self, prior, steps):
        lo, hi = self._bounds(prior)
        return karras(steps, lo, hi, self.rho)

    def cost(self, steps):
        return steps * self.ode_steps, 0

    def step_size(self, sigma: float, prior) -> float:
        """Langevin step η_j: ``lr`` at ``sigma_max`` falling linearly (in the Karras grid position) to
        ``lr · lr_min_ratio`` at ``sigma_min``."""
        lo, hi = self._bounds(prior)
        a, b = hi ** (1 / self.rho), lo ** (1 / self.rho)
        ratio = 0.0 if a == b else min(max((a - sigma ** (1 / self.rho)) / (a - b), 0.0), 1.0)
        return self.lr * (1 - ratio * (1 - self.lr_min_ratio))

    def ode_denoise(self, prior, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``x̂0`` by ``ode_steps`` Euler steps of the probability-flow ODE from ``sigma`` to 0."""
        levels = karras(self.ode_steps, min(prior.sigma_min, sigma), sigma, self.rho).tolist()
        for s, s_next in zip(levels[:-1], levels[1:]):
            x, x0 = ddim_step(prior, x, s, s_next, 0.0)
        return x

    def langevin(self, problem, x0_hat: torch.Tensor, sigma: float, lr: float, generator) -> torch.Tensor:
        """``langevin_steps`` unadjusted Langevin steps on ``U`` (see the module docstring), from ``x̂0``.

        Without a measurement (``m = 0``) only the prior term remains: the chain targets
        ``N(x̂0, σ_j² I)``.
        """
        A, y = problem.physics, problem.y
        observed = y.flatten(1).shape[1] > 0
        tau = problem.sigma_y if self.tau is None else self.tau
        if observed and not tau > 0:
            raise ValueError("DAPS with tau=None uses sigma_y as the likelihood scale, which is 0 for this "
                             "problem; give tau > 0")
        diag = diagonal_normal(A, x0_hat) if observed else None
        if diag is not None:
            x = self._langevin_closed_form(A, y, x0_hat, sigma, tau, lr, diag, generator)
            if x is not None:
                return x
        x = x0_hat
        for _ in range(self.langevin_steps):
            grad = (x - x0_hat) / sigma**2
            if observed:
                grad = grad + A.A_adjoint(A.A(x) - y) / tau**2
            x = x - lr * grad + (2 * lr) ** 0.5 * noise_like(x, generator)
        return x

    def _langevin_closed_form(self, A, y, x0_hat, sigma, tau, lr, diag, generator):
        r"""A draw from the law of the ``K``-step Langevin chain where ``AᵀA = B diag(w) Bᴴ`` in a known
        orthonormal basis ``B`` (:func:`~invdiff.operators.spectral.diagonal_normal`); ``None`` when
        the chain is unstable there (``|1 − η m| ≥ 1``), so that the loop reports the divergence.

        The chain ``x ← (I − η M) x + η b + √(2η) ε`` with ``M = I/σ² + AᵀA/τ²`` and
        ``b = x̂0/σ² + Aᵀy/τ²`` is linear and Gaussian, with ``M`` diagonal in ``B``: per
        coefficient, with ``m = 1/σ² + w/τ²`` and ``d = 1 − η m``, after ``K`` steps from ``x̂0``

        .. math::
            x_K \sim N\big(d^K \hat x_0 + (1 − d^K)\, b / m,\; 2η\,(1 − d^{2K}) / (1 − d^2)\big).

        One Gaussian draw then replaces ``K`` steps with two operator applications each: the law
        of the output is the loop's exactly (its random numbers are not)."""
        law = self.chain_law(A, y, x0_hat, sigma, tau, lr, diag)
        if law is None:
            return None
        mean, std = law
        to, back, _ = diag
        noise = back(std * to(noise_like(x0_hat, generator).double()))
        return (mean + noise).to(x0_hat.dtype)

    def chain_law(self, A, y, x0_hat, sigma, tau, lr, diag):
        """``(mean, std)`` of the ``K``-step Langevin chain's output (see :meth:`_langevin_closed_form`):
        the mean as an image (float64), the standard deviations per coefficient of the basis of
        ``diag``; ``None`` where the chain is unstable."""
        to, back, w = diag
        m = 1 / sigma**2 + w.double() / tau**2
        a = lr * m                                   # d = 1 − a
        if bool(((a <= 0) | (a >= 2)).any()):
            return None
        K = self.langevin_steps
        dK = (1 - a) ** K
        q = a * (2 - a)                              # 1 − d², computed without cancellation
        var = 2 * lr * -torch.expm1(K * torch.log1p(-q)) / q
        b = x0_hat / sigma**2 + A.A_adjoint(y) / tau**2
        mean = back(dK * to(x0_hat.double()) + (1 - dK) / m * to(b.double()))
        return mean, var.sqrt()

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        with torch.no_grad():
            x0_hat = self.ode_denoise(prior, state.x, sigma)
            x0 = self.langevin(problem, x0_hat, sigma, self.step_size(sigma, prior), generator)
            x = x0 + sigma_next * noise_like(x0, generator) if sigma_next > 0 else x0
        return State(x=x, x0=x0), {}
