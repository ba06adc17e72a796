"""Diffusion Posterior Sampling (DPS).

Chung, Kim, Mccann, Klasky, Ye, "Diffusion Posterior Sampling for General Noisy Inverse
Problems" (ICLR 2023), Algorithm 1, as in the official code (``condition_methods.py``,
``PosteriorSampling``): each step denoises with gradient tracking, takes an unconditional
ancestral step, and subtracts the gradient of the *non-squared* residual norm,

.. math::
    \\hat x_0 = D(x, σ),\\qquad
    x' = \\hat x_0 + σ_{down}\\,\\frac{x - \\hat x_0}{σ} + σ_{up} z
    \\quad\\text{(DDIM(η) step, η = 1: ancestral)},

    x' \\leftarrow x' - ζ_{σ,σ'}\\,\\nabla_x \\lVert y - A \\hat x_0(x) \\rVert_2 .

Units. The official code works on VP iterates ``x_t = sqrt(ᾱ_t) u`` of [−1, 1] images
``u = 2x − 1``, with ``y`` measured on [−1, 1] images, and updates
``x_{t−1} ← x'_{t−1} − ζ ∇_{x_t} ‖y − A(x̂0)‖``. Rewriting that update for invdiff's VE
iterate ``x`` in [0, 1] units (``σ_net = 2σ``, ``ᾱ = 1/(1 + 4σ²)``) gives exactly

.. math:: ζ_{σ,σ'} = \\frac{ζ}{2}\\sqrt{(1 + 4σ^2)(1 + 4σ'^2)},

so the published step sizes ``ζ`` (``scale`` in the configs) apply unchanged. One network
call and one VJP per step.

=====================  =========================================================
code                   paper / official code
=====================  =========================================================
``zeta``               :math:`ζ` (``conditioning.params.scale``)
``eta``                1 for DDPM ancestral sampling (official), 0 for DDIM
``x0``                 :math:`\\hat x_0(x_t)` (Tweedie)
``norm``               :math:`\\lVert y - A(\\hat x_0)\\rVert` (per problem in the batch)
=====================  =========================================================

Presets (``DPS.preset(operator)``, official configs): super-resolution and Gaussian/motion deblurring ζ = 0.3,
inpainting ζ = 0.5. Schedule: the DDPM linear-β schedule of the paper (1000 steps by
default there), truncated to the prior's ``sigma_max``; invdiff's default is ``steps`` of
it evenly spaced. Differences from the official code: the ancestral variance is DDPM's
posterior variance β̃ (η = 1) rather than the network's learned variance (our priors do
not learn one), and measurement noise ``sigma_y`` is in [0, 1] units (the paper's 0.05 on
[−1, 1] images is 0.025 here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import ancestral_step, Solver, State

__all__ = ["DPS"]


@dataclass(frozen=True)
class DPS(Solver):
    """DPS with step size ``zeta`` (official units) and DDIM(``eta``) base steps."""

    zeta: float = 1.0
    eta: float = 1.0

    uses_vjp = True
    step_params = ("zeta",)
    schedule = "ddpm"
    grid = {"zeta": [1.0, 3.0, 10.0, 30.0, 100.0]}
    presets = {"super_resolution": {"zeta": 0.3}, "gaussian_blur": {"zeta": 0.3}, "motion_blur": {"zeta": 0.3},
               "random_inpainting": {"zeta": 0.5}, "box_inpainting": {"zeta": 0.5}}

    def __post_init__(self):
        if not (self.zeta >= 0):
            raise ValueError(f"zeta must be >= 0, got {self.zeta}")
        if not (0 <= self.eta <= 1):
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        guided = problem.y.flatten(1).shape[1] > 0  # no measurement: plain ancestral sampling
        x = state.x.detach().requires_grad_(guided)
        with torch.set_grad_enabled(guided):
            x0 = prior.denoise(x, sigma)
            resid = (problem.y - problem.physics.A(x0)).flatten(1)
            norm = resid.norm(dim=1)
            # ∇‖r‖ = −Aᵀ... r/‖r‖ is undefined at r = 0: no guidance from an exactly fitted problem
            grad = torch.autograd.grad(norm.sum(), x)[0] if guided else torch.zeros_like(x)
            grad = torch.where((norm > 0).reshape(-1, *[1] * (x.ndim - 1)), grad, torch.zeros_like(grad))
        with torch.no_grad():
            x0 = x0.detach()
            x_next = ancestral_step(state.x, x0, sigma, sigma_next, self.eta, generator)
            scale = 0.5 * self.zeta * ((1 + 4 * sigma**2) * (1 + 4 * sigma_next**2)) ** 0.5
            x_next = x_next - scale * grad
        return State(x=x_next, x0=x0), {"loss": norm.detach()}
