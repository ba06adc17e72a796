"""invdiff solvers the deepinv way: ``model(y, physics)``, usable in ``deepinv.test`` and its ``Trainer``.

``model = invdiff.as_reconstructor(prior, "diffpir", steps=100)`` is a
:class:`deepinv.models.Reconstructor`; calling it builds a :class:`~invdiff.Problem` from the
measurement and the physics (:meth:`Problem.from_physics`: the noise level read from
``physics.noise_model`` when it is Gaussian) and returns :func:`invdiff.solve`'s point estimate.
The sampler is reseeded at every call, so the same measurement gives the same reconstruction.
"""

from __future__ import annotations

import deepinv
import torch

from .problem import Problem
from .solve import solve

__all__ = ["DiffusionReconstructor", "as_reconstructor"]


class DiffusionReconstructor(deepinv.models.Reconstructor):
    """``x̂ = model(y, physics)``: an invdiff solver with a prior as a deepinv reconstructor.

    Parameters
    ----------
    prior : Prior
        The diffusion prior (any :class:`invdiff.priors.Prior`).
    solver : Solver
        A configured solver, e.g. ``DiffPIR(lam=3.0)``.
    steps, num_samples : int
        As in :func:`invdiff.solve`; with ``num_samples > 1`` the posterior mean is returned.
    sigma_y : float, optional
        The measurement noise std; by default read from ``physics.noise_model``.
    seed : int
        Seed of the sampler, drawn anew at each call.
    """

    def __init__(self, prior, solver, *, steps: int = 100, num_samples: int = 1, sigma_y: float | None = None,
                 seed: int = 0, progress: bool = False):
        super().__init__()
        self.prior = prior
        self.solver = solver
        self.steps, self.num_samples, self.sigma_y = steps, num_samples, sigma_y
        self.seed, self.progress = seed, progress

    def forward(self, y: torch.Tensor, physics, **kwargs) -> torch.Tensor:
        problem = Problem.from_physics(physics, y, sigma_y=self.sigma_y)
        result = solve(problem, self.prior, self.solver, steps=self.steps, num_samples=self.num_samples,
                       generator=torch.Generator().manual_seed(self.seed), progress=self.progress, record=())
        return result.x_hat


def as_reconstructor(prior, solver, *, steps: int = 100, num_samples: int = 1, sigma_y: float | None = None,
                     seed: int = 0, progress: bool = False) -> DiffusionReconstructor:
    """Wrap ``prior`` and ``solver`` (a :class:`~invdiff.solvers.Solver` or a name in
    :data:`invdiff.solvers.SOLVERS`, with its defaults) as a :class:`DiffusionReconstructor`."""
    if isinstance(solver, str):
        from .solvers import SOLVERS

        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; known solvers: {', '.join(SOLVERS)}")
        solver = SOLVERS[solver]()
    return DiffusionReconstructor(prior, solver, steps=steps, num_samples=num_samples, sigma_y=sigma_y, seed=seed,
                                  progress=progress)
