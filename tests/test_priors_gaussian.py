"""Exact priors against brute-force numerical integration in 1 and 2 dimensions."""

import math

import pytest
import torch

from invdiff.operators import box_inpainting, gaussian_blur
from invdiff.priors import GaussianMixturePrior, GaussianPrior

D64 = torch.float64


def _grid_2d(lo, hi, n):
    t = torch.linspace(lo, hi, n, dtype=D64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([yy.flatten(), xx.flatten()], 1), (t[1] - t[0]) ** 2


def _gmm_density(pts, weights, means, covs):
    dens = torch.zeros(len(pts), dtype=D64)
    for w, m, c in zip(weights, means, covs):
        r = pts - m
        ci = torch.linalg.inv(c)
        dens += w * torch.exp(-0.5 * (r @ ci * r).sum(1)) / (2 * math.pi * torch.linalg.det(c).sqrt())
    return dens


@pytest.fixture(scope="module")
def gmm2d():
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=D64)
    means = torch.tensor([[-2.0, 1.0], [1.5, 0.5], [0.0, -2.0]], dtype=D64)
    covs = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=D64),
                        torch.tensor([[0.5, -0.2], [-0.2, 0.4]], dtype=D64),
                        torch.tensor([[0.2, 0.0], [0.0, 0.6]], dtype=D64)])
    prior = GaussianMixturePrior(weights, means.reshape(3, 1, 2), covs)
    return prior, weights, means, covs


@pytest.mark.parametrize("sigma", [0.05, 0.4, 1.5])
def test_gmm_denoiser_matches_integration_2d(gmm2d, sigma):
    prior, weights, means, covs = gmm2d
    pts, _ = _grid_2d(-7, 7, 701)
    dens = _gmm_density(pts, weights, means, covs)
    for x in ([-1.0, 0.7], [0.8, -1.2], [2.5, 2.0]):
        xt = torch.tensor(x, dtype=D64)
        lik = torch.exp(-((pts - xt) ** 2).sum(1) / (2 * sigma**2))
        post = dens * lik
        ref = (pts * post[:, None]).sum(0) / post.sum()
        got = prior.denoise(xt.reshape(1, 1, 2), sigma).reshape(2)
        assert torch.allclose(got, ref, atol=2e-4), (x, got, ref)


def test_score_is_gradient_of_log_density(gmm2d):
    prior = gmm2d[0]
    x = torch.tensor([[[0.3, -0.4]]], dtype=D64, requires_grad=True)
    sigma = 0.7
    (grad,) = torch.autograd.grad(prior.log_prob(x, sigma).sum(), x)
    assert torch.allclose(prior.score(x.detach(), sigma), grad, atol=1e-10)


def test_gmm_posterior_matches_integration_2d(gmm2d):
    prior, weights, means, covs = gmm2d
    A = torch.tensor([[1.0, 0.6]], dtype=D64)
    y = torch.tensor([[0.4], [-1.5]], dtype=D64)
    sigma_y = 0.3
    pts, cell = _grid_2d(-7, 7, 701)
    dens = _gmm_density(pts, weights, means, covs)
    post = prior.posterior(A, y, sigma_y)
    for b in range(2):
        w = dens * torch.exp(-((pts @ A.T)[:, 0] - y[b, 0]) ** 2 / (2 * sigma_y**2))
        w = w / w.sum()
        mean = (pts * w[:, None]).sum(0)
        r = pts - mean
        cov = (r[:, :, None] * r[:, None, :] * w[:, None, None]).sum(0)
        assert torch.allclose(post.mean[b].reshape(2), mean, atol=1e-4)
        assert torch.allclose(post.cov[b], cov, atol=1e-4)


def test_gaussian_denoiser_1d_and_posterior_closed_form():
    prior = GaussianPrior(torch.tensor([[0.3]], dtype=D64), torch.tensor([[0.04]], dtype=D64))
    x = torch.tensor([[[0.9]]], dtype=D64)
    assert abs(float(prior.denoise(x, 0.1)) - (0.3 + 0.04 / 0.05 * 0.6)) < 1e-12
    post = prior.posterior(torch.tensor([[2.0]], dtype=D64), torch.tensor([[1.0]], dtype=D64), 0.1)
    prec = 1 / 0.04 + 4 / 0.01
    assert abs(float(post.cov[0, 0, 0]) - 1 / prec) < 1e-12
    assert abs(float(post.mean[0, 0, 0]) - (0.3 / 0.04 + 2 * 1.0 / 0.01) / prec) < 1e-12


def test_posterior_with_deepinv_physics_equals_dense_matrix():
    g = torch.Generator().manual_seed(0)
    mean = torch.rand(1, 6, 6, generator=g, dtype=D64)
    L = torch.randn(36, 36, generator=g, dtype=D64) * 0.05
    prior = GaussianPrior(mean, L @ L.T + 0.01 * torch.eye(36, dtype=D64))
    for op in (box_inpainting((1, 6, 6), (1, 1, 3, 3)), gaussian_blur((1, 6, 6), 0.8, kernel_size=5)):
        x = prior.sample(2, generator=g).float()
        y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=g)
        cols = torch.stack([op.double().A(e.reshape(1, 1, 6, 6)).flatten()
                            for e in torch.eye(36, dtype=D64)], 1)
        op.float()
        a = prior.posterior(op, y, 0.05)
        b = prior.posterior(cols, y.reshape(2, -1), 0.05)
        assert a.mean.shape == (2, 1, 6, 6)
        assert torch.allclose(a.mean, b.mean, atol=1e-10) and torch.allclose(a.cov, b.cov, atol=1e-10)


def test_sampling_moments():
    g = torch.Generator().manual_seed(0)
    prior = GaussianMixturePrior([0.25, 0.75], torch.tensor([[[0.0, 0.0]], [[3.0, 1.0]]]),
                                 torch.tensor([[1.0, 0.5], [0.2, 0.3]]))
    s = prior.sample(200_000, generator=g).reshape(-1, 2)
    mix = prior.posterior(torch.zeros(1, 2, dtype=D64), torch.zeros(1, 1, dtype=D64), 1.0)  # y uninformative
    assert torch.allclose(s.mean(0), mix.mean.reshape(2), atol=0.02)
    assert torch.allclose(torch.cov(s.T), mix.cov[0], atol=0.03)


def test_diagonal_image_prior_large():
    mean = torch.full((1, 128, 128), 0.5, dtype=D64)
    var = torch.full((1, 128, 128), 0.01, dtype=D64)
    prior = GaussianPrior(mean, var)
    x = torch.rand(2, 1, 128, 128, dtype=D64)
    assert torch.allclose(prior.denoise(x, 0.1), 0.5 + 0.5 * (x - 0.5))
    assert prior.sample(3).shape == (3, 1, 128, 128)
    with pytest.raises(ValueError, match="dense covariance"):
        prior.posterior(torch.eye(2), torch.zeros(1, 2), 0.1)


def test_denoiser_keeps_dtype_and_does_not_mutate(gmm2d):
    prior = gmm2d[0]
    x = torch.zeros(3, 1, 2)
    x0 = x.clone()
    out = prior.denoise(x, torch.tensor([0.1, 0.2, 0.3]))
    assert out.dtype == torch.float32 and torch.equal(x, x0)


@pytest.mark.parametrize("call,match", [
    (lambda p: p.denoise(torch.zeros(1, 1, 3), 0.1), r"expected x of shape \(B, 1, 2\)"),
    (lambda p: p.denoise(torch.zeros(1, 1, 2), 0.0), "sigma must be finite and > 0"),
    (lambda p: p.denoise(torch.zeros(1, 1, 2), -1.0), "sigma must be finite and > 0"),
    (lambda p: p.denoise(torch.zeros(1, 1, 2), math.nan), "sigma must be finite and > 0"),
    (lambda p: p.denoise(torch.zeros(2, 1, 2), torch.ones(3)), "one value per batch element"),
    (lambda p: p.posterior(torch.eye(3), torch.zeros(1, 3), 0.1), r"shape \(m, 2\)"),
    (lambda p: p.posterior(torch.eye(2), torch.zeros(1, 2), -0.1), "sigma_y"),
])
def test_bad_input(gmm2d, call, match):
    with pytest.raises(ValueError, match=match):
        call(gmm2d[0])


def test_bad_construction():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixturePrior([0.5, -0.5], torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="semi-definite"):
        GaussianPrior(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -1.0]]))


def test_draws_use_the_principal_square_root():
    """A seeded draw is μ + C^{1/2} z with the unique symmetric root, so it does not depend on the
    eigenvector signs or bases LAPACK picks (these change with the thread count). A covariance with
    a repeated eigenvalue, where eigh's basis is arbitrary, must still give the closed-form root."""
    from invdiff.priors.gaussian import _sqrtm_psd

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    lam = torch.tensor([4.0, 4.0, 1.0, 0.25, 0.0], dtype=torch.float64)  # repeated and zero eigenvalues
    C = q @ torch.diag(lam) @ q.T
    root = _sqrtm_psd(C[None])[0]
    assert torch.allclose(root, q @ torch.diag(lam.sqrt()) @ q.T, atol=1e-12)
    flipped = q * torch.tensor([-1.0, 1.0, -1.0, 1.0, -1.0], dtype=torch.float64)  # other eigenvector signs
    assert torch.allclose(_sqrtm_psd((flipped @ torch.diag(lam) @ flipped.T)[None])[0], root, atol=1e-12)
