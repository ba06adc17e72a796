"""DPM-Solver++(2M): multistep second-order solver of the probability-flow ODE.

Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models" (2022), Algorithm 2, in the VE/σ form of k-diffusion. With
``λ = −log σ``, ``h = λ' − λ`` and ``r = h_{prev}/h``:

.. math::
    \\hat x_0 = D(x, σ),\\quad
    \\bar D = (1 + \\tfrac{1}{2r})\\hat x_0 - \\tfrac{1}{2r}\\hat x_0^{prev}\\ (\\text{first step: } \\bar D = \\hat x_0),

    x' = \\tfrac{σ'}{σ} x - (e^{-h} - 1)\\,\\bar D ,

and ``x' = x̂0`` when ``σ' = 0``. One network call per step, no VJP. Its multistep update
assumes no guidance term: use it for unconditional sampling and inner ODE solves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Solver, State

__all__ = ["DPMSolverPP2M"]


@dataclass
class _MultistepState(State):
    prev_x0: torch.Tensor | None = None
    prev_h: float | None = None


@dataclass(frozen=True)
class DPMSolverPP2M(Solver):
    """DPM-Solver++(2M) sampler."""

    posterior = False

    def init(self, problem, prior, x_T, sigma, generator):
        return _MultistepState(x=x_T)

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        with torch.no_grad():
            x0 = prior.denoise(state.x, sigma)
        if sigma_next == 0:
            return _MultistepState(x=x0, x0=x0), {}
        h = math.log(sigma) - math.log(sigma_next)
        if state.prev_x0 is None:
            d = x0
        else:
            r = state.prev_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state.prev_x0
        x = (sigma_next / sigma) * state.x - math.expm1(-h) * d
        return _MultistepState(x=x, x0=x0, prev_x0=x0, prev_h=h), {}
