"""The solve loop and the unconditional samplers, against a Gaussian prior's exact ODE map."""

import pytest
import torch

from invdiff.operators import random_inpainting
from invdiff.priors import GaussianPrior
from invdiff.problem import Problem
from invdiff.schedules import karras
from invdiff.solve import NonFiniteError, solve
from invdiff.solvers.base import Solver, State
from invdiff.solvers.ddim import DDIM
from invdiff.solvers.dpmpp import DPMSolverPP2M
from invdiff.solvers.heun import Heun

D64 = torch.float64


@pytest.fixture(scope="module")
def prior():
    g = torch.Generator().manual_seed(0)
    L = torch.randn(8, 8, generator=g, dtype=D64) * 0.1
    return GaussianPrior(torch.linspace(0.2, 0.8, 8, dtype=D64).reshape(1, 1, 8),
                         L @ L.T + 1e-3 * torch.eye(8, dtype=D64))


def exact_ode(prior, x_T, sigma_T):
    """Probability-flow ODE map of a Gaussian prior: in its eigenbasis x0 − m = (x_T − m)·sqrt(λ/(λ + σ_T²))."""
    lam, U = torch.linalg.eigh(prior.cov)
    m = prior.mean.reshape(-1)
    z = (x_T.reshape(len(x_T), -1) - m) @ U
    return m + (z * torch.sqrt(lam / (lam + sigma_T**2))) @ U.T


def run(prior, solver, steps, n=200, seed=1):
    sig = karras(steps, 0.002, 80.0)
    pb = Problem.unconditional((1, 1, 8), dtype=D64)
    res = solve(pb, prior, solver, sigmas=sig, num_samples=n, generator=torch.Generator().manual_seed(seed),
                progress=False)
    x_T = 0.5 + 80.0 * torch.randn((n, 1, 1, 8), generator=torch.Generator().manual_seed(seed), dtype=D64)
    exact = exact_ode(prior, x_T, 80.0)
    return res, float((res.samples[:, 0].reshape(n, 8) - exact).norm() / exact.norm())


@pytest.mark.parametrize("solver,order", [(DDIM(0.0), 1), (Heun(), 2), (DPMSolverPP2M(), 2)])
def test_deterministic_samplers_converge_to_the_exact_ode(prior, solver, order):
    errs = [run(prior, solver, steps)[1] for steps in (10, 20, 40, 80)]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    rate = errs[-2] / errs[-1]  # error ratio per doubling of the steps: ~2 (1st order), ~4 (2nd order)
    assert rate > (1.7 if order == 1 else 3.0), errs
    assert errs[-1] < (0.03 if order == 1 else 3e-3), errs


def test_nfe_counts(prior):
    assert run(prior, DDIM(0.0), 20, n=2)[0].nfe == 20
    assert run(prior, Heun(), 20, n=2)[0].nfe == 39  # 2N − 1
    assert run(prior, DPMSolverPP2M(), 20, n=2)[0].nfe == 20
    assert run(prior, Heun(), 20, n=2)[0].vjp == 0


def _moment_errors(prior, solver, steps, n=20000):
    """Largest mean error in standard errors, and relative Frobenius error of the covariance."""
    res, _ = run(prior, solver, steps, n=n, seed=3)
    s = res.samples[:, 0].reshape(-1, 8)
    se = (torch.diagonal(prior.cov) / n).sqrt()
    mean_z = float(((s.mean(0) - prior.mean.reshape(8)).abs() / se).max())
    cov_rel = float((torch.cov(s.T) - prior.cov).norm() / prior.cov.norm())
    return mean_z, cov_rel


@pytest.mark.parametrize("solver,steps,tol", [(DDIM(1.0), 400, 0.05), (DDIM(0.5), 400, 0.05),
                                              (Heun(), 60, 0.03), (DPMSolverPP2M(), 60, 0.03)])
def test_sample_moments_match_the_prior(prior, solver, steps, tol):
    """20000 samples: mean within 4 standard errors; covariance within ``tol`` (relative Frobenius;
    the sampling error alone is ~0.01, the rest is discretisation bias of the solver)."""
    mean_z, cov_rel = _moment_errors(prior, solver, steps)
    assert mean_z < 4 and cov_rel < tol, (mean_z, cov_rel)


def test_ancestral_sampler_bias_falls_with_steps(prior):
    errs = [_moment_errors(prior, DDIM(1.0), steps)[1] for steps in (50, 400)]
    assert errs[1] < 0.5 * errs[0], errs


def test_result_fields_and_determinism(prior):
    a, _ = run(prior, DDIM(1.0), 10, n=5, seed=7)
    b, _ = run(prior, DDIM(1.0), 10, n=5, seed=7)
    c, _ = run(prior, DDIM(1.0), 10, n=5, seed=8)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.samples.shape == (5, 1, 1, 1, 8) and a.x_hat.shape == (1, 1, 1, 8) and a.std.shape == (1, 1, 1, 8)
    assert a.seconds > 0


def test_residual_trace_and_callback():
    prior = GaussianPrior(torch.full((1, 4, 4), 0.5, dtype=D64), torch.full((1, 4, 4), 0.05, dtype=D64))
    x = prior.sample(2, generator=torch.Generator().manual_seed(0))
    op = random_inpainting((1, 4, 4), 0.5, generator=torch.Generator().manual_seed(0)).double()
    pb = Problem.simulate(x, op, 0.01, generator=torch.Generator().manual_seed(1))
    seen = []
    res = solve(pb, prior, DDIM(0.0), steps=7, progress=False, callback=lambda i, s, st: seen.append(i))
    assert seen == list(range(7)) and res.trace["residual"].shape == (7, 2)


class _Exploding(Solver):
    def step(self, state, sigma, sigma_next, problem, prior, generator):
        return State(x=state.x * float("inf") if sigma < 1 else state.x), {}


def test_bad_input_and_non_finite(prior):
    pb = Problem.unconditional((1, 1, 8), dtype=D64)
    with pytest.raises(ValueError, match="steps"):
        solve(pb, prior, DDIM(), steps=0)
    with pytest.raises(ValueError, match="num_samples"):
        solve(pb, prior, DDIM(), steps=3, num_samples=0)
    with pytest.raises(ValueError, match=r"problem and prior do not match.*\(1, 1, 9\)"):
        solve(Problem.unconditional((1, 1, 9)), prior, DDIM(), steps=3)
    with pytest.raises(ValueError, match="sigmas"):
        solve(pb, prior, DDIM(), sigmas=torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(NonFiniteError, match="step .* smaller step size"):
        solve(pb, prior, _Exploding(), steps=10, progress=False)
    with pytest.raises(ValueError, match="eta"):
        DDIM(eta=1.5)
