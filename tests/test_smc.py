import pytest
import torch

from invdiff import Problem, solve
from invdiff.operators import dense_operator
from invdiff.priors import GaussianPrior
from invdiff.operators import gaussian_blur, random_inpainting
from invdiff.priors.gaussian import as_matrix
from invdiff.reference import gaussian_dense, gaussian_image
from invdiff.solvers import SOLVERS
from invdiff.solvers.resampling import ess, multinomial, stratified, systematic
from invdiff.solvers.smc import SMC

D64 = torch.float64


@pytest.fixture(scope="module")
def gaussian_problem():
    """d = 16, 4 random measurements, sigma_y = 0.05, two independent problems."""
    return gaussian_dense(16, 4, 0.05, batch=2)


def _errors(res, post):
    mean_err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    var = res.samples.var(0).reshape(post.var.shape)
    var_err = float(((var - post.var).abs() / post.var).mean())
    return mean_err, var_err


IMAGE_OPERATORS = {
    "inpainting": lambda: random_inpainting((1, 8, 8), 0.6, generator=torch.Generator().manual_seed(0)),
    "blur": lambda: gaussian_blur((1, 8, 8), 1.0, kernel_size=5),
}


@pytest.mark.parametrize("kind", sorted(IMAGE_OPERATORS))
def test_smc_jacobian_twist_matches_image_shaped_gaussian_posteriors(kind):
    """8×8 images under a correlated Gaussian prior, 1024 particles: with the Jacobian (Tweedie
    covariance) twist the weighted mean is within 5 % and the variances within 15 %. (The
    isotropic twist ignores the prior's correlations and misses here: see smc_particles.md.)"""
    prior, pb, post = gaussian_image(IMAGE_OPERATORS[kind]())
    res = solve(pb, prior, SMC(particles=1024, cov="jacobian"), steps=200,
                generator=torch.Generator().manual_seed(1), progress=False)
    mean_err, var_err = _errors(res, post)
    assert mean_err < 0.05 and var_err < 0.15, (mean_err, var_err)


def test_jacobian_twist_is_the_exact_gaussian_likelihood():
    """For a Gaussian prior N(m, C), p(y | x_σ) = N(y; A x̂0(x_σ), σ_y² I + σ² A J Aᵀ) with
    σ² J = C (C + σ² I)⁻¹ σ²: the reward equals its log-density up to a constant, and the twist
    gradient equals its gradient (CG run to convergence)."""
    prior, pb, _ = gaussian_image(IMAGE_OPERATORS["blur"]())
    A, _ = as_matrix(pb.physics, (1, 8, 8))
    C = prior.cov.reshape(64, 64)
    sigma = 0.3
    J = C @ torch.linalg.inv(C + sigma**2 * torch.eye(64, dtype=D64))
    S = pb.sigma_y**2 * torch.eye(A.shape[0], dtype=D64) + sigma**2 * A @ J @ A.T
    x = 0.5 + sigma * torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=D64)
    y_rep = pb.y.repeat(5, 1, 1, 1)
    x0, r, grad = SMC(cov="jacobian", cg_iters=200)._evaluate(pb, prior, y_rep, x, sigma)
    resid = (y_rep - pb.physics.A(x0)).reshape(5, -1)
    Sinv_r = torch.linalg.solve(S, resid.T).T
    assert torch.allclose(r, -0.5 * (resid * Sinv_r).sum(1), rtol=1e-6, atol=1e-8)
    exact = Sinv_r @ A @ J  # (Jᵀ Aᵀ S⁻¹ ρ)ᵀ per particle; CG stops at 1e-6 relative residual
    assert float((grad.reshape(5, -1) - exact).abs().max()) < 1e-5 * float(exact.abs().max())


def test_jacobian_twist_counts_its_vjps():
    """(cg_iters + 1) backward passes per step when twisting, cg_iters without the twisted
    proposal; fewer when CG converges early (cost is then an upper bound)."""
    prior, pb, _ = gaussian_image(IMAGE_OPERATORS["inpainting"]())
    for twist, per_step in ((True, 2), (False, 1)):
        solver = SMC(particles=8, cov="jacobian", cg_iters=1, twist=twist)
        res = solve(pb, prior, solver, steps=6, generator=torch.Generator().manual_seed(0), progress=False)
        assert (res.nfe, res.vjp) == solver.cost(6) == (6, 6 * per_step)
    solver = SMC(particles=8, cov="jacobian", cg_iters=40)
    res = solve(pb, prior, solver, steps=6, generator=torch.Generator().manual_seed(0), progress=False)
    assert 6 * 2 < res.vjp < solver.cost(6)[1]


@pytest.mark.parametrize("twist", [True, False])
def test_smc_matches_the_exact_gaussian_posterior(gaussian_problem, twist):
    """1024 particles: weighted mean within 5 % of the exact posterior mean, variance within 15 %."""
    prior, pb, post = gaussian_problem
    res = solve(pb, prior, SMC(particles=1024, twist=twist), steps=400, generator=torch.Generator().manual_seed(1),
                progress=False, record=("ess",))
    mean_err, var_err = _errors(res, post)
    assert mean_err < 0.05 and var_err < 0.15, (mean_err, var_err)
    assert res.samples.shape == (1024, 2, 1, 1, 16)
    assert res.nfe == 400 and res.vjp == (400 if twist else 0)
    assert res.trace["ess"].shape == (400, 2)


def test_smc_error_falls_with_particles(gaussian_problem):
    prior, pb, post = gaussian_problem
    errs = []
    for k in (16, 1024):
        runs = [_errors(solve(pb, prior, SMC(particles=k), steps=100, generator=torch.Generator().manual_seed(s),
                              progress=False), post)[0] for s in range(3)]
        errs.append(sum(runs) / len(runs))
    assert errs[1] < 0.5 * errs[0], errs


def test_smc_one_dimensional_posterior_is_tight():
    prior = GaussianPrior(torch.full((1, 1, 1), 0.5, dtype=D64), torch.tensor([[0.09]], dtype=D64))
    pb = Problem(dense_operator((1, 1, 1), torch.ones(1, 1, dtype=D64)), torch.tensor([[0.9]], dtype=D64), 0.3)
    post = prior.posterior(torch.ones(1, 1, dtype=D64), pb.y, 0.3)  # mean 0.7, var 0.045
    res = solve(pb, prior, SMC(particles=4096), steps=400, generator=torch.Generator().manual_seed(0), progress=False)
    assert abs(float(res.x_hat) - float(post.mean)) < 0.01
    assert abs(float(res.samples.var()) / float(post.var) - 1) < 0.08


def _one_d():
    prior = GaussianPrior(torch.full((1, 1, 1), 0.5, dtype=D64), torch.tensor([[0.09]], dtype=D64))
    return prior, Problem(dense_operator((1, 1, 1), torch.ones(1, 1, dtype=D64)), torch.tensor([[0.9]], dtype=D64), 0.3)


def test_potentials_cancel_without_resampling():
    """Without resampling the final correction divides every potential out exactly: all four give
    the same estimate to rounding error (a missing or wrong correction breaks this)."""
    prior, pb = _one_d()
    out = [solve(pb, prior, SMC(particles=512, potential=p, twist=False, ess_threshold=0.0), steps=30,
                 generator=torch.Generator().manual_seed(0), progress=False).x_hat for p in
           ("difference", "max", "sum", "current")]
    assert all(torch.allclose(o, out[0], atol=1e-10) for o in out[1:])


@pytest.mark.parametrize("potential", ["max", "current"])
def test_potentials_with_resampling_share_the_target(potential):
    """Resampling at every step: max and current potentials estimate the same (chain) posterior as
    difference. ('sum' multiplies cumulative sums over the steps and is too degenerate to test so.)"""
    prior, pb = _one_d()

    def est(p):
        # tau pinned to the value this test was calibrated with (the default now follows the prior's scale)
        return sum(float(solve(pb, prior, SMC(particles=4096, potential=p, twist=False, ess_threshold=1.0, tau=0.25),
                               steps=20,
                               generator=torch.Generator().manual_seed(s), progress=False).x_hat) for s in range(3)) / 3

    assert abs(est(potential) - est("difference")) < 0.02


@pytest.mark.parametrize("scheme", [systematic, stratified, multinomial])
def test_resampling_is_unbiased(scheme):
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], dtype=D64)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(2, 4, dtype=D64)
    for _ in range(4000):
        idx = scheme(w, g)
        assert idx.shape == (2, 4) and int(idx.min()) >= 0 and int(idx.max()) < 4
        counts += torch.nn.functional.one_hot(idx, 4).sum(1)
    assert torch.allclose(counts / (4000 * 4), w, atol=0.01)


def test_systematic_is_low_variance_and_ess():
    w = torch.tensor([[0.25, 0.25, 0.25, 0.25]], dtype=D64)
    assert torch.equal(systematic(w, torch.Generator().manual_seed(3)), torch.arange(4)[None])
    log_w = torch.log(torch.tensor([[1.0, 1.0, 0.0 + 1e-300, 1e-300]], dtype=D64)) + 1000.0  # max-subtraction
    assert abs(float(ess(log_w)) - 2.0) < 1e-9


def test_smc_bad_input():
    with pytest.raises(ValueError, match="deterministic transition"):
        SMC(eta=0.0)
    SMC(eta=0.0, ess_threshold=0.0)  # no resampling: allowed
    with pytest.raises(ValueError, match="particles"):
        SMC(particles=0)
    with pytest.raises(ValueError, match="potential"):
        SMC(potential="mean")
    with pytest.raises(ValueError, match="resampling"):
        SMC(resampling="residual")
    with pytest.raises(ValueError, match="cov"):
        SMC(cov="diagonal")
    with pytest.raises(ValueError, match="cg_iters"):
        SMC(cov="jacobian", cg_iters=0)
    assert SOLVERS["smc"] is SMC


def test_default_tempering_follows_the_prior_scale():
    """A mixture of 25 unit-variance components 8 apart (8 dims, 4 random measurements): the default
    tau (the prior's data std, 5.7 here) samples the posterior; a tau fixed for [0, 1] images (0.25)
    does not (sliced W2 0.47 vs 0.35 at 32 particles, 0.25 vs 0.14 at 256, seeds 0-2 / 0-1)."""
    import itertools

    from invdiff.metrics import sliced_wasserstein
    from invdiff.priors import GaussianMixturePrior

    g = torch.Generator().manual_seed(0)
    means = torch.zeros(25, 1, 1, 8, dtype=D64)
    means[:, 0, 0, :2] = torch.tensor(list(itertools.product(range(-2, 3), range(-2, 3))), dtype=D64) * 8
    prior = GaussianMixturePrior(torch.ones(25, dtype=D64), means, 1.0)
    M = torch.randn(4, 8, generator=g, dtype=D64) / 8**0.5
    pb = Problem.simulate(prior.sample(1, generator=g), dense_operator((1, 1, 8), M), 0.5, generator=g,
                          unit_range=False)
    assert prior.data_std == pytest.approx(((2 * (1 + 128) + 6) / 8) ** 0.5)  # within + between variance
    ref = prior.posterior(M, pb.y, 0.5).sample(4096, generator=torch.Generator().manual_seed(9)).reshape(4096, -1)

    def sw(tau):
        out = []
        for s in range(3):
            r = solve(pb, prior, SMC(particles=32, tau=tau), steps=200, generator=torch.Generator().manual_seed(s),
                      progress=False)
            out.append(sliced_wasserstein(r.samples.reshape(32, -1), ref, generator=torch.Generator().manual_seed(0)))
        return sum(out) / 3

    default, fixed = sw(None), sw(0.25)
    assert default < 0.8 * fixed, (default, fixed)
