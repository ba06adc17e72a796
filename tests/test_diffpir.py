import pytest
import torch

from invdiff import solve
from invdiff.solvers import SOLVERS
from invdiff.solvers.diffpir import DiffPIR

D64 = torch.float64
CG_TOL = 1e-6  # the relative residual at which DiffPIR's CG stops (invdiff.linalg.cg, tol=1e-6)


@pytest.fixture(scope="module")
def setting(smooth_prior, inpainting_problem):
    return (smooth_prior,) + inpainting_problem(0.6)






@pytest.fixture(scope="module")
def blurred(blur_subsample):
    """``(M, prior, problem, posterior)`` of the blur-then-subsample operator (conftest), sigma_y = 0.1:
    ρ_t = λ σ_y² / (4σ²) is of order one over σ ∈ [0.02, 0.3]."""
    return blur_subsample(0.1)


def test_data_step_is_the_exact_proximal_solution(setting):
    _, pb, _ = setting
    x0 = torch.rand(1, 1, 8, 8, dtype=D64, generator=torch.Generator().manual_seed(1))
    rho = 0.3
    m = pb.physics.mask
    exact = (m * pb.y + rho * x0) / (m + rho)  # (MᵀM + ρI)⁻¹(Mᵀy + ρ x0) for a 0/1 mask
    assert torch.allclose(DiffPIR().data_step(pb, x0, rho), exact, atol=1e-10)


@pytest.mark.parametrize("rho", [0.01, 0.3, 5.0])
def test_data_step_solves_the_normal_equations_of_a_non_self_adjoint_operator(blurred, rho):
    """(MᵀM + ρI) z = Mᵀy + ρ x0 solved densely; CG stopping at relative residual tol has
    ‖z − z*‖ ≤ tol ‖b‖ / λ_min(MᵀM + ρI) = tol ‖b‖ / ρ (MᵀM is singular: m < d)."""
    M, _, pb, _ = blurred
    x0 = torch.rand(1, 1, 8, 8, dtype=D64, generator=torch.Generator().manual_seed(1))
    b = pb.y @ M + rho * x0.flatten(1)
    exact = torch.linalg.solve(M.T @ M + rho * torch.eye(64, dtype=D64), b.T).T
    ours = DiffPIR().data_step(pb, x0, rho).flatten(1)
    assert float((ours - exact).norm()) <= CG_TOL * float(b.norm()) / rho


def _reference_diffpir(prior, y, M, sigma_y, sigmas, lam, zeta, generator):
    """DiffPIR (Zhu et al. 2023, Alg. 1, η = 0) as the official code writes it: VP iterate x_t of
    [−1, 1] images, σ̄_t = sqrt((1 − ᾱ_t)/ᾱ_t), ρ_t = λ σ_y² / σ̄_t² with σ_y in [0, 1] units, the
    data step on [0, 1] images solved densely, then
    x_{t−1} = sqrt(ᾱ') x̃0 + sqrt(1 − ᾱ') (sqrt(1 − ζ) ε̂ + sqrt(ζ) ε).

    Returns the [0, 1] image and a bound on how far CG's inexact data steps can move it: each
    step's error ‖z − z*‖ ≤ tol ‖b‖ / ρ enters x' = (1 − q) z + q x + … (q ∈ [0, 1]) and the
    Gaussian denoiser and the proximal map are non-expansive, so the errors add up at most."""
    d = M.shape[1]
    abar = [1 / (1 + (2 * s) ** 2) for s in sigmas]  # σ̄ = 2σ: the [−1, 1] image's noise is twice ours
    eps0 = torch.randn((1, 1, 8, 8), generator=generator, dtype=D64)  # solve()'s x_T draw
    x_t = abar[0] ** 0.5 * (2 * sigmas[0] * eps0)  # u_T = 2 x_T − 1 = 2 σ_0 ε (prior mid-range 0.5)
    bound = 0.0
    for i in range(len(sigmas) - 1):
        a, a_next = abar[i], abar[i + 1]
        x0_u = 2 * prior.denoise((x_t / a**0.5 + 1) / 2, sigmas[i]) - 1
        sbar2 = (1 - a) / a
        rho = lam * max(sigma_y, 1e-3) ** 2 / sbar2
        b = (y @ M + rho * (x0_u.flatten(1) + 1) / 2).T
        z = torch.linalg.solve(M.T @ M + rho * torch.eye(d, dtype=D64), b).T.reshape(x0_u.shape)
        bound += CG_TOL * float(b.norm()) / rho
        z_u = 2 * z - 1
        eps_hat = (x_t - a**0.5 * z_u) / (1 - a) ** 0.5
        noise = torch.randn(x_t.shape, generator=generator, dtype=D64)
        x_t = a_next**0.5 * z_u + (1 - a_next) ** 0.5 * ((1 - zeta) ** 0.5 * eps_hat + zeta**0.5 * noise)
    return (x_t / abar[-1] ** 0.5 + 1) / 2, bound


@pytest.mark.parametrize("lam, zeta", [(1.0, 0.3), (7.0, 0.8)])
def test_diffpir_matches_the_official_update_on_a_non_self_adjoint_operator(smooth_prior, blurred, lam, zeta):
    """On inpainting A = Aᵀ, m = d and ζ = 1 hide a wrong ρ and a wrong mix of the re-noising;
    here ρ_t spans 0.03–6 (λ = 1) and 0.2–44 (λ = 7) against singular values² 0.11–0.23, so
    both terms of the data step matter, and ζ ∉ {0, 1}. Same noise draws as solve()."""
    M, _, pb, _ = blurred
    sig = [float(s) for s in torch.linspace(0.3, 0.02, 12, dtype=D64)] + [0.0]
    ours = solve(pb, smooth_prior, DiffPIR(lam=lam, zeta=zeta), sigmas=torch.tensor(sig),
                 generator=torch.Generator().manual_seed(5), progress=False).x_hat
    ref, bound = _reference_diffpir(smooth_prior, pb.y, M, pb.sigma_y, sig, lam, zeta,
                                    torch.Generator().manual_seed(5))
    err = float((ours - ref).norm())
    assert err <= bound + 1e-12, (err, bound)


def test_diffpir_mean_is_near_the_exact_posterior_mean(setting):
    prior, pb, post = setting
    res = solve(pb, prior, DiffPIR.preset("random_inpainting"), steps=100, num_samples=32,
                generator=torch.Generator().manual_seed(2), progress=False)
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    base = min(float((pb.physics.A_dagger(pb.y) - post.mean).norm() / post.mean.norm()),
               float((prior.mean - post.mean).norm() / post.mean.norm()))
    assert err < 0.25 * base, (err, base)
    assert res.nfe == 100 and res.vjp == 0 and res.samples.shape == (32, 1, 1, 8, 8)


def test_diffpir_mean_is_near_the_exact_posterior_mean_under_blur_and_subsampling(blur_subsample):
    """Same criterion as on inpainting, on a non-self-adjoint operator with m = d/4 and ζ ≠ 1 (the
    super-resolution preset). The Monte Carlo error of a 32-sample mean alone is
    sqrt(tr Σ_post / 32) / ‖μ_post‖ ≈ 0.018, well inside the bound 0.25 × 0.28 = 0.07."""
    _, prior, pb, post = blur_subsample(0.02)
    res = solve(pb, prior, DiffPIR.preset("super_resolution"), steps=100, num_samples=32,
                generator=torch.Generator().manual_seed(2), progress=False)
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    base = min(float((pb.physics.A_dagger(pb.y) - post.mean).norm() / post.mean.norm()),
               float((prior.mean - post.mean).norm() / post.mean.norm()))
    assert err < 0.25 * base, (err, base)


def test_diffpir_presets_and_bad_input():
    assert DiffPIR.preset("gaussian_blur").zeta == 0.1 and DiffPIR.preset("super_resolution").zeta == 0.25
    with pytest.raises(ValueError, match="zeta"):
        DiffPIR(zeta=2.0)
    with pytest.raises(ValueError, match="no DiffPIR preset"):
        DiffPIR.preset("ct_sparse_view")
    assert SOLVERS["diffpir"] is DiffPIR


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 31, 30), (2, 17, 19)])
def test_blur_data_step_runs_cg_on_fourier_coefficients_with_the_spatial_iterates(shape):
    """DiffPIR's CG for a circular blur runs on the image's Fourier coefficients (elementwise AᵀA):
    the same iterates as CG on images, for even and odd widths (the half-spectrum weights)."""
    from invdiff.linalg import cg
    from invdiff.operators import gaussian_blur, motion_blur
    from invdiff.operators.spectral import data_prox

    g = torch.Generator().manual_seed(0)
    for op in (gaussian_blur(shape, 2.0), motion_blur(shape, 9.0, 30.0)):
        x = torch.rand(2, *shape, generator=g, dtype=torch.float64)
        y = op.A(x) + 0.01 * torch.randn(op.A(x).shape, generator=g, dtype=torch.float64)
        z = torch.rand(x.shape, generator=g, dtype=torch.float64)
        for mu, iters in [(1e-6, 1), (1e-6, 5), (1e-2, 1), (1e-2, 5), (1.0, 30)]:
            got = data_prox(op, y, z, mu, cg_iters=iters, closed_form=False)
            ref = cg(lambda v: op.A_adjoint(op.A(v)) + mu * v, op.A_adjoint(y) + mu * z, z, max_iter=iters, tol=1e-6)
            moved = (ref - z).abs().max()
            assert (got - ref).abs().max() < 1e-4 * moved, (shape, mu, iters)


def test_clip_clamps_the_denoised_image_to_the_priors_range_before_the_data_step(setting):
    """The official code's ``clip_denoised=True``: x̂0 clamped to the prior's data range, then the
    data step. A prior whose denoiser overshoots shows the difference; off by default."""
    prior, pb, _ = setting

    class Overshooting(type(prior)):
        def denoise(self, x, sigma):
            d = super().denoise(x, sigma)
            return 8 * (d - d.mean()) + 0.5  # beyond the range on both sides

    over = Overshooting.__new__(Overshooting)
    over.__dict__.update(prior.__dict__)
    over.data_range = (0.0, 1.0)
    x = torch.rand(1, 1, 8, 8, dtype=D64, generator=torch.Generator().manual_seed(3))
    sigma, rho_of = 0.2, lambda s: 1.0 * max(pb.sigma_y, 1e-3) ** 2 / (4 * s**2)
    raw = over.denoise(x, sigma)
    assert raw.min() < 0 and raw.max() > 1
    state = DiffPIR(zeta=1.0).init(pb, over, x, sigma, None)
    for clip, x0 in ((True, raw.clamp(0, 1)), (False, raw)):
        new, _ = DiffPIR(zeta=1.0, clip=clip).step(state, sigma, 0.0, pb, over, torch.Generator().manual_seed(0))
        assert torch.allclose(new.x0, DiffPIR().data_step(pb, x0, rho_of(sigma)), atol=1e-12), clip
    assert DiffPIR().clip is False
