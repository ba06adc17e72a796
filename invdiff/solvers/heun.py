"""Heun's method on the probability-flow ODE (Karras et al., NeurIPS 2022, Algorithm 1).

.. math::
    d = (x - D(x, σ))/σ,\\quad \\tilde x = x + (σ' - σ) d,\\quad
    x' = x + (σ' - σ)\\,\\tfrac12\\big(d + (\\tilde x - D(\\tilde x, σ'))/σ'\\big)

with the Euler step alone when ``σ' = 0``. Deterministic (``S_churn = 0``), second order,
2 network calls per step except the last (``2N − 1`` for ``N`` steps), no VJP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Solver, State

__all__ = ["Heun", "heun_step"]


def heun_step(prior, x: torch.Tensor, sigma: float, sigma_next: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One Heun step from ``sigma`` to ``sigma_next``; returns ``(x_next, D(x, sigma))``."""
    x0 = prior.denoise(x, sigma)
    d = (x - x0) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next > 0:
        d_next = (x_next - prior.denoise(x_next, sigma_next)) / sigma_next
        x_next = x + (sigma_next - sigma) * 0.5 * (d + d_next)
    return x_next, x0


@dataclass(frozen=True)
class Heun(Solver):
    """Deterministic Heun (EDM) sampler."""

    posterior = False

    def cost(self, steps):
        return 2 * steps - 1, 0

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        with torch.no_grad():
            x, x0 = heun_step(prior, state.x, sigma, sigma_next)
        return State(x=x, x0=x0), {}
