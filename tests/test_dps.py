import pytest
import torch

from invdiff import Problem, solve
from invdiff.solvers import SOLVERS
from invdiff.solvers.ddim import DDIM
from invdiff.solvers.dps import DPS

D64 = torch.float64


@pytest.fixture(scope="module")
def inpainting(inpainting_problem):
    return inpainting_problem(0.7)


def test_dps_mean_approaches_exact_posterior_mean(smooth_prior, inpainting):
    """DPS is approximate, but its mean must land far closer to the exact posterior mean than the
    prior mean does (42 %); a sign error or a missing unit conversion breaks this."""
    pb, post = inpainting
    res = solve(pb, smooth_prior, DPS(zeta=0.3), steps=200, num_samples=64,
                generator=torch.Generator().manual_seed(1), progress=False)
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    prior_err = float((smooth_prior.mean - post.mean).norm() / post.mean.norm())
    assert prior_err > 0.3 and err < 0.08, (err, prior_err)
    assert res.nfe == 200 and res.vjp == 200
    assert res.trace["residual"].shape == (200, 64)  # one column per iterate (num_samples · B)
    assert float(res.trace["residual"][-1].mean()) < 0.05


def test_dps_without_measurement_is_ancestral_sampling(smooth_prior):
    pb = Problem.unconditional((1, 8, 8), dtype=D64)
    a = solve(pb, smooth_prior, DPS(zeta=1.0, eta=1.0), steps=20, num_samples=3,
              generator=torch.Generator().manual_seed(2), progress=False)
    b = solve(pb, smooth_prior, DDIM(eta=1.0), sigmas=DPS().default_sigmas(smooth_prior, 20), num_samples=3,
              generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.allclose(a.samples, b.samples) and a.vjp == 0


def test_presets_schedule_and_bad_input(smooth_prior):
    assert DPS.preset("super_resolution").zeta == 0.3 and DPS.preset("random_inpainting").zeta == 0.5
    s = DPS().default_sigmas(smooth_prior, 50)
    assert s.shape == (51,) and s[-1] == 0 and float(s[0]) <= smooth_prior.sigma_max
    assert (s[1:-1] <= s[:-2]).all()
    with pytest.raises(ValueError, match="zeta"):
        DPS(zeta=-1.0)
    with pytest.raises(ValueError, match="no DPS preset.*super_resolution"):
        DPS.preset("ct_sparse_view")
    assert SOLVERS["dps"] is DPS


def _reference_dps_vp(prior, problem, sigmas, zeta, generator, A=None):
    """The official DPS update written in its own variables: VP iterate x_t of [-1, 1] images,
    y measured on [-1, 1] images, x_{t'} = DDPM step − ζ ∇_{x_t} ‖y_u − A x̂0_u‖ (eta = 1).
    ``A`` defaults to the problem's operator."""
    A = problem.physics.A if A is None else A
    y_u = 2 * problem.y - A(torch.ones((1,) + tuple(problem.img_shape), dtype=problem.y.dtype))
    abar = [1 / (1 + (2 * s) ** 2) for s in sigmas]
    eps0 = torch.randn((1,) + tuple(problem.img_shape), generator=generator, dtype=problem.y.dtype)
    x_t = abar[0] ** 0.5 * (2 * sigmas[0] * eps0)  # u_T = 2 x_T − 1 = 2 σ_0 ε
    for i in range(len(sigmas) - 1):
        a, a_next = abar[i], abar[i + 1]
        x_t = x_t.detach().requires_grad_(True)
        u = x_t / a**0.5
        x0_u = 2 * prior.denoise((u + 1) / 2, sigmas[i]) - 1
        eps = (x_t - a**0.5 * x0_u) / (1 - a) ** 0.5
        norm = (y_u - A(x0_u)).flatten().norm()
        grad = torch.autograd.grad(norm, x_t)[0]
        with torch.no_grad():
            c = ((1 - a_next) / (1 - a) * (1 - a / a_next)) ** 0.5 if sigmas[i + 1] > 0 else 0.0
            x_next = a_next**0.5 * x0_u + max(1 - a_next - c**2, 0.0) ** 0.5 * eps
            if c > 0:
                x_next = x_next + c * torch.randn(x_next.shape, generator=generator, dtype=x_next.dtype)
            x_t = x_next - zeta * grad
    return (x_t.detach() / abar[-1] ** 0.5 + 1) / 2


def test_dps_matches_the_official_update_in_its_own_units(smooth_prior, inpainting):
    pb, _ = inpainting
    sig = [float(s) for s in DPS().default_sigmas(smooth_prior, 30)]
    ours = solve(pb, smooth_prior, DPS(zeta=0.5), sigmas=torch.tensor(sig), generator=torch.Generator().manual_seed(5),
                 progress=False).x_hat
    ref = _reference_dps_vp(smooth_prior, pb, sig, 0.5, torch.Generator().manual_seed(5))
    assert torch.allclose(ours, ref, atol=1e-9), float((ours - ref).abs().max())





@pytest.fixture(scope="module")
def blurred(blur_subsample):
    """``(M, prior, problem, posterior)`` of the blur-then-subsample operator (conftest), sigma_y = 0.02."""
    return blur_subsample(0.02)


@pytest.mark.parametrize("zeta", [0.3, 1.0])
def test_dps_matches_the_official_update_on_a_non_self_adjoint_operator(smooth_prior, blurred, zeta):
    """As on inpainting, but with A ≠ Aᵀ, m ≠ d and A 1 ≠ 1: the reference differentiates the
    matrix itself, so the gradient carries Mᵀ, and y is moved to [−1, 1] units by A 1."""
    M, _, pb, _ = blurred
    sig = [float(s) for s in DPS().default_sigmas(smooth_prior, 30)]
    ours = solve(pb, smooth_prior, DPS(zeta=zeta), sigmas=torch.tensor(sig),
                 generator=torch.Generator().manual_seed(5), progress=False).x_hat
    ref = _reference_dps_vp(smooth_prior, pb, sig, zeta, torch.Generator().manual_seed(5),
                            A=lambda x: x.flatten(1) @ M.T)
    assert torch.allclose(ours, ref, atol=1e-9), float((ours - ref).abs().max())


def test_dps_mean_approaches_exact_posterior_mean_under_blur_and_subsampling(smooth_prior, blurred):
    """As on inpainting, with a non-self-adjoint operator and m = d/4: the prior mean is 28 % off
    the exact posterior mean; the Monte Carlo error of a 64-sample mean alone is
    sqrt(tr Σ_post / 64) / ‖μ_post‖ ≈ 1.3 %."""
    _, _, pb, post = blurred
    res = solve(pb, smooth_prior, DPS(zeta=0.3), steps=200, num_samples=64,
                generator=torch.Generator().manual_seed(1), progress=False)
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    prior_err = float((smooth_prior.mean - post.mean).norm() / post.mean.norm())
    assert prior_err > 0.25 and err < 0.08, (err, prior_err)
