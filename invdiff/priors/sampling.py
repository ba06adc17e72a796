"""Unconditional sampling from a :class:`Prior` by the probability-flow ODE (Heun, Karras σ).

Karras et al. (NeurIPS 2022), Algorithm 1 (deterministic sampler, S_churn = 0): with
``d(x, σ) = (x − D(x, σ)) / σ`` the ODE ``dx/dσ = d(x, σ)`` is integrated from ``σ_0 = σ_max``
to 0 by Heun's method (Euler on the last step, where ``σ_{i+1} = 0``). ``2N − 1`` network calls
for ``N`` steps.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..schedules import karras

__all__ = ["heun_step", "sample_heun"]


def heun_step(prior, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Heun step of the probability-flow ODE from ``sigma`` to ``sigma_next`` (pure function)."""
    d = (x - prior.denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next > 0:
        d_next = (x_next - prior.denoise(x_next, sigma_next)) / sigma_next
        x_next = x + (sigma_next - sigma) * 0.5 * (d + d_next)
    return x_next


@torch.no_grad()
def sample_heun(prior, n: int, shape, *, steps: int = 18, sigmas: torch.Tensor | None = None,
                generator: torch.Generator | None = None, batch: int = 16, progress: bool = True) -> torch.Tensor:
    """``n`` samples ``(n, *shape)`` in [0, 1] units (not clipped).

    ``sigmas`` defaults to :func:`invdiff.schedules.karras` over the prior's sigma range.
    Images are drawn ``batch`` at a time; ``x_T = 0.5 + σ_max ε`` (centred on mid-grey: the
    prior's mean is unknown, and at ``σ_max`` the offset is negligible).
    """
    if sigmas is None:
        sigmas = karras(steps, prior.sigma_min, prior.sigma_max)
    sigmas = [float(s) for s in sigmas]
    out = []
    bar = tqdm(total=n * (len(sigmas) - 1), disable=not progress, desc="sampling")
    for start in range(0, n, batch):
        m = min(batch, n - start)
        x = 0.5 + sigmas[0] * torch.randn((m,) + tuple(shape), generator=generator)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            x = heun_step(prior, x, s, s_next)
            bar.update(m)
        out.append(x)
    bar.close()
    return torch.cat(out)
