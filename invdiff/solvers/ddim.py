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

from dataclasses import dataclass

import torch

from .base import Solver, State
from .kernel import ancestral_step

__all__ = ["DDIM", "Euler", "ddim_step"]


def ddim_step(prior, x: torch.Tensor, sigma: float, sigma_next: float, eta: float = 0.0,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM(η) step from ``sigma`` to ``sigma_next`` (no gradient); returns ``(x', x̂0)``."""
    with torch.no_grad():
        x0 = prior.denoise(x, sigma)
        return ancestral_step(x, x0, sigma, sigma_next, eta, generator), x0


@dataclass(frozen=True)
class DDIM(Solver):
    """DDIM(η) sampler: ``eta = 0`` deterministic, ``eta = 1`` DDPM's ancestral sampler."""

    eta: float = 0.0
    posterior = False

    def __post_init__(self):
        if not (0 <= self.eta <= 1):
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        x, x0 = ddim_step(prior, state.x, sigma, sigma_next, self.eta, generator)
        return State(x=x, x0=x0), {}


@dataclass(frozen=True)
class Euler(DDIM):
    """Euler on the VE probability-flow ODE ``dx/dσ = (x − D(x, σ))/σ`` (exactly DDIM with η = 0)."""

    eta: float = 0.0

    def __post_init__(self):
        if self.eta != 0:
            raise ValueError(f"Euler is deterministic (eta = 0); use DDIM(eta={self.eta}) for a stochastic step")
