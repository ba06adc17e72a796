import pytest
import torch

from invdiff import Problem, solve
from invdiff.operators import ct_sparse_view, dense_operator
from invdiff.priors import GaussianPrior
from invdiff.solvers import SOLVERS
from invdiff.solvers.ddrm import DDRM

D64 = torch.float64


def test_noiseless_ddrm_reproduces_the_measurement_exactly(smooth_prior, inpainting_problem):
    pb, _ = inpainting_problem(0.5)
    clean = Problem(pb.physics, pb.physics.A(pb.x_true), 0.0, pb.x_true)
    res = solve(clean, smooth_prior, DDRM(), steps=20, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.allclose(clean.physics.A(res.x_hat), clean.y, atol=1e-10)


def test_ddrm_mean_approaches_the_exact_posterior_mean(smooth_prior, inpainting_problem):
    """DDRM is approximate; its mean error must be small and fall with the number of steps."""
    pb, post = inpainting_problem(0.5)

    def err(steps):
        res = solve(pb, smooth_prior, DDRM(), steps=steps, num_samples=128, generator=torch.Generator().manual_seed(1),
                    progress=False)
        return float((res.x_hat - post.mean).norm() / post.mean.norm()), res

    coarse, _ = err(20)
    fine, res = err(100)
    base = min(float((pb.physics.A_dagger(pb.y) - post.mean).norm() / post.mean.norm()),
               float((smooth_prior.mean - post.mean).norm() / post.mean.norm()))
    assert fine < 0.2 * base and fine < coarse, (coarse, fine, base)
    assert (res.nfe, res.vjp) == (100, 0)


def test_ddrm_on_fft_blur_gives_real_images_and_fits_the_data(blur_problem):
    prior, op, pb = blur_problem
    x = pb.x_true
    res = solve(pb, prior, DDRM(), steps=20, generator=torch.Generator().manual_seed(2), progress=False)
    assert res.x_hat.dtype == D64 and torch.isfinite(res.x_hat).all()
    assert float((op.A(res.x_hat) - pb.y).norm()) < 0.5 * float((op.A(torch.full_like(x, 0.5)) - pb.y).norm())


def test_ddrm_refuses_operators_without_svd():
    ct = Problem.simulate(torch.rand(1, 1, 16, 16), ct_sparse_view(16, 4), 0.01)
    prior = GaussianPrior(torch.full((1, 16, 16), 0.5), torch.full((1, 16, 16), 0.05))
    with pytest.raises(ValueError, match="SVD"):
        solve(ct, prior, DDRM(), steps=3)
    from invdiff.operators import mri_cartesian

    mri = Problem.simulate(torch.rand(1, 1, 16, 16), mri_cartesian(16, 4.0, generator=torch.Generator().manual_seed(0)),
                           0.01)
    with pytest.raises(ValueError, match="real-input MRI"):  # deepinv's SVD of MRI acts on complex images
        solve(mri, prior, DDRM(), steps=3)
    with pytest.raises(ValueError, match="eta"):
        DDRM(eta=1.5)
    assert SOLVERS["ddrm"] is DDRM


# --- DDRM's output law, exactly ------------------------------------------------------------
#
# With a Gaussian prior N(μ, C) the exact denoiser D(x, σ) = μ + C (C + σ² I)⁻¹ (x − μ) is affine,
# and every case of the DDRM update (Kawar et al. 2022, eqs. 7–8, VE form) is affine in the
# iterate, the denoised estimate, ȳ and fresh noise. DDRM's output for a fixed y is therefore
# Gaussian; its mean and covariance follow by propagating (m, S) ↦ (P m + q, P S Pᵀ + N) through
# the steps. The recursion below is written from the paper, in matrix form, with its own SVD of
# M; it shares no code with the solver.


def _svd_problem():
    """d = 16, m = 10: singular values from 2 down to 0.02 (σ_y/s from 0.025 to 2.5, so every
    observed coordinate starts above its noise level and ends below it), six zero singular values."""
    g = torch.Generator().manual_seed(0)
    d, m = 16, 10
    L = torch.randn(d, d, generator=g, dtype=D64) * 0.05
    prior = GaussianPrior(torch.full((1, 1, d), 0.5, dtype=D64), L @ L.T + 0.01 * torch.eye(d, dtype=D64))
    U = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=D64))[0]
    V = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D64))[0]
    s = torch.logspace(0.3, -1.7, m, dtype=D64)
    M = U @ torch.diag(s) @ V[:, :m].T
    x = prior.sample(1, generator=g)
    return prior, M, Problem.simulate(x, dense_operator((1, 1, d), M), 0.05, generator=g)


def ddrm_law(prior, M, y, sigma_y, eta, eta_b, sigmas):
    """Mean and covariance of DDRM's output (VE start x_T = mid-range + σ_0 ε), propagated exactly."""
    mu, C = prior.mean.reshape(-1), prior.cov
    d = mu.numel()
    eye = torch.eye(d, dtype=D64)
    U, s, Vh = torch.linalg.svd(M, full_matrices=True)
    V, r = Vh.T, s.numel()
    sv = torch.cat([s, s.new_zeros(d - r)])
    ybar = torch.cat([(U.T @ y.reshape(-1)) / s, s.new_zeros(d - r)])   # ȳ = Σ⁻¹ Uᵀ y
    sbar = torch.cat([sigma_y / s, s.new_full((d - r,), float("inf"))])  # σ_y / s_i
    m, S = torch.full((d,), sum(prior.data_range) / 2, dtype=D64), sigmas[0] ** 2 * eye
    for sig, nxt in zip(sigmas[:-1], sigmas[1:]):
        W = C @ torch.linalg.inv(C + sig**2 * eye)  # x̂0 = (I − W) μ + W x
        k = (1 - eta**2) ** 0.5 * nxt
        # new_i = a_i x̄_i + b_i x̂0̄_i + e_i ȳ_i + n_i z_i
        a, b, e, n = (torch.zeros(d, dtype=D64) for _ in range(4))
        for i in range(d):
            if sv[i] == 0:                  # unobserved
                a[i], b[i], n[i] = k / sig, 1 - k / sig, eta * nxt
            elif nxt < sbar[i]:              # below the measurement's noise
                b[i], e[i], n[i] = 1 - k / sbar[i], k / sbar[i], eta * nxt
            else:                            # above it
                b[i], e[i] = 1 - eta_b, eta_b
                n[i] = max(nxt**2 - eta_b**2 * sbar[i] ** 2, 0.0) ** 0.5
        P = V @ torch.diag(a) @ V.T + V @ torch.diag(b) @ V.T @ W
        q = V @ (b * (V.T @ ((eye - W) @ mu)) + e * ybar)
        m, S = P @ m + q, P @ S @ P.T + V @ torch.diag(n**2) @ V.T
    return m, 0.5 * (S + S.T)


@pytest.mark.parametrize("eta,eta_b", [(0.5, 1.0), (0.3, 0.7)])
def test_ddrm_samples_follow_their_exact_law(eta, eta_b):
    """n = 32768 samples against the exact Gaussian law N(m, S) of DDRM's output.

    Tolerances are the sampling error under that law (the law is exact, so nothing else):
    * mean: each coordinate's z = (x̄_i − m_i)/sqrt(S_ii/n) is N(0, 1); max |z| over 16 < 5
      fails by chance with probability < 16 · 6e-7;
    * variance: s_i²/S_ii has standard deviation sqrt(2/(n−1)) = 0.0078; the bound is 5 of them;
    * whitened samples w = L⁻¹(x − m) (S = L Lᵀ) are N(0, I): n ‖w̄‖² ~ χ²_16 (bound 60: 7.8 sd
      above its mean 16) and n ‖cov(w) − I‖²_F ≈ 2 χ²_k, k = d(d+1)/2 = 136 (each of the k
      distinct entries has variance ≈ 1/n off the diagonal, counted twice, and 2/n on it); the
      bound (1.5)² · 2k puts χ²_136 at 306, 10 sd above its mean. The whitened covariance sees
      the few directions an above-noise-level slip moves (σ̄ for σ̄², η_b for η_b²), which the
      per-coordinate checks miss; n is sized so that those slips exceed the bound twofold.
    The problem has zero singular values (the unobserved case), σ_y > 0 with every observed
    coordinate passing from above to below its noise level σ_y/s_i (asserted), and 0 < η < 1,
    so each case of the update and its noise is exercised; η_b < 1 in the second run.
    """
    prior, M, pb = _svd_problem()
    solver = DDRM(eta=eta, eta_b=eta_b)
    steps, n, d = 20, 32768, 16
    sigmas = solver.default_sigmas(prior, steps).tolist()
    sbar = pb.sigma_y / torch.linalg.svdvals(M)
    assert all(((torch.tensor(sigmas[1:]) >= v).any() and (torch.tensor(sigmas[1:]) < v).any()) for v in sbar)
    m, S = ddrm_law(prior, M, pb.y, pb.sigma_y, eta, eta_b, sigmas)
    res = solve(pb, prior, solver, steps=steps, num_samples=n, generator=torch.Generator().manual_seed(3),
                progress=False)
    x = res.samples.reshape(n, d)
    z = (x.mean(0) - m) / (S.diagonal() / n).sqrt()
    assert float(z.abs().max()) < 5, z
    var_ratio = x.var(0) / S.diagonal()
    assert float((var_ratio - 1).abs().max()) < 5 * (2 / (n - 1)) ** 0.5, var_ratio
    L = torch.linalg.cholesky(S)
    w = torch.linalg.solve_triangular(L, (x - m).T, upper=False).T
    assert float(n * w.mean(0).square().sum()) < 60
    k = d * (d + 1) / 2
    cov_err = torch.linalg.matrix_norm(torch.cov(w.T) - torch.eye(d, dtype=D64))
    assert float(cov_err) < 1.5 * (2 * k / n) ** 0.5, float(cov_err)
