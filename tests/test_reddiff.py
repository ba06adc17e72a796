import pytest
import torch

from invdiff import solve
from invdiff.solvers import SOLVERS
from invdiff.solvers.reddiff import REDDiff

D64 = torch.float64


@pytest.fixture(scope="module")
def setting(smooth_prior, inpainting_problem):
    return (smooth_prior,) + inpainting_problem(0.5)


def _reference_reddiff(prior, pb, sigmas, lam, lr, generator):
    """The official update in its own variables: u in [-1, 1], autograd, torch.optim.Adam."""
    A = pb.physics.A
    torch.randn((1,) + tuple(pb.img_shape), generator=generator, dtype=D64)  # the x_T draw of solve()
    y_u = 2 * pb.y - A(torch.ones((1,) + tuple(pb.img_shape), dtype=D64))
    u = pb.physics.A_dagger(y_u).clone().requires_grad_(True)
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
    ref = _reference_reddiff(prior, pb, [float(s) for s in sig], 0.25, 0.1, torch.Generator().manual_seed(3))
    assert torch.allclose(ours.x_hat, ref, atol=1e-8), float((ours.x_hat - ref).abs().max())
    assert ours.samples is None and ours.nfe == 40 and ours.vjp == 0


def test_reddiff_estimate_is_near_the_exact_posterior_mean(setting):
    prior, pb, post = setting
    res = solve(pb, prior, REDDiff(lam=0.25, lr=0.05), steps=300, generator=torch.Generator().manual_seed(4),
                progress=False, record=("residual", "loss"))
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    dagger_err = float((pb.physics.A_dagger(pb.y) - post.mean).norm() / post.mean.norm())
    prior_err = float((prior.mean - post.mean).norm() / post.mean.norm())
    assert err < 0.5 * min(dagger_err, prior_err), (err, dagger_err, prior_err)
    assert res.trace["loss"].shape == (300, 1)


def test_reddiff_bad_input_and_registry():
    with pytest.raises(ValueError, match="weighting"):
        REDDiff(weighting="cubic")
    with pytest.raises(ValueError, match="lr > 0"):
        REDDiff(lr=0.0)
    assert SOLVERS["reddiff"] is REDDiff
