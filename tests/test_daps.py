"""DAPS against exact answers.

With a Gaussian prior every part of DAPS is linear-Gaussian: the Euler steps of the ODE are
affine maps, an unadjusted Langevin step is ``x ← (I − ηH)x + η b + sqrt(2η) ε``, and the
re-noising adds ``σ_{j+1}² I``. The law of DAPS's output — *as implemented, with finite steps*
— is therefore a Gaussian computable by matrix algebra, level by level. The first test checks
the sampler against that law; the others check what the algorithm approximates (the posterior).
"""

import pytest
import torch

from invdiff import Problem, solve
from invdiff.priors import GaussianPrior
from invdiff.reference import gaussian_dense
from invdiff.schedules import karras
from invdiff.solvers import SOLVERS
from invdiff.solvers.daps import DAPS

D64 = torch.float64


@pytest.fixture(scope="module")
def gaussian_problem():
    """d = 16, 4 random measurements, sigma_y = 0.05; the matrix M is returned for the exact law."""
    prior, pb, post = gaussian_dense(16, 4, 0.05)
    return prior, pb.physics.matrix, pb, post


def daps_law(prior, M, y, tau, solver: DAPS, sigmas):
    """Mean and covariance of DAPS's output, propagated exactly (independent of the solver's code)."""
    return daps_law_normal(prior, M.T @ M, M.T @ y.reshape(-1), tau, solver, sigmas)


def daps_law_normal(prior, AtA, Aty, tau, solver: DAPS, sigmas):
    """:func:`daps_law` from the normal matrix ``AᵀA`` and ``Aᵀy`` (operators given as maps)."""
    mu, C = prior.mean.reshape(-1), prior.cov
    d = mu.numel()
    eye = torch.eye(d, dtype=D64)
    n = len(sigmas) - 1
    m, S = mu.clone(), sigmas[0] ** 2 * eye  # x_T = mean + σ_0 ε (solve starts at 0.5 = prior mean)
    H_data, b_data = AtA / tau**2, Aty / tau**2
    for j in range(n):
        s = sigmas[j]
        # inner ODE: Euler steps x' = D + (s'/s)(x − D), D(x, s) = μ + C (C + s² I)⁻¹ (x − μ)
        E = eye
        levels = karras(solver.ode_steps, min(prior.sigma_min, s), s, solver.rho).tolist()
        for a, b in zip(levels[:-1], levels[1:]):
            W = C @ torch.linalg.inv(C + a**2 * eye)
            E = (W + (b / a) * (eye - W)) @ E
        # Langevin: step size falls linearly in the level index from lr to lr · lr_min_ratio
        eta = solver.lr * (1 - (j / (n - 1)) * (1 - solver.lr_min_ratio))
        H = H_data + eye / s**2
        F = eye - eta * H
        G, h, Q = eye.clone(), torch.zeros(d, dtype=D64), torch.zeros(d, d, dtype=D64)
        for _ in range(solver.langevin_steps):
            G, h, Q = F @ G + (eta / s**2) * eye, F @ h + eta * b_data, F @ Q @ F.T + 2 * eta * eye
        # x̂0 = μ + E (x − μ);  x0 = G x̂0 + h + ξ;  x_{j+1} = x0 + σ_{j+1} ε
        m = G @ (mu + E @ (m - mu)) + h
        S = G @ E @ S @ E.T @ G.T + Q + sigmas[j + 1] ** 2 * eye
    return m, S


@pytest.mark.parametrize("measured", [True, False])
def test_daps_samples_follow_their_exact_law(gaussian_problem, measured):
    """4096 samples: mean within 5 standard errors, variances and covariance within Monte-Carlo error.
    A wrong sign, a missing 1/σ² or 1/τ² term, a wrong step-size decay or re-noising scale moves
    the law far outside these bounds (checked by breaking each on purpose). Without a measurement
    the law is DAPS's unconditional one — not the prior: N(x̂0, σ_t² I) overstates the spread of
    p(x0 | x_t), so DAPS alone inflates the variance."""
    prior, M, pb, _ = gaussian_problem
    if not measured:
        pb, M = Problem.unconditional((1, 1, 16), dtype=D64), M[:0]
    solver = DAPS(tau=None, lr=1e-3, lr_min_ratio=0.2, langevin_steps=40)
    steps, n = 12, 4096
    sigmas = solver.default_sigmas(prior, steps).tolist()
    m, S = daps_law(prior, M, pb.y, pb.sigma_y if measured else 1.0, solver, sigmas)
    res = solve(pb, prior, solver, steps=steps, num_samples=n, generator=torch.Generator().manual_seed(3),
                progress=False)
    x = res.samples.reshape(n, -1)
    z = (x.mean(0) - m) / (S.diagonal() / n).sqrt()
    assert float(z.abs().max()) < 5, z
    var_ratio = x.var(0) / S.diagonal()
    assert float((var_ratio - 1).abs().max()) < 0.15, var_ratio
    cov_err = torch.linalg.matrix_norm(torch.cov(x.T) - S) / torch.linalg.matrix_norm(S)
    assert float(cov_err) < 0.08, float(cov_err)
    assert (res.nfe, res.vjp) == (steps * solver.ode_steps, 0)


def test_daps_mean_is_close_to_the_exact_posterior_mean(gaussian_problem):
    """DAPS approximates p(x0 | x_t) by N(x̂0, σ_t² I), so it is not exact; with τ = σ_y its mean must
    still be far closer to the posterior mean than the prior mean or A†y are."""
    prior, M, pb, post = gaussian_problem
    res = solve(pb, prior, DAPS(tau=None, lr=1e-3), steps=50, num_samples=256,
                generator=torch.Generator().manual_seed(1), progress=False)
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    base = min(float((pb.physics.A_dagger(pb.y) - post.mean).norm() / post.mean.norm()),
               float((prior.mean - post.mean).norm() / post.mean.norm()))
    assert err < 0.25 * base, (err, base)


def test_daps_defaults_are_the_official_config_in_our_units():
    s = DAPS()
    assert (s.ode_steps, s.langevin_steps, s.lr_min_ratio) == (5, 100, 0.01)
    assert s.lr == pytest.approx(1e-4 / 4) and s.tau == pytest.approx(0.01 / 2)
    assert (s.sigma_max, s.sigma_min) == (100 / 2, 0.1 / 2)
    assert s.cost(200) == (1000, 0)
    prior = GaussianPrior(torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.05))
    sig = s.default_sigmas(prior, 200)
    assert float(sig[0]) == pytest.approx(50) and float(sig[-2]) == pytest.approx(0.05) and float(sig[-1]) == 0
    assert s.step_size(50.0, prior) == pytest.approx(s.lr) and s.step_size(0.05, prior) == pytest.approx(s.lr * 0.01)


def test_daps_bad_input(gaussian_problem):
    with pytest.raises(ValueError, match="ode_steps"):
        DAPS(ode_steps=0)
    with pytest.raises(ValueError, match="tau"):
        DAPS(tau=-1.0)
    with pytest.raises(ValueError, match="lr"):
        DAPS(lr=0.0)
    prior, M, pb, _ = gaussian_problem
    noiseless = Problem(pb.physics, pb.y, 0.0)
    with pytest.raises(ValueError, match="give tau > 0"):
        solve(noiseless, prior, DAPS(tau=None), steps=2, progress=False)
    from invdiff.solve import NonFiniteError

    with pytest.raises(NonFiniteError, match="smaller step size"):  # lr far above the stability bound
        solve(pb, prior, DAPS(tau=None, lr=1.0), steps=3, progress=False)
    assert SOLVERS["daps"] is DAPS


@pytest.mark.parametrize("kind", ["blur", "inpainting", "mri"])
def test_daps_closed_form_langevin_follows_the_chains_exact_law(kind):
    """Where AᵀA is diagonal in a known basis (masks, circular blur, single-coil MRI) DAPS draws the
    K-step Langevin chain's output in one step: its samples must follow the same exact law as the
    loop's (propagated step by step from the dense normal matrix), with an image-shaped prior."""
    from invdiff.operators import gaussian_blur, mri_cartesian, random_inpainting
    from invdiff.operators.spectral import diagonal_normal
    from invdiff.reference import gaussian_image

    g = torch.Generator().manual_seed(5)
    physics = {"blur": lambda: gaussian_blur((1, 8, 8), 1.0),
               "inpainting": lambda: random_inpainting((1, 8, 8), 0.5, generator=g),
               "mri": lambda: mri_cartesian(8, 2.0, generator=g)}[kind]()
    prior, pb, _ = gaussian_image(physics, size=8, sigma_y=0.05)
    A = pb.physics
    assert diagonal_normal(A, pb.y.new_zeros(1, 1, 8, 8)) is not None  # the closed form is what runs
    basis = torch.eye(64, dtype=D64).reshape(64, 1, 8, 8)
    AtA = A.A_adjoint(A.A(basis)).reshape(64, 64).T
    Aty = A.A_adjoint(pb.y).reshape(-1)
    solver = DAPS(tau=None, lr=1e-3, lr_min_ratio=0.2, langevin_steps=40)
    steps, n = 8, 4096
    sigmas = solver.default_sigmas(prior, steps).tolist()
    m, S = daps_law_normal(prior, AtA, Aty, pb.sigma_y, solver, sigmas)
    res = solve(pb, prior, solver, steps=steps, num_samples=n, generator=torch.Generator().manual_seed(3),
                progress=False)
    x = res.samples.reshape(n, -1)
    z = (x.mean(0) - m) / (S.diagonal() / n).sqrt()
    assert float(z.abs().max()) < 5, z
    var_ratio = x.var(0) / S.diagonal()
    assert float((var_ratio - 1).abs().max()) < 0.15, var_ratio
    # the sample covariance's Frobenius error has E‖Ŝ − S‖² ≈ (‖S‖² + (tr S)²)/n (Gaussian samples);
    # 64 coordinates make it ~0.1 relative here, so the bound is 1.5 times that expectation
    cov_err = torch.linalg.matrix_norm(torch.cov(x.T) - S) / torch.linalg.matrix_norm(S)
    expected = float(((torch.linalg.matrix_norm(S) ** 2 + S.trace() ** 2) / n).sqrt() / torch.linalg.matrix_norm(S))
    assert float(cov_err) < 1.5 * expected, (float(cov_err), expected)


@pytest.mark.parametrize("kind", ["blur", "inpainting", "mri"])
def test_daps_chain_law_is_the_loops_mean_and_covariance(kind):
    """Deterministic check of the closed form: its mean is the noiseless Langevin loop run step by
    step, and its covariance (as a dense matrix through the basis) is the loop's
    ``Q ← F Q Fᵀ + 2η I`` recursion, to rounding."""
    from invdiff.operators import gaussian_blur, mri_cartesian, random_inpainting
    from invdiff.operators.spectral import diagonal_normal

    g = torch.Generator().manual_seed(5)
    A = {"blur": lambda: gaussian_blur((1, 8, 8), 1.0),
         "inpainting": lambda: random_inpainting((1, 8, 8), 0.5, generator=g),
         "mri": lambda: mri_cartesian(8, 2.0, generator=g)}[kind]().double()
    x0_hat = torch.rand(1, 1, 8, 8, generator=g, dtype=D64)
    y = A.A(torch.rand(1, 1, 8, 8, generator=g, dtype=D64))
    sigma, tau, lr = 0.3, 0.05, 1e-3
    solver = DAPS(tau=tau, langevin_steps=37)
    diag = diagonal_normal(A, x0_hat)
    mean, std = solver.chain_law(A, y, x0_hat, sigma, tau, lr, diag)
    x = x0_hat
    for _ in range(solver.langevin_steps):
        x = x - lr * ((x - x0_hat) / sigma**2 + A.A_adjoint(A.A(x) - y) / tau**2)
    assert torch.allclose(mean, x, rtol=0, atol=1e-10), float((mean - x).abs().max())
    basis = torch.eye(64, dtype=D64).reshape(64, 1, 8, 8)
    F = torch.eye(64, dtype=D64) - lr * (torch.eye(64, dtype=D64) / sigma**2
                                         + A.A_adjoint(A.A(basis)).reshape(64, 64).T / tau**2)
    Q = torch.zeros(64, 64, dtype=D64)
    for _ in range(solver.langevin_steps):
        Q = F @ Q @ F.T + 2 * lr * torch.eye(64, dtype=D64)
    to, back, _ = diag
    cov = back(std**2 * to(basis)).reshape(64, 64).T
    assert torch.allclose(cov, Q, rtol=0, atol=1e-9 * float(Q.abs().max())), float((cov - Q).abs().max())
