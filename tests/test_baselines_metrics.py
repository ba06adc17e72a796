import pytest
import torch

from invdiff.data.phantoms import body_phantoms
from invdiff.metrics import nrmse, psnr, ssim
from invdiff.operators import ct_sparse_view, gaussian_blur, mri_cartesian, random_inpainting, super_resolution
from invdiff.problem import Problem
from invdiff.linalg import cg
from invdiff.solvers.baselines import cgls, default_weight, fbp, tikhonov, tune_weight, tv, wiener, zero_filled


@pytest.fixture(scope="module")
def phantoms():
    return body_phantoms(2, 64, generator=torch.Generator().manual_seed(3))


def test_cg_solves_spd_system_batchwise():
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(20, 20, generator=g, dtype=torch.float64) for _ in range(3)]
    mats = [m @ m.T + 0.5 * torch.eye(20, dtype=torch.float64) for m in mats]
    b = torch.randn(3, 20, generator=g, dtype=torch.float64)
    x = cg(lambda v: torch.stack([m @ vi for m, vi in zip(mats, v)]), b, max_iter=200, tol=1e-12)
    ref = torch.stack([torch.linalg.solve(m, bi) for m, bi in zip(mats, b)])
    assert torch.allclose(x, ref, atol=1e-9)


def test_cg_warm_start_and_no_mutation():
    A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    b = torch.ones(1, 5, dtype=torch.float64)
    x0 = torch.full((1, 5), 0.3, dtype=torch.float64)
    x0c = x0.clone()
    x = cg(lambda v: v @ A, b, x0, max_iter=10)
    assert torch.allclose(x, 1 / torch.arange(1.0, 6.0, dtype=torch.float64)[None]) and torch.equal(x0, x0c)


def test_tikhonov_inpainting_closed_form(phantoms):
    op = random_inpainting(64, 0.5, generator=torch.Generator().manual_seed(0))
    p = Problem.simulate(phantoms, op, 0.02, generator=torch.Generator().manual_seed(1))
    lam = 0.3
    ref = op.mask * p.y / (1 + lam)  # (MᵀM + λI)⁻¹Mᵀy, M a 0/1 mask
    assert torch.allclose(tikhonov(p, lam), ref, atol=1e-5)


def test_wiener_matches_cg_tikhonov_gradient(phantoms):
    p = Problem.simulate(phantoms, gaussian_blur(64, 1.5), 0.01, generator=torch.Generator().manual_seed(1))
    lam = 0.01
    a = wiener(p, lam)
    b = tikhonov(p, lam, regularizer="gradient", iters=2000)
    assert float((a - b).norm() / a.norm()) < 2e-2  # boundary of ∇ differs (Neumann vs circular)
    with pytest.raises(ValueError, match="circulant"):
        wiener(Problem.simulate(phantoms, super_resolution(64, 2), 0.01))


def test_cgls_reduces_residual(phantoms):
    p = Problem.simulate(phantoms, ct_sparse_view(64, 16), 0.0)
    r0 = (p.physics.A(fbp(p)) - p.y).norm()
    r1 = (p.physics.A(cgls(p, iters=30)) - p.y).norm()
    assert r1 < 0.5 * r0


def test_tv_beats_linear_reconstructions_on_sparse_ct(phantoms):
    p = Problem.simulate(phantoms, ct_sparse_view(64, 16), 0.005, generator=torch.Generator().manual_seed(1))
    scores = {name: float(psnr(f(p).clamp(0, 1), phantoms).mean())
              for name, f in [("fbp", fbp), ("cgls", cgls), ("tv", tv)]}
    assert scores["tv"] > scores["cgls"] + 2 and scores["tv"] > scores["fbp"] + 4, scores


def test_tv_weight_matters_and_tuning_picks_the_best(phantoms):
    p = Problem.simulate(phantoms, mri_cartesian(64, 4, generator=torch.Generator().manual_seed(0)), 0.01,
                         generator=torch.Generator().manual_seed(1))
    grid = [default_weight("tv", 0.01) * f for f in (0.01, 1.0, 100.0)]
    best, scores = tune_weight(lambda q, lam: tv(q, lam, iters=150), [p], psnr, grid)
    assert best == grid[1] and scores[1] > max(scores[0], scores[2]) + 1
    assert scores[1] > float(psnr(zero_filled(p), phantoms).mean()) + 2


def test_baselines_do_not_mutate(phantoms):
    p = Problem.simulate(phantoms, ct_sparse_view(64, 8), 0.01)
    y0 = p.y.clone()
    for f in (fbp, cgls, tikhonov, tv):
        f(p)
    assert torch.equal(p.y, y0)


def test_metrics_against_skimage():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    for i in range(2):
        a, b = y[i, 0].numpy(), x[i, 0].numpy()
        assert abs(float(psnr(y, x)[i]) - peak_signal_noise_ratio(b, a, data_range=1.0)) < 1e-9
        ref = structural_similarity(b, a, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert abs(float(ssim(y, x)[i]) - ref) < 1e-9
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(nrmse(y, x), (y - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[:, :, :16])


def test_tv_is_deterministic_run_to_run():
    """TV's step sizes come from a power iteration; its start is seeded, so two calls agree exactly
    (it used to draw from the global generator: results moved by up to 1e-4 dB between runs)."""
    from invdiff import Problem
    from invdiff.operators import gaussian_blur
    from invdiff.solvers import tv

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pb = Problem.simulate(x, gaussian_blur((3, 32, 32), 2.0), 0.02, generator=torch.Generator().manual_seed(1))
    a = tv(pb, 1e-3, iters=50)
    torch.randn(5)  # the global generator moves on between the calls
    assert torch.equal(a, tv(pb, 1e-3, iters=50))
