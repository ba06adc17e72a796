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


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solver_declares_its_capabilities_and_final_shapes(setup, name):
    """Capabilities are class attributes of the declared types; ``init`` builds the whole state
    at the starting noise level; ``finalize`` returns (S, B, C, H, W) draws and a (B, C, H, W)
    point estimate, for every solver."""
    from invdiff.schedules import RANGE_SCHEDULES
    from invdiff.solve import CountingPrior
    from invdiff.solvers.base import Final

    cls = SOLVERS[name]
    for attr in ("samples", "posterior", "needs_svd", "uses_vjp", "couples_batch", "benchmark_default"):
        assert isinstance(getattr(cls, attr), bool), (name, attr)
    assert cls.schedule in RANGE_SCHEDULES and isinstance(cls.grid, dict)
    assert all(k in cls.__dataclass_fields__ for k in cls.grid), name  # tuned values are hyperparameters
    assert cls.summary() and cls.summary() == (cls.__doc__ or "").strip().splitlines()[0]
    prior, pb = setup
    solver = cls()
    sig = solver.default_sigmas(prior, 4).tolist()
    counted = CountingPrior(prior)
    x_T = 0.5 + sig[0] * torch.randn((2,) + tuple(pb.img_shape), generator=torch.Generator().manual_seed(0),
                                     dtype=D64)
    state = solver.init(pb, counted, x_T, sig[0], torch.Generator().manual_seed(1))
    for s, s_next in zip(sig[:-1], sig[1:]):
        state, info = solver.step(state, s, s_next, pb, counted, torch.Generator().manual_seed(2))
        assert isinstance(info, dict)
    final = solver.finalize(state, 2)
    assert isinstance(final, Final)
    assert final.samples.ndim == 5 and final.samples.shape[1:] == (2, 1, 6, 6)
    assert final.point.shape == (2, 1, 6, 6)


def test_each_solver_lists_its_own_description():
    from invdiff.solvers import DDIM, Euler

    assert Euler.summary() != DDIM.summary() and "Euler" in Euler.summary()
    with pytest.raises(ValueError, match="Euler is deterministic"):
        Euler(eta=0.5)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_posterior_flag_matches_whether_the_measurement_is_used(setup, name):
    """``posterior = True`` (a benchmark method) exactly when the result depends on ``y``."""
    prior, pb = setup
    solver = SOLVERS[name]()
    other = Problem(pb.physics, pb.y + 0.3, pb.sigma_y)
    samples = 1 if solver.couples_batch else 2

    def run(problem):
        return solve(problem, prior, solver, steps=6, num_samples=samples, generator=torch.Generator().manual_seed(0),
                     progress=False).x_hat

    assert (not torch.equal(run(pb), run(other))) == solver.posterior, name
