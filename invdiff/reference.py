"""Reference problems with exact posteriors: Gaussian and Gaussian-mixture priors, linear operators.

With ``y = A x + n``, ``n ~ N(0, σ_y² I)``, a Gaussian prior ``N(μ, Σ)`` has the Gaussian
posterior ``N(μ + Σ Aᵀ (A Σ Aᵀ + σ_y² I)⁻¹ (y − A μ), Σ − Σ Aᵀ (A Σ Aᵀ + σ_y² I)⁻¹ A Σ)``,
and a mixture of Gaussians has a mixture posterior whose weights are reweighted by each
component's evidence ``N(y; A μ_k, A Σ_k Aᵀ + σ_y² I)``. Both priors also have exact
denoisers at every noise level, so a solver run on these problems can be compared with the
exact answer: the tests and ``benchmarks/exact_posterior.py`` are built on these functions.

Each builder returns ``(prior, problem, posterior)``; everything is seeded and in float64.
"""

from __future__ import annotations

import torch

from .operators import dense_operator
from .priors import GaussianMixturePrior, GaussianPrior
from .problem import Problem

__all__ = ["gaussian_dense", "gaussian_image", "mixture_dense"]

D64 = torch.float64


def gaussian_dense(d: int = 16, m: int = 4, sigma_y: float = 0.05, seed: int = 0, batch: int = 1):
    """Gaussian prior on vectors ``(1, 1, d)`` (mean 0.5, random covariance with a 0.01 floor)
    and a random ``m × d`` Gaussian matrix with ``N(0, 1/d)`` entries; ``batch`` independent
    signals are measured (one posterior each)."""
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(d, d, generator=g, dtype=D64) * 0.05 * (16 / d) ** 0.5
    prior = GaussianPrior(torch.full((1, 1, d), 0.5, dtype=D64), L @ L.T + 0.01 * torch.eye(d, dtype=D64))
    M = torch.randn(m, d, generator=g, dtype=D64) / d**0.5
    x = prior.sample(batch, generator=g)
    pb = Problem.simulate(x, dense_operator((1, 1, d), M), sigma_y, generator=g)
    return prior, pb, prior.posterior(M, pb.y, sigma_y)


def gaussian_image(physics, size: int = 8, sigma_y: float = 0.02, seed: int = 0):
    """Gaussian prior on ``size × size`` images (mean 0.5, separable squared-exponential covariance
    of length 2 px and variance 0.04, plus 1e-4 I) measured by ``physics`` (float64)."""
    idx = torch.arange(size, dtype=D64)
    k = torch.exp(-(idx[:, None] - idx[None, :]) ** 2 / (2 * 2.0**2))
    cov = 0.04 * torch.kron(k, k) + 1e-4 * torch.eye(size * size, dtype=D64)
    prior = GaussianPrior(torch.full((1, size, size), 0.5, dtype=D64), cov)
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(1, generator=g)
    physics = physics.double()
    pb = Problem.simulate(x, physics, sigma_y, generator=g)
    return prior, pb, prior.posterior(physics, pb.y, sigma_y)


def mixture_dense(d: int = 8, components: int = 20, m: int = 2, sigma_y: float = 0.05, std: float = 0.03,
                  seed: int = 0):
    """Mixture of ``components`` isotropic Gaussians (std ``std``, means uniform in [0.2, 0.8]^d,
    random weights) on vectors ``(1, 1, d)``, measured by a random ``m × d`` matrix. With few
    measurements the posterior keeps several well-separated modes (mode coverage matters)."""
    g = torch.Generator().manual_seed(seed)
    means = 0.2 + 0.6 * torch.rand(components, 1, 1, d, generator=g, dtype=D64)
    weights = torch.rand(components, generator=g, dtype=D64) + 0.5
    prior = GaussianMixturePrior(weights, means, std**2)
    M = torch.randn(m, d, generator=g, dtype=D64) / d**0.5
    x = prior.sample(1, generator=g)
    pb = Problem.simulate(x, dense_operator((1, 1, d), M), sigma_y, generator=g)
    return prior, pb, prior.posterior(M, pb.y, sigma_y)
