"""Classical baselines (``tikhonov``, ``cgls``, ``wiener``, ``tv``, ``wavelet_l1``, ``bm3d_restore``)
against independent closed forms on tiny problems.

Every reference here is computed in the test from the documented definition: dense normal
equations solved with NumPy, the exact conjugate-gradient iterate as the minimiser over a
Krylov space (built by Arnoldi with re-orthogonalisation), the periodic-gradient Wiener
minimiser as a dense linear solve, PyWavelets transforms for the wavelet terms, and the
plug-and-play HQS loop written out with the ``bm3d`` package itself.
"""

import math

import numpy as np
import pytest
import torch

from invdiff import Problem
from invdiff.operators import dense_operator, kernel_blur, mask_inpainting
from invdiff.solvers.baselines import cgls, default_weight, tikhonov, wiener

SIGMAS = (0.0, 5e-4, 0.02, 0.3)


# ---------------------------------------------------------------- helpers (independent references)


def _matrix_with_singular_values(s, d, seed):
    """An (len(s), d) matrix U diag(s) Vᵀ with random orthonormal U, V (float64)."""
    g = torch.Generator().manual_seed(seed)
    m = len(s)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return (U * torch.as_tensor(s, dtype=torch.float64)) @ V[:, :m].T


def _krylov_cg_iterate(M, b, x0, k):
    """The k-th CG iterate for the SPD system M x = b from x0, by its defining property: the minimiser
    of ½xᵀMx − bᵀx over x0 + span{r0, M r0, …, M^{k−1} r0}, r0 = b − M x0 (Hestenes & Stiefel)."""
    r0 = b - M @ x0
    Q = np.zeros((len(b), k))
    q = r0 / np.linalg.norm(r0)
    for j in range(k):
        for _ in range(2):  # Gram-Schmidt twice: an orthonormal basis to rounding
            q = q - Q[:, :j] @ (Q[:, :j].T @ q)
        Q[:, j] = q / np.linalg.norm(q)
        q = M @ Q[:, j]
    return x0 + Q @ np.linalg.solve(Q.T @ M @ Q, Q.T @ r0)


def _forward_diff_matrix(h, w, periodic):
    """[∂_H; ∂_W] on one h×w channel: x[i+1] − x[i] (wrapping around when periodic, else 0 on the
    last row/column)."""
    n = h * w
    idx = np.arange(n).reshape(h, w)
    G = np.zeros((2 * n, n))
    for i in range(h):
        for j in range(w):
            r = idx[i, j]
            if periodic or i + 1 < h:
                G[r, idx[(i + 1) % h, j]] += 1
                G[r, r] -= 1
            if periodic or j + 1 < w:
                G[n + r, idx[i, (j + 1) % w]] += 1
                G[n + r, r] -= 1
    return G


def _dense_problem(s, shape, sigma, seed):
    d = int(np.prod(shape))
    M = _matrix_with_singular_values(s, d, seed)
    op = dense_operator(shape, M)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand((1,) + tuple(shape), generator=g, dtype=torch.float64)
    y = op.A(x) + sigma * torch.randn((1, len(s)), generator=g, dtype=torch.float64)
    return Problem(op, y, sigma), M.numpy(), y.numpy().ravel()


# ---------------------------------------------------------------- default weights


@pytest.mark.parametrize("sigma", SIGMAS)
def test_default_weights_follow_the_documented_map_rules(sigma):
    """Module doc: λ = σ²/0.3² (Tikhonov, L = I), σ²/0.1² (L = ∇ and Wiener), σ²/0.05 (TV), σ floored at 1e-3."""
    s2 = max(sigma, 1e-3) ** 2
    assert default_weight("tikhonov", sigma) == pytest.approx(s2 / 0.09, rel=1e-12)
    assert default_weight("tikhonov_gradient", sigma) == pytest.approx(s2 / 0.01, rel=1e-12)
    assert default_weight("wiener", sigma) == pytest.approx(s2 / 0.01, rel=1e-12)
    assert default_weight("tv", sigma) == pytest.approx(s2 / 0.05, rel=1e-12)
    with pytest.raises(ValueError, match="no weight rule"):
        default_weight("wavelet", sigma)


# ---------------------------------------------------------------- Tikhonov and CGLS


@pytest.mark.parametrize("regularizer", ["identity", "gradient"])
def test_tikhonov_is_the_dense_normal_equation_solution(regularizer):
    """(AᵀA + λ LᵀL) x = Aᵀy with L = I or forward differences (zero last difference), explicit and
    default λ (σ_y²/0.3² resp. σ_y²/0.1²), and λ = 0 (plain least squares) accepted."""
    shape = (2, 3, 4)
    s = np.linspace(0.5, 2.0, 24)
    pb, M, y = _dense_problem(s, shape, 0.05, seed=3)
    Gc = _forward_diff_matrix(3, 4, periodic=False)  # one channel; channels are independent
    n = 12
    LtL = np.eye(24) if regularizer == "identity" else np.zeros((24, 24))
    if regularizer == "gradient":
        for c in range(2):
            LtL[c * n:(c + 1) * n, c * n:(c + 1) * n] = Gc.T @ Gc
    rule = 0.05**2 / (0.09 if regularizer == "identity" else 0.01)
    for lam, want_lam in ((0.7, 0.7), (None, rule), (0.0, 0.0)):
        want = np.linalg.solve(M.T @ M + want_lam * LtL, M.T @ y).reshape((1,) + shape)
        got = tikhonov(pb, lam, regularizer=regularizer).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        tikhonov(pb, -1e-3, regularizer=regularizer)


def test_tikhonov_iterations_are_cg_steps_with_default_100():
    """``iters`` CG steps on the normal equations from 0: ``iters=8`` is the 8th Krylov minimiser of
    (AᵀA + λI) x = Aᵀy, and the default equals ``iters=100`` on a system (κ ≈ 10⁵) that 100 steps do
    not solve (so 101 would differ)."""
    shape = (1, 12, 12)
    s = np.geomspace(1e-2, 3.0, 144)
    pb, M, y = _dense_problem(s, shape, 0.0, seed=5)
    lam = 1e-6
    N = M.T @ M + lam * np.eye(144)
    want8 = _krylov_cg_iterate(N, M.T @ y, np.zeros(144), 8)
    np.testing.assert_allclose(tikhonov(pb, lam, iters=8).numpy().ravel(), want8, rtol=0, atol=1e-10)
    default = tikhonov(pb, lam)
    assert torch.equal(default, tikhonov(pb, lam, iters=100))
    assert (default - tikhonov(pb, lam, iters=101)).abs().max() > 1e-6


def test_tikhonov_converges_to_tight_tolerance():
    """κ ≈ 1000 but only 40 iterations needed for 1e-8: the result is exact to ≲ 1e-8·κ, far below the
    error CG's generic tolerance 1e-6 would leave."""
    shape = (1, 8, 8)
    s = np.geomspace(0.03, 1.0, 64)
    pb, M, y = _dense_problem(s, shape, 0.0, seed=6)
    lam = 1e-4
    want = np.linalg.solve(M.T @ M + lam * np.eye(64), M.T @ y).reshape(1, *shape)
    got = tikhonov(pb, lam, iters=400).numpy()
    assert np.abs(got - want).max() < 2e-6 * np.abs(want).max()


def test_cgls_is_cg_on_the_normal_equations_default_30_steps():
    """``cgls`` = ``iters`` CG steps on AᵀA x = Aᵀy from 0 or from ``x0``: the Krylov minimisers of
    ½xᵀAᵀAx − yᵀAx over x0 + K_k; the default is ``iters=30`` (κ(AᵀA) = 400: not converged, 31 differs)."""
    shape = (1, 8, 8)
    s = np.geomspace(0.05, 1.0, 64)
    pb, M, y = _dense_problem(s, shape, 0.0, seed=7)
    N, b = M.T @ M, M.T @ y
    np.testing.assert_allclose(cgls(pb, iters=12).numpy().ravel(), _krylov_cg_iterate(N, b, np.zeros(64), 12),
                               rtol=0, atol=1e-9)
    x0 = np.random.default_rng(0).random(64)
    want0 = _krylov_cg_iterate(N, b, x0, 4)
    got0 = cgls(pb, iters=4, x0=torch.from_numpy(x0).reshape(1, *shape)).numpy().ravel()
    np.testing.assert_allclose(got0, want0, rtol=0, atol=1e-10)
    default = cgls(pb)
    assert torch.equal(default, cgls(pb, iters=30))
    assert (default - cgls(pb, iters=31)).abs().max() > 1e-6


def test_cgls_runs_to_tolerance_1e10():
    """A well-conditioned problem (κ(AᵀA) = 4): 30 CG steps reach the least-squares solution to the
    documented tolerance 1e-10 (relative residual), not to CG's default 1e-6."""
    shape = (1, 8, 8)
    s = np.geomspace(0.5, 1.0, 64)
    pb, M, y = _dense_problem(s, shape, 0.0, seed=8)
    want = np.linalg.solve(M.T @ M, M.T @ y)
    got = cgls(pb).numpy().ravel()
    assert np.abs(got - want).max() < 1e-9 * np.abs(want).max()


# ---------------------------------------------------------------- Wiener


def _circular_conv(kernel, shape):
    """y[i, j] = Σ_ab k[a, b] x[i − a, j − b] (indices mod H, W), per channel, in float64 by rolls: a
    circulant operator written here, independent of the library's blurs."""
    import deepinv

    k = torch.as_tensor(kernel, dtype=torch.float64)

    def A(v):
        return sum(float(k[a, b]) * torch.roll(v, (a, b), dims=(-2, -1))
                   for a in range(k.shape[0]) for b in range(k.shape[1]))

    def At(v):
        return sum(float(k[a, b]) * torch.roll(v, (-a, -b), dims=(-2, -1))
                   for a in range(k.shape[0]) for b in range(k.shape[1]))

    op = deepinv.physics.LinearPhysics(A=A, A_adjoint=At)
    op.img_shape = tuple(shape)
    return op


def _blur_matrix(op, shape):
    """The operator as a dense matrix, column by column (black-box application to unit images)."""
    d = int(np.prod(shape))
    E = torch.eye(d, dtype=torch.float64).reshape((d,) + tuple(shape))
    return op.A(E).reshape(d, -1).T.numpy()


KERNEL = torch.tensor([[0.1, 0.2, 0.05], [0.3, 0.5, 0.1], [0.0, 0.1, 0.2]], dtype=torch.float64)


@pytest.mark.parametrize("batch", [1, 3])
def test_wiener_is_the_periodic_gradient_tikhonov_minimiser(batch):
    """``wiener`` = argmin ‖k ∗ x − y‖² + λ‖∇x‖² with periodic forward differences (|G|² = Σ 4 sin²(πf)),
    solved here as a dense linear system on a non-square 2-channel image; default λ = σ²/0.1²."""
    shape = (2, 8, 10)
    op = _circular_conv(KERNEL, shape)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch,) + shape, generator=g, dtype=torch.float64)
    y = op.A(x) + 0.05 * torch.randn((batch,) + shape, generator=g, dtype=torch.float64)
    pb = Problem(op, y, 0.05)
    A = _blur_matrix(op, shape)
    Gc = _forward_diff_matrix(8, 10, periodic=True)
    GtG = np.kron(np.eye(2), Gc.T @ Gc)
    for lam, want_lam in ((0.3, 0.3), (None, 0.05**2 / 0.01)):
        want = np.linalg.solve(A.T @ A + want_lam * GtG, A.T @ y.reshape(batch, -1).numpy().T).T
        got = wiener(pb, lam)
        assert got.shape == (batch,) + shape and got.dtype == torch.float64
        np.testing.assert_allclose(got.reshape(batch, -1).numpy(), want, rtol=0, atol=1e-11)


def test_wiener_circulant_check_is_relative_to_the_operator_scale():
    """The circulant check is relative: a strong circular blur (gain 10⁴, float32 or float64) passes,
    and a blur plus a non-shift-invariant term of relative size 1e-2 is refused."""
    import deepinv

    shape = (1, 8, 8)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((1,) + shape, generator=g, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        op = kernel_blur(shape, 1e4 * KERNEL.to(dtype))
        y = op.A(x.to(dtype))
        out = wiener(Problem(op, y, 0.01), 1e-3)
        assert torch.isfinite(out).all()
        assert float((op.A(out) - y).norm() / y.norm()) < 1e-3

    base = _circular_conv(KERNEL, shape)
    ramp = torch.linspace(0, 1, 64, dtype=torch.float64).reshape(shape)  # a spatially varying gain
    bad = deepinv.physics.LinearPhysics(A=lambda v: base.A(v) + 1e-2 * ramp * v,
                                        A_adjoint=lambda v: base.A_adjoint(v) + 1e-2 * ramp * v)
    bad.img_shape = shape
    with pytest.raises(ValueError, match="circulant"):
        wiener(Problem(bad, base.A(x), 0.01), 1e-3)


# ---------------------------------------------------------------- BM3D: denoiser, pull–push fill, PnP-HQS

import bm3d as bm3d_pkg  # noqa: E402

from invdiff.solvers.bm3d import (_pull_push_fill, bm3d_applicable, bm3d_denoise, bm3d_restore,  # noqa: E402
                                  initial_estimate)

OPP = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, -0.5], [0.25, -0.5, 0.25]])


def _fast_profile():
    """The documented ``profile="fast"``: the package's default ("np") profile with ``nf = 0``, one thread."""
    p = bm3d_pkg.BM3DProfile()
    p.nf = 0
    p.num_threads = 1
    return p


def _stage(name):
    return bm3d_pkg.BM3DStages.ALL_STAGES if name == "all" else bm3d_pkg.BM3DStages.HARD_THRESHOLDING


def _ref_denoise(img, sigma, stage, profile=None):
    """One (C, H, W) float64 image through the bm3d package: grey directly, RGB in the opponent space
    (rows a_c of OPP) with per-channel noise σ‖a_c‖₂, back by OPP⁻¹."""
    profile = _fast_profile() if profile is None else profile
    if img.shape[0] == 1:
        return bm3d_pkg.bm3d(img[0], sigma, profile=profile, stage_arg=_stage(stage))[None]
    opp = np.einsum("kc,chw->hwk", OPP, img)
    sig = [sigma * np.linalg.norm(r) for r in OPP]
    out = bm3d_pkg.bm3d(opp, sig, profile=profile, stage_arg=_stage(stage))
    return np.einsum("ck,hwk->chw", np.linalg.inv(OPP), out)


def _noisy(shape, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = shape[-2:]
    clean = 0.3 + 0.4 * (torch.arange(w, dtype=torch.float64)[None, :] > w // 2) + 0 * torch.zeros(h, 1)
    return (clean + sigma * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("stage", ["all", "ht"])
def test_bm3d_denoise_is_the_documented_package_call(channels, stage):
    """Grey: ``bm3d.bm3d`` with the fast profile and the chosen stages; RGB: the same in the opponent
    colour space with σ‖a_c‖₂ per channel. The result keeps the input's dtype."""
    x = _noisy((2, channels, 16, 16), 0.1, seed=channels)
    got = bm3d_denoise(x, 0.1, stage=stage)
    assert got.dtype == torch.float64 and got.shape == x.shape
    for b in range(2):
        np.testing.assert_allclose(got[b].numpy(), _ref_denoise(x[b].numpy(), 0.1, stage), rtol=0, atol=1e-12)
    got32 = bm3d_denoise(x.float(), 0.1, stage=stage)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), got.numpy(), rtol=0, atol=1e-5)


def test_bm3d_denoise_np_profile_and_default_stage():
    """``profile="np"`` is the package's default profile (exact-variance spectra, one thread);
    ``stage`` defaults to ``"all"``."""
    x = _noisy((1, 1, 16, 16), 0.1, seed=4)
    p = bm3d_pkg.BM3DProfile()
    p.num_threads = 1
    want = _ref_denoise(x[0].numpy(), 0.1, "all", profile=p)
    np.testing.assert_allclose(bm3d_denoise(x, 0.1, profile="np")[0].numpy(), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bm3d_denoise(x, 0.1)[0].numpy(), _ref_denoise(x[0].numpy(), 0.1, "all"),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.0, -0.1, float("nan")])
def test_bm3d_denoise_sigma_must_be_positive(sigma):
    """σ > 0 (open bound): 0, negative and NaN are refused, naming ``sigma``."""
    with pytest.raises(ValueError, match=r"^sigma must be a finite number > 0"):
        bm3d_denoise(torch.full((1, 1, 16, 16), 0.5), sigma)


def test_bm3d_applicable_bounds():
    """At least 16×16 pixels (16 itself is fine), 1 or 3 channels; leading batch dimensions are ignored."""
    assert bm3d_applicable((1, 16, 16)) is True
    assert bm3d_applicable((3, 16, 40)) is True
    assert bm3d_applicable((2, 3, 16, 16)) is True
    assert isinstance(bm3d_applicable((1, 15, 16)), str)
    assert isinstance(bm3d_applicable((1, 16, 15)), str)
    assert isinstance(bm3d_applicable((2, 16, 16)), str)


def test_pull_push_fill_by_hand():
    """4×4 grey image, one hole at (1, 1): per the docstring, level 2 is the mean of the observed pixels,
    level 1 is e₁ = n₁ + (1 − d₁)·e₂ on the 2×2 block means, and the hole takes the pixel-centred
    bilinear interpolation of e₁ at (1, 1) (input coordinates (0.25, 0.25)); observed pixels keep y."""
    y = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4) ** 1.5 / 10
    m = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    m[..., 1, 1] = 0
    got = _pull_push_fill(y * m, m)
    Y, M = (y * m)[0, 0].numpy(), m[0, 0].numpy()
    e2 = Y.sum() / M.sum()
    n1 = Y.reshape(2, 2, 2, 2).mean(axis=(1, 3))
    d1 = M.reshape(2, 2, 2, 2).mean(axis=(1, 3))
    e1 = n1 + (1 - d1) * e2
    w = np.array([0.75, 0.25])
    hole = w @ e1 @ w
    want = Y.copy()
    want[1, 1] = hole
    np.testing.assert_allclose(got[0, 0].numpy(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("hw", [(5, 7), (16, 16), (9, 4)])
@pytest.mark.parametrize("channels", [1, 3])
def test_pull_push_fill_reproduces_constants_with_large_holes(hw, channels):
    """Observed value c everywhere except a hole covering a whole quadrant (and odd sides): every hole is
    filled with c (the average of the observed pixels at any scale)."""
    h, w = hw
    c = torch.tensor([0.3, 0.6, 0.9][:channels], dtype=torch.float64).reshape(1, channels, 1, 1)
    y = c.expand(2, channels, h, w).clone()
    m = torch.ones(2, channels, h, w, dtype=torch.float64)
    m[..., : (h + 1) // 2, : (w + 1) // 2] = 0
    m[1, ..., -1, -1] = 0
    got = _pull_push_fill(y * m, m)
    np.testing.assert_allclose(got.numpy(), y.numpy(), rtol=0, atol=1e-12)


def _ref_hqs(y, m, z0, sigma_d, *, iters, rho, sigma_start, final_stage, data=True):
    """Plug-and-play HQS of the module docstring for inpainting, per image: μ_k = ρσ_d²/σ_k², x_k =
    argmin ½‖m⊙x − y‖² + μ_k/2‖x − z‖² = (m⊙y + μ_k z)/(m + μ_k) (or x = z with ``data=False``),
    z_k = BM3D(x_k; σ_k) (hard thresholding, all stages at the last step), σ_k geometric from
    max(σ_start, σ_d) to σ_d (just σ_d when K = 1)."""
    s1 = max(sigma_start, sigma_d)
    sig = [s1 * (sigma_d / s1) ** (k / (iters - 1)) for k in range(iters)] if iters > 1 else [sigma_d]
    z = z0.copy()
    for k, s in enumerate(sig):
        mu = rho * sigma_d**2 / s**2
        x = (m * y + mu * z) / (m + mu) if data else z
        z = _ref_denoise(x, s, final_stage if k == iters - 1 else "ht")
    return z


@pytest.fixture(scope="module")
def inpaint16():
    g = torch.Generator().manual_seed(11)
    x = _noisy((2, 1, 16, 16), 0.0, seed=3)
    mask = (torch.rand(16, 16, generator=g) < 0.6).to(torch.float64)
    op = mask_inpainting((1, 16, 16), mask)
    y = op.A(x) + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64) * mask
    z0 = torch.rand(x.shape, generator=g, dtype=torch.float64)
    return Problem(op, y, 0.05), mask.numpy(), z0


def _check_hqs(pb, m, z0, got, **kw):
    for b in range(pb.y.shape[0]):
        want = _ref_hqs(pb.y[b].numpy(), m, z0[b].numpy(), **kw)
        np.testing.assert_allclose(got[b].numpy(), want, rtol=0, atol=1e-5)  # bm3d works in float32


def test_bm3d_restore_defaults_follow_the_documented_hqs(inpaint16):
    """Defaults: K = 30, ρ = 0.25, σ_1 = 0.2, σ_d = max(σ_y, 1e-3), Wiener stage at the end; from ``x0``."""
    pb, m, z0 = inpaint16
    got = bm3d_restore(pb, x0=z0)
    _check_hqs(pb, m, z0, got, sigma_d=0.05, iters=30, rho=0.25, sigma_start=0.2, final_stage="all")


@pytest.mark.parametrize("iters", [1, 2, 4])
def test_bm3d_restore_schedule_and_options(inpaint16, iters):
    """Explicit σ_d, ρ, σ_1 and ``final_stage="ht"``; K = 1 uses σ_d alone, K = 2 goes σ_1 → σ_d."""
    pb, m, z0 = inpaint16
    got = bm3d_restore(pb, 0.08, iters=iters, rho=0.7, sigma_start=0.3, final_stage="ht", x0=z0)
    _check_hqs(pb, m, z0, got, sigma_d=0.08, iters=iters, rho=0.7, sigma_start=0.3, final_stage="ht")
    if iters == 4:  # σ_1 below σ_d: constant σ_d
        got = bm3d_restore(pb, 0.08, iters=iters, sigma_start=0.01, x0=z0)
        _check_hqs(pb, m, z0, got, sigma_d=0.08, iters=iters, rho=0.25, sigma_start=0.08, final_stage="all")


def test_bm3d_restore_cg_iters_zero_is_pure_denoising():
    """A CG data step (reflect-boundary blur: no closed form) with ``cg_iters = 0`` leaves x = z (CG is
    warm-started at z): K plain BM3D steps from x0. The default ``cg_iters`` is 30 (equal to the
    explicit value, unlike 31)."""
    g = torch.Generator().manual_seed(5)
    op = kernel_blur((1, 16, 16), KERNEL, boundary="reflect")
    x = _noisy((1, 1, 16, 16), 0.0, seed=6)
    pb = Problem(op, op.A(x) + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64), 0.02)
    z0 = x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    got = bm3d_restore(pb, iters=3, cg_iters=0, x0=z0)
    want = _ref_hqs(None, None, z0[0].numpy(), 0.02, iters=3, rho=0.25, sigma_start=0.2, final_stage="all",
                    data=False)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=0, atol=1e-5)
    default = bm3d_restore(pb, iters=2, sigma_start=0.02, rho=1e-3, x0=z0)
    assert torch.equal(default, bm3d_restore(pb, iters=2, sigma_start=0.02, rho=1e-3, cg_iters=30, x0=z0))
    assert (default - bm3d_restore(pb, iters=2, sigma_start=0.02, rho=1e-3, cg_iters=31, x0=z0)).abs().max() > 1e-9


@pytest.mark.parametrize("kwargs, match", [
    ({"sigma_d": 0.0}, r"^sigma_d must be a finite number > 0"),
    ({"rho": 0.0}, r"^rho must be a finite number > 0"),
    ({"rho": -1.0}, r"^rho must be a finite number > 0"),
    ({"sigma_start": 0.0}, r"^sigma_start must be a finite number > 0"),
    ({"iters": 0}, r"^iters must be an integer >= 1"),
    ({"cg_iters": -1}, r"^cg_iters must be an integer >= 0"),
    ({"final_stage": "wiener"}, r"final_stage must be 'all' or 'ht'"),
    ({"x0": torch.full((2, 1, 16, 16), float("nan"), dtype=torch.float64)}, r"^x0 contains"),
])
def test_bm3d_restore_validation(inpaint16, kwargs, match):
    """Documented bounds: σ_d, ρ, σ_1 > 0 (open), K >= 1, cg_iters >= 0, final_stage in {all, ht}, finite x0."""
    pb, _, _ = inpaint16
    with pytest.raises(ValueError, match=match):
        bm3d_restore(pb, **kwargs)


def test_bm3d_restore_default_start_is_the_initial_estimate(inpaint16):
    """Without ``x0`` the start is :func:`initial_estimate` (the pull–push fill for inpainting)."""
    pb, m, _ = inpaint16
    start = initial_estimate(pb)
    np.testing.assert_allclose(start.numpy(), _pull_push_fill(pb.y, torch.from_numpy(m).expand_as(pb.y)).numpy(),
                               rtol=0, atol=1e-12)
    assert torch.equal(bm3d_restore(pb, iters=2), bm3d_restore(pb, iters=2, x0=start))


# ---------------------------------------------------------------- wavelet-ℓ1

import pywt  # noqa: E402

from invdiff.solvers.wavelet import wavelet_l1, wavelet_l1_objective  # noqa: E402


@pytest.fixture(scope="module")
def wl_problem():
    g = torch.Generator().manual_seed(21)
    x = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    mask = (torch.rand(16, 16, generator=g) < 0.7).to(torch.float64)
    op = mask_inpainting((1, 16, 16), mask)
    y = op.A(x) + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64) * mask
    return Problem(op, y, 0.05), mask, x


def _ref_objective(pb, mask, x, lam, wavelet="db4", levels=3):
    """½‖m⊙x − y‖² + λ Σ |detail coefficients| (PyWavelets, periodization), per image."""
    out = []
    for b in range(x.shape[0]):
        r = (mask * x[b, 0] - pb.y[b, 0]).numpy()
        coeffs = pywt.wavedec2(x[b, 0].numpy(), wavelet, mode="periodization", level=levels)
        l1 = sum(np.abs(c).sum() for band in coeffs[1:] for c in band)
        out.append(0.5 * (r**2).sum() + lam * l1)
    return np.array(out)


@pytest.mark.filterwarnings("ignore:Level value")
def test_wavelet_objective_against_pywavelets(wl_problem):
    """F(x) per image with the default λ = σ_y²/0.1, an explicit λ, the default 3 db4 levels, and levels=1."""
    pb, mask, x = wl_problem
    np.testing.assert_allclose(wavelet_l1_objective(pb, x).numpy(), _ref_objective(pb, mask, x, 0.05**2 / 0.1),
                               rtol=1e-8)
    np.testing.assert_allclose(wavelet_l1_objective(pb, x, 0.7).numpy(), _ref_objective(pb, mask, x, 0.7),
                               rtol=1e-8)
    np.testing.assert_allclose(wavelet_l1_objective(pb, x, 0.7, wavelet="haar", levels=1).numpy(),
                               _ref_objective(pb, mask, x, 0.7, "haar", 1), rtol=1e-8)
    with pytest.raises(ValueError, match=r"^lam must be a finite number >= 0"):
        wavelet_l1_objective(pb, x, -0.1)


@pytest.mark.parametrize("hw, levels", [((12, 16), 3), ((16, 12), 3), ((16, 16), 0)])
def test_wavelet_levels_and_sides_are_checked(wl_problem, hw, levels):
    """``levels >= 1`` and both sides divisible by 2**levels."""
    pb, _, _ = wl_problem
    with pytest.raises(ValueError, match="levels"):
        wavelet_l1_objective(pb, torch.zeros((1, 1) + hw, dtype=torch.float64), 0.1, levels=levels)


@pytest.mark.parametrize("kwargs, match", [
    ({"lam": -1.0}, r"^lam must be a finite number >= 0"),
    ({"iters": 0}, r"^iters must be an integer >= 1"),
    ({"prox_iters": -1}, r"^prox_iters must be an integer >= 0"),
    ({"box": (0.5, 0.5)}, r"lo < hi"),
])
def test_wavelet_l1_validation(wl_problem, kwargs, match):
    """λ >= 0, iters >= 1, prox_iters >= 0, a box with lo < hi (an empty-interior box is refused)."""
    pb, _, _ = wl_problem
    with pytest.raises(ValueError, match=match):
        wavelet_l1(pb, **kwargs)


@pytest.mark.filterwarnings("ignore:Level value")
def test_wavelet_l1_defaults_and_dtype(wl_problem):
    """Defaults: db4, 3 levels, prox_iters = 5 (equal to the explicit values, unlike 4 levels or 6 prox
    iterations); a float32 problem gives a float32 estimate."""
    pb, mask, _ = wl_problem
    lam = 0.02
    default = wavelet_l1(pb, lam, iters=3)
    assert torch.equal(default, wavelet_l1(pb, lam, wavelet="db4", levels=3, iters=3, prox_iters=5))
    for other in ({"levels": 4}, {"prox_iters": 6}):
        assert (default - wavelet_l1(pb, lam, iters=3, **other)).abs().max() > 1e-12, other
    op32 = mask_inpainting((1, 16, 16), mask.float())
    out32 = wavelet_l1(Problem(op32, pb.y.float(), 0.05), lam, iters=3)
    assert out32.dtype == torch.float32


# ---------------------------------------------------------------- TV by PDHG (iterate-exact reference)

from invdiff.solvers.baselines import tv  # noqa: E402


def _grad_volume(D, C, H, W, axes):
    """Forward differences (zero last difference) of a (D, C, H, W) volume flattened in C order, one block
    of rows per axis: ∂_H, ∂_W (and ∂_D first for ``axes="xyz"``)."""
    n = D * C * H * W
    idx = np.arange(n).reshape(D, C, H, W)
    blocks = []
    for ax in ((0, 2, 3) if axes == "xyz" else (2, 3)):
        G = np.zeros((n, n))
        for pos in np.ndindex(D, C, H, W):
            if pos[ax] + 1 < (D, C, H, W)[ax]:
                nxt = list(pos)
                nxt[ax] += 1
                G[idx[pos], idx[tuple(nxt)]] = 1.0
                G[idx[pos], idx[pos]] = -1.0
        blocks.append(G)
    return blocks


def _ref_pdhg(M, y, x0, lam, iters, box=(0.0, 1.0), r=10.0, axes="xy", shape=None):
    """Chambolle–Pock as documented in ``tv``: K = [A; ∇], ‖K‖² ≤ ‖A‖² + 4k (k = number of axes),
    τ = r·0.99/‖K‖, σ = 0.99/(r‖K‖); p ← (p + σ(A x̄ − y))/(1 + σ), q ← Π_{‖·‖₂≤λ}(q + σ∇x̄) per voxel,
    x⁺ ← Π_box(x − τ(Aᵀp + ∇ᵀq)), x̄ = 2x⁺ − x. ``M`` acts on one slice; y is (D, m)."""
    Dn = y.shape[0]
    blocks = _grad_volume(Dn, *shape, axes)
    k = len(blocks)
    step = 0.99 / np.sqrt(np.linalg.norm(M, 2) ** 2 + 4.0 * k)
    tau, sig = r * step, step / r
    clip = (lambda v: np.clip(v, *box)) if box is not None else (lambda v: v)
    x = clip(x0.reshape(-1).copy())
    xb = x.copy()
    p = np.zeros_like(y)
    q = [np.zeros_like(x) for _ in blocks]
    for _ in range(iters):
        p = (p + sig * ((xb.reshape(Dn, -1) @ M.T) - y)) / (1 + sig)
        q = [qi + sig * (G @ xb) for qi, G in zip(q, blocks)]
        mag = np.sqrt(sum(qi**2 for qi in q))
        q = [qi / np.maximum(mag / lam, 1.0) for qi in q]
        xn = clip(x - tau * ((p @ M).reshape(-1) + sum(G.T @ qi for qi, G in zip(q, blocks))))
        xb = 2 * xn - x
        x = xn
    return x.reshape((Dn,) + tuple(shape))


@pytest.fixture(scope="module")
def tv_problem():
    shape = (2, 4, 3)
    d = 24
    s = np.concatenate([[2.5], np.linspace(0.3, 1.0, d - 1)])  # a separated top singular value
    pb, M, _ = _dense_problem(s, shape, 0.05, seed=31)
    return pb, M, shape


@pytest.mark.parametrize("iters", [1, 6])
def test_tv_iterates_are_the_documented_pdhg(tv_problem, iters):
    """``tv`` after N iterations equals N steps of the documented Chambolle–Pock iteration, from
    x₀ = Π_box(A†y) (A square: A⁻¹y) or a given ``x0``, with and without a box, r = 10 or 1."""
    pb, M, shape = tv_problem
    y = pb.y.numpy()
    x0 = np.linalg.solve(M, y[0])
    np.testing.assert_allclose(tv(pb, 0.3, iters=iters).numpy(), _ref_pdhg(M, y, x0, 0.3, iters, shape=shape),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(tv(pb, 0.3, iters=iters, box=None, step_ratio=1.0).numpy(),
                               _ref_pdhg(M, y, x0, 0.3, iters, box=None, r=1.0, shape=shape), rtol=0, atol=1e-10)
    start = np.random.default_rng(1).random(24) * 1.4 - 0.2
    got = tv(pb, 0.3, iters=iters, box=(0.1, 0.8), x0=torch.from_numpy(start).reshape(1, *shape))
    np.testing.assert_allclose(got.numpy(), _ref_pdhg(M, y, start, 0.3, iters, box=(0.1, 0.8), shape=shape),
                               rtol=0, atol=1e-10)


def test_tv_defaults_300_iterations_default_weight(tv_problem):
    """Defaults: λ = σ_y²/0.05, 300 iterations, box [0, 1], r = 10."""
    pb, M, shape = tv_problem
    y = pb.y.numpy()
    want = _ref_pdhg(M, y, np.linalg.solve(M, y[0]), 0.05**2 / 0.05, 300, shape=shape)
    np.testing.assert_allclose(tv(pb).numpy(), want, rtol=0, atol=1e-9)


def test_tv_3d_volume_iterates(tv_problem):
    """``axes="xyz"``: the batch is one volume (D, C, H, W), differences across slices too, ‖K‖² ≤ ‖A‖² + 12."""
    _, M, shape = tv_problem
    op = dense_operator(shape, torch.from_numpy(M))
    g = torch.Generator().manual_seed(4)
    x = torch.rand((3,) + shape, generator=g, dtype=torch.float64)
    y = op.A(x) + 0.05 * torch.randn((3, 24), generator=g, dtype=torch.float64)
    pb = Problem(op, y, 0.05)
    x0 = np.linalg.solve(M, y.numpy().T).T
    want = _ref_pdhg(M, y.numpy(), x0, 0.2, 5, axes="xyz", shape=shape)
    np.testing.assert_allclose(tv(pb, 0.2, iters=5, axes="xyz").numpy(), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kwargs, match", [({"lam": -0.1}, "lam must be >= 0"), ({"axes": "z"}, "axes must be")])
def test_tv_validation(tv_problem, kwargs, match):
    """λ >= 0 (0 allowed: plain box-constrained least squares) and axes in {xy, xyz}."""
    pb, _, _ = tv_problem
    with pytest.raises(ValueError, match=match):
        tv(pb, **({"lam": 0.1} | kwargs))
    assert torch.isfinite(tv(pb, 0.0, iters=2)).all()


# ---------------------------------------------------------------- wavelet-ℓ1: MFISTA iterate-exact reference


def _shrink(u, t, wavelet="db4", levels=3):
    """Wᵀ soft(W u, t) on the detail coefficients (PyWavelets, periodization), one (H, W) image."""
    c = pywt.wavedec2(u, wavelet, mode="periodization", level=levels)
    c = [c[0]] + [tuple(np.sign(b) * np.maximum(np.abs(b) - t, 0) for b in band) for band in c[1:]]
    return pywt.waverec2(c, wavelet, mode="periodization")


def _ref_mfista(m, y, x0, lam, iters, box=(0.0, 1.0), prox_iters=5):
    """Beck–Teboulle monotone FISTA as documented in ``wavelet_l1`` for A = diag(m) (‖A‖² = 1, so
    L = 1.01 with the documented 1 % margin), one (H, W) image; the prox with a box is the Dykstra-like
    alternation of soft-thresholding and projection (``prox_iters`` rounds), or threshold-then-project."""
    L = 1.01
    tau = lam / L
    clip = (lambda v: np.clip(v, *box)) if box is not None else (lambda v: v)

    def prox(u):
        if box is None:
            return _shrink(u, tau)
        if prox_iters == 0:
            return clip(_shrink(u, tau))
        x, p, q = u, np.zeros_like(u), np.zeros_like(u)
        for _ in range(prox_iters):
            s = _shrink(x + p, tau)
            p = x + p - s
            x = clip(s + q)
            q = s + q - x
        return x

    def F(x):
        c = pywt.wavedec2(x, "db4", mode="periodization", level=3)
        return 0.5 * ((m * x - y) ** 2).sum() + lam * sum(np.abs(b).sum() for band in c[1:] for b in band)

    x = clip(x0)
    v, t, fx = x, 1.0, F(x)
    for _ in range(iters):
        z = prox(v - m * (m * v - y) / L)
        fz = F(z)
        x_new = z if fz <= fx else x
        fx = min(fz, fx)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        v = x_new + (t / t_new) * (z - x_new) + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


@pytest.mark.filterwarnings("ignore:Level value")
@pytest.mark.parametrize("opts, iters", [({}, 6), ({"prox_iters": 0}, 6), ({"box": None}, 15),
                                         ({"box": (0.2, 0.7), "prox_iters": 2}, 15)])
def test_wavelet_l1_iterates_are_the_documented_mfista(wl_problem, opts, iters):
    """``wavelet_l1`` after N iterations from ``x0`` equals N steps of the documented MFISTA, per image
    (at this λ, with 15 iterations, the monotone safeguard rejects some steps, in one image only without a
    box). Longer runs with the [0, 1] box reach near-ties F(z) ≈ F(x) that rounding may decide either way."""
    pb, mask, x = wl_problem
    start = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    lam = 0.3
    got = wavelet_l1(pb, lam, iters=iters, x0=start, **opts)
    for b in range(2):
        want = _ref_mfista(mask.numpy(), pb.y[b, 0].numpy(), start[b, 0].numpy(), lam, iters, **opts)
        np.testing.assert_allclose(got[b, 0].numpy(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("factor", [2, 4])
def test_initial_estimate_of_super_resolution_keeps_the_mean(factor):
    """For downsampling by ``f`` the start is ``f² Aᵀy``: the filter sums to 1 and Aᵀ spreads each
    measurement over f² pixels, so the start has the mean of ``y`` (f = 4 tells f² from 2f)."""
    from invdiff.operators import super_resolution

    op = super_resolution((1, 32, 32), factor)
    y = op.A(torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(factor)))
    start = initial_estimate(Problem(op, y, 0.01))
    assert start.shape == (1, 1, 32, 32)
    assert float(start.mean()) == pytest.approx(float(y.mean()), rel=1e-5)
