"""DDRM: denoising diffusion restoration models.

Kawar, Elad, Ermon, Song, "Denoising Diffusion Restoration Models" (NeurIPS 2022), eqs. (7)–(8),
in the variance-exploding form the paper uses. With the SVD ``A = U diag(s) Vᴴ``, spectral
coordinates ``x̄ = Vᴴ x``, ``ȳ_i = (Uᴴ y)_i / s_i`` and their noise ``σ_i = σ_y / |s_i|``, a step
from ``σ`` to ``σ'`` draws each coordinate from

.. math::
    s_i = 0:&\\quad \\bar x'_i = \\hat{\\bar x}_{0,i} + \\sqrt{1-η^2}\\,σ'\\,\\frac{\\bar x_i - \\hat{\\bar x}_{0,i}}{σ} + ησ' z_i \\\\
    σ' < σ_i:&\\quad \\bar x'_i = \\hat{\\bar x}_{0,i} + \\sqrt{1-η^2}\\,σ'\\,\\frac{\\bar y_i - \\hat{\\bar x}_{0,i}}{σ_i} + ησ' z_i \\\\
    σ' \\ge σ_i:&\\quad \\bar x'_i = (1-η_b)\\,\\hat{\\bar x}_{0,i} + η_b \\bar y_i + \\sqrt{σ'^2 - η_b^2 σ_i^2}\\, z_i

with ``x̂0 = D(x, σ)``. The start is the usual VE ``x_T`` (the paper draws observed coordinates
around ``ȳ`` already; here the first step does, through the third case). Defaults: ``η = 0.85``, ``η_b = 1``, 20 steps (official).
One network call per step, no VJP; needs an SVD (deepinv ``DecomposablePhysics``).

The noise ``z̄ = Vᴴ z`` is drawn in pixel space (``z ~ N(0, I)`` real) and mapped, so for
FFT-diagonalised operators it keeps the Hermitian symmetry of a real image; the per-coordinate
standard deviations depend on ``|s_i|`` only, which is symmetric for real operators.

==========  =====================================
code        paper
==========  =====================================
``eta``     η
``eta_b``   η_b
``sbar``    spectral noise of y, σ_y / s_i
==========  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..operators.spectral import real_part, singular_values
from .base import noise_like, Solver, State


@dataclass
class _SpectralState(State):
    """The iterate plus the constant spectral data of the problem (computed once in ``init``)."""

    observed: torch.Tensor | None = None   # s_i ≠ 0
    ybar: torch.Tensor | None = None       # (Uᴴ y)_i / s_i on observed coordinates
    sbar: torch.Tensor | None = None       # σ_y / |s_i| (inf where unobserved)

__all__ = ["DDRM"]


@dataclass(frozen=True)
class DDRM(Solver):
    """DDRM with ``eta`` (unobserved/low-noise coordinates) and ``eta_b`` (observed, noisy)."""

    eta: float = 0.85
    eta_b: float = 1.0

    needs_svd = True
    step_params = ("eta",)

    def __post_init__(self):
        if not (0 <= self.eta <= 1 and 0 <= self.eta_b <= 1):
            raise ValueError(f"eta and eta_b must be in [0, 1], got {self.eta}, {self.eta_b}")


    def _noise(self, A, like, generator):
        z = noise_like(like, generator)
        return A.V_adjoint(z)

    def init(self, problem, prior, x_T, sigma, generator):
        A = problem.physics
        s = singular_values(A)
        observed = s.abs() > 1e-12
        with torch.no_grad():
            uy = A.U_adjoint(problem.y)
        ybar = torch.where(observed, uy / torch.where(observed, s, torch.ones_like(s)), torch.zeros_like(uy))
        sbar = torch.where(observed, problem.sigma_y / s.abs().clamp_min(1e-12),
                           torch.full_like(s.abs(), float("inf")))
        return _SpectralState(x=x_T, observed=observed, ybar=ybar, sbar=sbar)

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        A, observed, ybar, sbar = problem.physics, state.observed, state.ybar, state.sbar
        with torch.no_grad():
            x0 = prior.denoise(state.x, sigma)
            xb, x0b = A.V_adjoint(state.x), A.V_adjoint(x0)
            z = self._noise(A, state.x, generator)
            c = (1 - self.eta**2) ** 0.5 * sigma_next
            free = x0b + c * (xb - x0b) / sigma + self.eta * sigma_next * z
            below = x0b + c * (ybar - x0b) / torch.where(observed, sbar, torch.ones_like(sbar)).clamp_min(1e-12) \
                + self.eta * sigma_next * z
            std_above = (sigma_next**2 - (self.eta_b * sbar) ** 2).clamp_min(0).sqrt()
            above = (1 - self.eta_b) * x0b + self.eta_b * ybar + torch.where(observed, std_above, 0 * std_above) * z
            new = torch.where(~observed, free, torch.where(sigma_next < sbar, below, above))
            x = real_part(A.V(new))
        return _SpectralState(x=x, x0=x0, observed=observed, ybar=ybar, sbar=sbar), {}
