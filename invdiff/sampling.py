"""Unconditional sampling from a :class:`Prior` (the sample grids of the model cards).

A thin convenience over :func:`invdiff.solve` on :meth:`Problem.unconditional` with the
:class:`~invdiff.solvers.heun.Heun` solver (Karras et al. 2022, Algorithm 1) on Karras noise
levels: ``2N − 1`` network calls for ``N`` steps.
"""

from __future__ import annotations

import torch

__all__ = ["sample_heun"]


def sample_heun(prior, n: int, shape, *, steps: int = 18, sigmas: torch.Tensor | None = None,
                generator: torch.Generator | None = None, batch: int = 16, progress: bool = True) -> torch.Tensor:
    """``n`` samples ``(n, *shape)`` in [0, 1] units (not clipped), ``batch`` at a time, on the prior's
    device (:func:`invdiff.devices.module_device`)."""
    from .devices import module_device
    from .problem import Problem
    from .solve import solve
    from .solvers.heun import Heun

    out = []
    problem = Problem.unconditional(shape, device=module_device(prior))
    for start in range(0, n, batch):
        m = min(batch, n - start)
        res = solve(problem, prior, Heun(), steps=steps, sigmas=sigmas, num_samples=m,
                    generator=generator, progress=progress, record=())
        out.append(res.samples[:, 0])
    return torch.cat(out)
