"""Contract tests for every solver in SOLVERS (a new entry is tested with no edits)."""

import pytest
import torch

from invdiff import Problem, solve
from invdiff.operators import random_inpainting
from invdiff.priors import GaussianPrior
from invdiff.solvers import SOLVERS

D64 = torch.float64


@pytest.fixture(scope="module")
def setup():
    prior = GaussianPrior(torch.full((1, 6, 6), 0.5, dtype=D64), torch.full((1, 6, 6), 0.04, dtype=D64))
    g = torch.Generator().manual_seed(0)
    x = prior.sample(2, generator=g).clamp(0, 1)
    op = random_inpainting((1, 6, 6), 0.5, generator=g).double()
    return prior, Problem.simulate(x, op, 0.02, generator=g)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solver_contract(setup, name):
    prior, pb = setup
    solver = SOLVERS[name]()

    samples = 1 if solver.couples_batch else 2  # a batch-coupling solver (MBIR) takes one volume

    def run(seed):
        return solve(pb, prior, solver, steps=6, num_samples=samples, generator=torch.Generator().manual_seed(seed),
                     progress=False)

    a, b = run(0), run(0)
    assert a.x_hat.shape == (2, 1, 6, 6) and torch.isfinite(a.x_hat).all()
    assert torch.equal(a.x_hat, b.x_hat)  # same seed, same numbers
    if a.samples is not None:
        assert a.samples.shape[1:] == (2, 1, 6, 6) and a.samples.shape[0] >= samples
    assert (a.nfe, a.vjp) == solver.cost(6), name
    x0 = pb.y.clone()
    run(1)
    assert torch.equal(pb.y, x0)  # the problem is not modified
