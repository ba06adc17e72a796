import pytest
import torch

from invdiff import solve
from invdiff.solvers import SOLVERS
from invdiff.solvers.reddiff import REDDiff

D64 = torch.float64


@pytest.fixture(scope="module")
def setting(smooth_prior, inpainting_problem):
    return (smooth_prior,) + inpainting_problem(0.5)


def _reference_reddiff(prior, y, A, u0, sigmas, lam, lr, generator):
    """The official update in its own variables: u in [-1, 1] starting at ``u0``, the loss
    λ w_t mean((ε̂ − ε) u) + mean((y_u − A u)²)/2 (means over the d pixels and the m measurements),
    autograd, torch.optim.Adam."""
    torch.randn(u0.shape, generator=generator, dtype=D64)  # the x_T draw of solve()
    y_u = 2 * y - A(torch.ones_like(u0))
    u = u0.clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr, betas=(0.9, 0.99))
    for s in sigmas[:-1]:
        abar = 1 / (1 + 4 * s**2)
        noise = torch.randn(u.shape, generator=generator, dtype=D64)
        xt = abar**0.5 * u + (1 - abar) ** 0.5 * noise
        with torch.no_grad():
            x0_u = 2 * prior.denoise((xt / abar**0.5 + 1) / 2, s) - 1
            et = (xt - abar**0.5 * x0_u) / (1 - abar) ** 0.5
        loss = lam * ((1 - abar) ** 0.5 / abar**0.5) * ((et - noise) * u).mean() + ((y_u - A(u)) ** 2).mean() / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (u.detach() + 1) / 2


def test_reddiff_matches_the_official_update(setting):
    prior, pb, _ = setting
    sig = REDDiff().default_sigmas(prior, 40)
    ours = solve(pb, prior, REDDiff(lam=0.25, lr=0.1), sigmas=sig, generator=torch.Generator().manual_seed(3),
                 progress=False)
    ones = torch.ones((1,) + tuple(pb.img_shape), dtype=D64)
    u0 = pb.physics.A_dagger(2 * pb.y - pb.physics.A(ones))  # s ∈ {0, 1}: the truncated pseudo-inverse
    ref = _reference_reddiff(prior, pb.y, pb.physics.A, u0, [float(s) for s in sig], 0.25, 0.1,
                             torch.Generator().manual_seed(3))
    assert torch.allclose(ours.x_hat, ref, atol=1e-8), float((ours.x_hat - ref).abs().max())
    assert ours.samples is None and ours.nfe == 40 and ours.vjp == 0





@pytest.fixture(scope="module")
def blurred(blur_subsample):
    """``(M, prior, problem, posterior)`` of the blur-then-subsample operator (conftest), sigma_y = 0.02."""
    return blur_subsample(0.02)


@pytest.mark.parametrize("lam, lr", [(0.25, 0.1), (1.0, 0.05)])
def test_reddiff_matches_the_official_update_on_a_non_self_adjoint_operator(blurred, lam, lr):
    """On inpainting m = d and Aᵀ(1 − A 1) = 0 hide a data gradient divided by d instead of m and a
    measurement moved to [−1, 1] units by 1 instead of A 1; here the reference applies the matrix
    itself (autograd gives Mᵀ) and means over its m = 16 rows. Every singular value (≥ 0.33) is
    above pinv_cutoff, so the start is the plain pseudo-inverse. The tolerance is the inpainting
    test's (float64 rounding, 1e-14 here, can grow where Adam divides by a near-zero moment)."""
    M, prior, pb, _ = blurred
    assert float(torch.linalg.svdvals(M).min()) > REDDiff().pinv_cutoff
    sig = REDDiff().default_sigmas(prior, 40)
    ours = solve(pb, prior, REDDiff(lam=lam, lr=lr), sigmas=sig, generator=torch.Generator().manual_seed(3),
                 progress=False)

    def A(u):
        return u.flatten(1) @ M.T

    y_u = 2 * pb.y - A(torch.ones(1, 1, 8, 8, dtype=D64))
    u0 = (y_u @ torch.linalg.pinv(M).T).reshape(1, 1, 8, 8)
    ref = _reference_reddiff(prior, pb.y, A, u0, [float(s) for s in sig], lam, lr, torch.Generator().manual_seed(3))
    assert torch.allclose(ours.x_hat, ref, atol=1e-8), float((ours.x_hat - ref).abs().max())


def test_reddiff_estimate_is_near_the_exact_posterior_mean(setting):
    prior, pb, post = setting
    res = solve(pb, prior, REDDiff(lam=0.25, lr=0.05), steps=300, generator=torch.Generator().manual_seed(4),
                progress=False, record=("residual", "loss"))
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    dagger_err = float((pb.physics.A_dagger(pb.y) - post.mean).norm() / post.mean.norm())
    prior_err = float((prior.mean - post.mean).norm() / post.mean.norm())
    assert err < 0.5 * min(dagger_err, prior_err), (err, dagger_err, prior_err)
    assert res.trace["loss"].shape == (300, 1)


def test_reddiff_estimate_is_near_the_exact_posterior_mean_under_blur_and_subsampling(blurred):
    """The inpainting criterion on a non-self-adjoint operator with m = d/4 (prior mean 28 % and
    pseudo-inverse 48 % off the exact posterior mean)."""
    _, prior, pb, post = blurred
    res = solve(pb, prior, REDDiff(lam=0.25, lr=0.05), steps=300, generator=torch.Generator().manual_seed(4),
                progress=False)
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    dagger_err = float((pb.physics.A_dagger(pb.y) - post.mean).norm() / post.mean.norm())
    prior_err = float((prior.mean - post.mean).norm() / post.mean.norm())
    assert err < 0.5 * min(dagger_err, prior_err), (err, dagger_err, prior_err)


def test_reddiff_bad_input_and_registry():
    with pytest.raises(ValueError, match="weighting"):
        REDDiff(weighting="cubic")
    with pytest.raises(ValueError, match="lr > 0"):
        REDDiff(lr=0.0)
    assert SOLVERS["reddiff"] is REDDiff


def _start(physics, y, cutoff=0.05):
    from invdiff import Problem

    pb = Problem(physics, y, 0.02)
    x_T = torch.zeros((y.shape[0],) + tuple(pb.img_shape), dtype=y.dtype)
    return REDDiff(pinv_cutoff=cutoff).init(pb, None, x_T, 1.0, None).x


def test_start_is_the_truncated_pseudo_inverse():
    """SVD operators start at V diag(1/s · [s > cutoff]) Uᵀ (y measured on [−1, 1] images):
    checked against a dense SVD; on inpainting (s ∈ {0, 1}) it is A†; on a noisy Gaussian blur
    it stays bounded where deepinv's A† (cutoff 1e-5) blows the noise up."""
    from invdiff.operators import dense_operator, gaussian_blur, random_inpainting

    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=D64))
    V, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=D64))
    s = torch.tensor([1.0, 0.5, 0.2, 0.06, 0.04, 0.001], dtype=D64)
    M = U @ torch.diag(s) @ V.T
    op = dense_operator((1, 1, 6), M)
    y = torch.randn(2, 6, generator=g, dtype=D64)
    y_u = 2 * y - (M @ torch.ones(6, dtype=D64))[None]
    expected = V @ torch.diag(torch.where(s > 0.05, 1 / s, 0)) @ U.T @ y_u.T
    assert torch.allclose(_start(op, y).reshape(2, 6), (expected.T + 1) / 2, atol=1e-10)

    mask = random_inpainting((1, 8, 8), 0.5, generator=g).double()
    y = mask.A(torch.rand(1, 1, 8, 8, generator=g, dtype=D64))
    ones = torch.ones(1, 1, 8, 8, dtype=D64)
    assert torch.allclose(_start(mask, y), (mask.A_dagger(2 * y - mask.A(ones)) + 1) / 2)

    blur = gaussian_blur((1, 16, 16), 2.0).double()
    x = torch.rand(1, 1, 16, 16, generator=g, dtype=D64)
    y = blur.A(x) + 0.02 * torch.randn(1, 1, 16, 16, generator=g, dtype=D64)
    assert float((_start(blur, y) - x).abs().max()) < 3.0
    assert float((_start(blur, y, cutoff=0.0) - x).abs().max()) > 100.0
