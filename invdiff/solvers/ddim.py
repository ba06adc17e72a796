"""DDIM(η) in the variance-exploding form — and Euler on the probability-flow ODE (η = 0).

Song, Meng, Ermon, "Denoising Diffusion Implicit Models" (ICLR 2021). Written for
``x_σ = x0 + σ ε`` (divide the VP iterate by ``sqrt(ᾱ)``; ``σ² = (1 − ᾱ)/ᾱ``), DDIM's update
becomes (Karras et al. 2022, Sec. 3; k-diffusion's ancestral step)

.. math::
    \\hat x_0 = D(x, σ),\\quad \\hat ε = (x - \\hat x_0)/σ,\\quad
    σ_{up} = η\\,σ'\\sqrt{(σ^2 - σ'^2)/σ^2},\\quad σ_{down} = \\sqrt{σ'^2 - σ_{up}^2},

    x' = \\hat x_0 + σ_{down}\\,\\hat ε + σ_{up}\\,z,\\qquad z \\sim N(0, I).

``η = 0`` is deterministic and identical to an Euler step of ``dx/dσ = (x − D(x, σ))/σ``;
``η = 1`` is DDPM's ancestral sampler. One network call per step, no VJP.

=========  ====================================
code       paper
=========  ====================================
``x``      :math:`x_t / \\sqrt{\\bar α_t}`
``sigma``  :math:`\\sqrt{(1-\\bar α_t)/\\bar α_t}`
``eta``    :math:`η`
``x0``     :math:`\\hat x_0 = f_θ^{(t)}(x_t)`
=========  ====================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import noise_like, Solver, State

__all__ = ["DDIM", "ancestral_sigmas", "ddim_step"]


def ancestral_sigmas(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """``(σ_down, σ_up)`` of a DDIM(η) step from ``sigma`` to ``sigma_next``."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * sigma_next * math.sqrt(max(sigma**2 - sigma_next**2, 0.0)) / sigma)
    return math.sqrt(sigma_next**2 - up**2), up


def ddim_step(prior, x: torch.Tensor, sigma: float, sigma_next: float, eta: float = 0.0,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM(η) step from ``sigma`` to ``sigma_next`` (no gradient); returns ``(x', x̂0)``."""
    with torch.no_grad():
        x0 = prior.denoise(x, sigma)
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    x_next = x0 + down * (x - x0) / sigma
    if up > 0:
        x_next = x_next + up * noise_like(x, generator)
    return x_next, x0


@dataclass(frozen=True)
class DDIM(Solver):
    """DDIM(η) / Euler sampler. ``eta = 0``: deterministic (Euler); ``eta = 1``: DDPM."""

    eta: float = 0.0

    def __post_init__(self):
        if not (0 <= self.eta <= 1):
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        x, x0 = ddim_step(prior, state.x, sigma, sigma_next, self.eta, generator)
        return State(x=x, x0=x0), {}
