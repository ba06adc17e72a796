"""Resampling schemes as pure functions ``f(weights, generator) -> indices`` (blackjax style).

``weights`` is ``(N, K)``: ``N`` independent particle systems of ``K`` particles, each row
normalised to sum to 1. The result is ``(N, K)`` ancestor indices in ``[0, K)``; every scheme
is unbiased (each particle is copied ``K·w_k`` times in expectation). ``ess`` and
``normalise_log_weights`` work in log space with max-subtraction.
"""

from __future__ import annotations

import torch

__all__ = ["systematic", "stratified", "multinomial", "ess", "normalise_log_weights", "RESAMPLING"]


def normalise_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """Row-normalised weights ``exp(log_w - logsumexp(log_w))``, ``(N, K)``."""
    return torch.softmax(log_w, dim=-1)


def ess(log_w: torch.Tensor) -> torch.Tensor:
    """Effective sample size ``1 / Σ_k w_k²`` of each row, ``(N,)``."""
    w = normalise_log_weights(log_w)
    return 1.0 / (w**2).sum(-1)


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    cdf = torch.cumsum(weights, dim=-1)
    cdf[..., -1] = 1.0 + 1e-12  # guard against rounding below the last uniform
    return torch.searchsorted(cdf.contiguous(), u.contiguous()).clamp(max=weights.shape[-1] - 1)


def systematic(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Systematic resampling: one uniform per row, ``u_k = (k + U) / K``."""
    n, k = weights.shape
    u0 = torch.rand((n, 1), generator=generator, dtype=weights.dtype)
    u = (torch.arange(k, dtype=weights.dtype)[None] + u0) / k
    return _inverse_cdf(weights, u)


def stratified(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stratified resampling: one uniform per stratum, ``u_k = (k + U_k) / K``."""
    n, k = weights.shape
    u = (torch.arange(k, dtype=weights.dtype)[None] + torch.rand((n, k), generator=generator,
                                                                dtype=weights.dtype)) / k
    return _inverse_cdf(weights, u)


def multinomial(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multinomial resampling: ``K`` independent draws per row."""
    return torch.multinomial(weights, weights.shape[-1], replacement=True, generator=generator)


RESAMPLING = {"systematic": systematic, "stratified": stratified, "multinomial": multinomial}
