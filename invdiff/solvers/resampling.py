"""Resampling schemes as pure functions ``f(weights, generator) -> indices`` (blackjax style),
and the particle communicator that lets one particle system live on several processes.

``weights`` is ``(N, K)``: ``N`` independent particle systems of ``K`` particles, each row
normalised to sum to 1. The result is ``(N, K)`` ancestor indices in ``[0, K)``; every scheme
is unbiased (each particle is copied ``K·w_k`` times in expectation). The uniforms are drawn from
``generator`` on its own device and moved to that of ``weights`` (:mod:`invdiff.devices`), so a seed
gives the same uniforms on every device. ``ess`` and ``normalise_log_weights`` work in log space
with max-subtraction.

**Particle communicators.** A particle solver (SMC) holding its particles in one process uses
:class:`LocalParticles`; split over ``size`` processes, each holds ``K/size`` particles of every
system and a communicator with the same methods does the exchanges
(:class:`invdiff.distributed.particles.RankParticles` over ``torch.distributed``). Particles are
stored particle-major (row ``k·N + n`` is particle ``k`` of system ``n``), and process ``r``
holds particles ``k ∈ [r·K/size, (r+1)·K/size)``: the contiguous rows
``[r·L, (r+1)·L)``, ``L = N·K/size``, of the whole system. A communicator has

==================================  ============================================================
``rank``, ``size``                  this process's index and the number of processes
``logsumexp(t)``                    ``(N, L) → (N,)``: ``log Σ exp`` over the last (particle) axis
                                    of every process's ``t``
``all_gather(t, dim)``              every process's ``t`` concatenated along ``dim`` in rank order
``broadcast(t)``                    process 0's ``t`` (same shape everywhere), on every process
``take(tensors, index)``            for each tensor (rows ``[r·L, (r+1)·L)`` of a whole one; ``None``
                                    passes through) this process's rows of ``whole[index]``;
                                    ``index`` ``(size·L,)`` is the same on every process
==================================  ============================================================

None of them modifies its arguments.
"""

from __future__ import annotations

import torch

from ..devices import multinomial as draw_multinomial, rand

__all__ = ["systematic", "stratified", "multinomial", "ess", "normalise_log_weights", "RESAMPLING",
           "LocalParticles", "LOCAL"]


class LocalParticles:
    """The particle communicator of a particle system held whole in one process (the default)."""

    rank = 0
    size = 1

    def logsumexp(self, t: torch.Tensor) -> torch.Tensor:
        """``log Σ_k exp(t[..., k])``, ``(N, K) → (N,)``."""
        return torch.logsumexp(t, dim=-1)

    def all_gather(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """``t`` itself (the only process's part is the whole)."""
        return t

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` itself."""
        return t

    def take(self, tensors, index: torch.Tensor) -> list:
        """``[t[index] for t in tensors]`` (``None`` stays ``None``)."""
        return [None if t is None else t[index] for t in tensors]


#: The one-process communicator.
LOCAL = LocalParticles()


def normalise_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """Row-normalised weights ``exp(log_w - logsumexp(log_w))``, ``(N, K)``."""
    return torch.softmax(log_w, dim=-1)


def ess(log_w: torch.Tensor, comm: LocalParticles | None = None) -> torch.Tensor:
    """Effective sample size ``1 / Σ_k w_k²`` of each row, ``(N,)``.

    Computed in log space as ``exp(−LSE(2 (log_w − LSE(log_w))))`` with the communicator's
    log-sum-exp ``LSE`` over the particles of every process (default: this process's ``log_w``,
    the whole system); ``comm`` splits the particles of each row over processes.
    """
    lse = (LOCAL if comm is None else comm).logsumexp
    return torch.exp(-lse(2 * (log_w - lse(log_w)[..., None])))


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    cdf = torch.cumsum(weights, dim=-1)
    cdf[..., -1] = 1.0 + 1e-12  # guard against rounding below the last uniform
    return torch.searchsorted(cdf.contiguous(), u.contiguous()).clamp(max=weights.shape[-1] - 1)


def _strata(weights: torch.Tensor) -> torch.Tensor:
    """``(1, K)`` stratum indices ``0 … K−1`` in the dtype and on the device of ``weights``."""
    return torch.arange(weights.shape[-1], dtype=weights.dtype, device=weights.device)[None]


def systematic(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Systematic resampling: one uniform per row, ``u_k = (k + U) / K``."""
    n, k = weights.shape
    u0 = rand((n, 1), generator=generator, dtype=weights.dtype, device=weights.device)
    return _inverse_cdf(weights, (_strata(weights) + u0) / k)


def stratified(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stratified resampling: one uniform per stratum, ``u_k = (k + U_k) / K``."""
    n, k = weights.shape
    u = rand((n, k), generator=generator, dtype=weights.dtype, device=weights.device)
    return _inverse_cdf(weights, (_strata(weights) + u) / k)


def multinomial(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multinomial resampling: ``K`` independent draws per row."""
    return draw_multinomial(weights, weights.shape[-1], replacement=True, generator=generator)


RESAMPLING = {"systematic": systematic, "stratified": stratified, "multinomial": multinomial}
