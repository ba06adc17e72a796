"""ΠGDM: pseudoinverse-guided diffusion models.

Song, Vahdat, Mardani, Kautz, "Pseudoinverse-Guided Diffusion Models for Inverse Problems"
(ICLR 2023), Algorithm 1. The likelihood of ``x_σ`` is approximated by
``p(y | x_σ) ≈ N(A x̂0, r_σ² A Aᵀ + σ_y² I)``, whose score is a vector–Jacobian product:

.. math::
    g = \\nabla_x \\big\\langle \\mathrm{sg}[v],\\ \\hat x_0(x) \\big\\rangle,\\qquad
    v = Aᵀ (r_σ^2 A Aᵀ + σ_y^2 I)^{-1} (y - A \\hat x_0),

computed with the SVD ``A = U diag(s) Vᵀ``: ``v = V diag(s/(r² s² + σ_y²)) Uᵀ (y − A x̂0)``.
Replacing ``(x̂0, ε̂)`` by their guided versions ``(x̂0 + σ² g, ε̂ − σ g)`` in a DDIM(η) step
(:mod:`invdiff.solvers.ddim`) gives

.. math:: x' = \\hat x_0 + σ_{down}\\,\\hat ε + σ_{up} z + w\\,σ(σ - σ_{down})\\,g ,

which is the official implementation's update (``algos/pgdm.py`` in NVlabs/RED-diff, guidance
coefficient ``(√ᾱ_s − c₂√ᾱ_t/√(1−ᾱ_t))·√ᾱ_t``) rewritten for VE iterates. ``r_σ²`` is
``σ_net²/(1 + σ_net²)`` on [−1, 1] images (unit data variance), i.e. ``σ²/(1 + 4σ²)`` here —
exact for an isotropic Gaussian prior of variance 1/4. One network call and one VJP per step;
needs an operator with an SVD (deepinv ``DecomposablePhysics``: inpainting, circular blur, complex-input
Cartesian MRI).

==========  ===========================================
code        paper
==========  ===========================================
``r2``      :math:`r_t^2`
``v``       :math:`Aᵀ(r_t^2 AAᵀ + σ_y^2 I)^{-1}(y - A\\hat x_t)`
``weight``  guidance weight (``grad_term_weight``, 1.0)
``eta``     DDIM η (1.0 in the paper's noisy experiments)
==========  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..operators.spectral import real_part, singular_values
from .base import ancestral_sigmas, ancestral_step, Solver, State

__all__ = ["PiGDM"]


@dataclass(frozen=True)
class PiGDM(Solver):
    """ΠGDM with DDIM(``eta``) steps and guidance ``weight``."""

    weight: float = 1.0
    eta: float = 1.0

    needs_svd = True
    uses_vjp = True
    step_params = ("weight",)
    schedule = "ddpm"

    def __post_init__(self):
        if not (self.weight >= 0 and 0 <= self.eta <= 1):
            raise ValueError(f"need weight >= 0 and 0 <= eta <= 1, got {self.weight}, {self.eta}")

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        A = problem.physics
        r2 = sigma**2 / (1 + 4 * sigma**2)
        x = state.x.detach().requires_grad_(True)
        with torch.enable_grad():
            x0 = prior.denoise(x, sigma)
            with torch.no_grad():
                s = singular_values(A)
                spectral = A.U_adjoint(problem.y - A.A(x0))
                s_adj = s.conj() if s.is_complex() else s  # Aᵀ = V diag(s̄) Uᴴ
                v = real_part(A.V(s_adj * spectral / (r2 * s.abs() ** 2 + max(problem.sigma_y, 1e-6) ** 2)))
            g = torch.autograd.grad((v.detach() * x0).sum(), x)[0]
        with torch.no_grad():
            x0 = x0.detach()
            down, _ = ancestral_sigmas(sigma, sigma_next, self.eta)
            x_next = ancestral_step(state.x, x0, sigma, sigma_next, self.eta, generator,
                                    shift=self.weight * sigma * (sigma - down) * g)
        return State(x=x_next, x0=x0), {}
