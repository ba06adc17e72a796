"""DiffusionMBIR: slice-stack prior, coupled CG, ADMM-TV along z, and a case where z coupling must help."""

import pytest
import torch

from invdiff import Problem, solve
from invdiff.data import body_volume
from invdiff.metrics import plane_metrics
from invdiff.operators import FiniteDifference, random_inpainting
from invdiff.priors import GaussianPrior, SliceStackPrior
from invdiff.solvers import MBIR, SOLVERS
from invdiff.linalg import cg
from invdiff.solvers.mbir import soft_threshold

D64 = torch.float64


@pytest.fixture(scope="module")
def slice_prior():
    idx = torch.arange(8, dtype=D64)
    k = torch.exp(-(idx[:, None] - idx[None, :]) ** 2 / (2 * 2.0**2))
    return GaussianPrior(torch.full((1, 8, 8), 0.5, dtype=D64), 0.04 * torch.kron(k, k) + 1e-4 * torch.eye(64, dtype=D64))


class _Spy(GaussianPrior):
    """Records the largest batch the 2D prior is called with."""

    largest = 0

    def _denoise(self, x, sigma):
        _Spy.largest = max(_Spy.largest, x.shape[0])
        return super()._denoise(x, sigma)


def test_slice_stack_equals_the_2d_prior_and_respects_the_chunk(slice_prior):
    spy = _Spy(slice_prior.mean, slice_prior.cov)
    stack = SliceStackPrior(spy, chunk_size=3)
    x = torch.rand(10, 1, 8, 8, dtype=D64, generator=torch.Generator().manual_seed(0))
    sigma = torch.linspace(0.1, 1.0, 10, dtype=D64)
    assert torch.allclose(stack.denoise(x, sigma), slice_prior.denoise(x, sigma), atol=1e-12)
    assert _Spy.largest == 3


def test_slice_stack_bad_input(slice_prior):
    with pytest.raises(ValueError, match="chunk_size"):
        SliceStackPrior(slice_prior, 0)
    stack = SliceStackPrior(slice_prior, 4)
    with pytest.raises(ValueError, match="5D"):
        stack.denoise(torch.rand(1, 1, 4, 8, 8, dtype=D64), 0.5)
    with pytest.raises(ValueError, match="slices do not fit the 2D prior"):
        stack.denoise(torch.rand(4, 1, 16, 16, dtype=D64), 0.5)


def test_coupled_cg_solves_a_system_across_the_batch():
    """batched=False: (I + ρ DᵀD) couples slices; the solution matches a dense solve."""
    D, rho = FiniteDifference(0), 3.0
    b = torch.randn(6, 1, 2, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    x = cg(lambda v: v + rho * D.A_adjoint(D.A(v)), b, max_iter=100, tol=1e-12, batched=False)
    n = b.numel()
    basis = torch.eye(n, dtype=D64).reshape(n, 6, 1, 2, 2)
    M = torch.stack([(e + rho * D.A_adjoint(D.A(e))).reshape(-1) for e in basis], 1)
    assert torch.allclose(x.reshape(-1), torch.linalg.solve(M, b.reshape(-1)), atol=1e-9)


def test_soft_threshold():
    v = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5])
    assert torch.equal(soft_threshold(v, 0.5), torch.tensor([-1.5, 0.0, 0.0, 0.0, 1.0]))


def test_z_coupling_helps_on_a_volume_constant_along_z(slice_prior):
    """Eight identical slices, noisy half-missing pixels: TV along z pools the slices' evidence,
    so MBIR (λ > 0) must beat the same solver without coupling (λ = 0) on the coronal and
    sagittal planes — and on the axial ones."""
    g = torch.Generator().manual_seed(0)
    slice_ = slice_prior.sample(1, generator=g).clamp(0.05, 1)
    vol = slice_.repeat(8, 1, 1, 1)
    op = random_inpainting((1, 8, 8), 0.5, generator=g).double()
    pb = Problem.simulate(vol, op, 0.1, generator=g)
    prior = SliceStackPrior(slice_prior, 4)

    def run(lam):
        res = solve(pb, prior, MBIR(lam=lam, rho=2.0, cg_iters=5), steps=30, generator=torch.Generator().manual_seed(1),
                    progress=False)
        return plane_metrics(res.x_hat.clamp(0, 1), vol, threshold=0.0)

    coupled, independent = run(0.1), run(0.0)
    for plane in ("axial", "coronal", "sagittal"):
        assert coupled[plane][0] > independent[plane][0] + 1.0, (plane, coupled, independent)


def test_mbir_contract_and_bad_input(slice_prior):
    assert SOLVERS["mbir"] is MBIR
    assert MBIR.preset("mri_cartesian").lam == 0.005 and MBIR().cost(10) == (10, 0)
    assert MBIR(corrector=True).cost(10) == (20, 0)
    for bad in (dict(tv="xz"), dict(placement="x1"), dict(rho=0.0), dict(cg_iters=0), dict(lam=-1.0)):
        with pytest.raises(ValueError):
            MBIR(**bad)
    vol = torch.full((4, 1, 8, 8), 0.5, dtype=D64)
    pb = Problem.simulate(vol, random_inpainting((1, 8, 8), 0.5).double(), 0.05)
    with pytest.raises(ValueError, match="num_samples=1"):
        solve(pb, SliceStackPrior(slice_prior, 2), MBIR(), steps=2, num_samples=2, progress=False)
    res = solve(pb, SliceStackPrior(slice_prior, 2), MBIR(corrector=True, tv="xyz"), steps=3,
                generator=torch.Generator().manual_seed(0), progress=False)
    assert res.x_hat.shape == (4, 1, 8, 8) and (res.nfe, res.vjp) == (6, 0)
    res = solve(pb, SliceStackPrior(slice_prior, 2), MBIR(placement="xt"), steps=3,  # the paper's placement
                generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.isfinite(res.x_hat).all()


def test_body_volume_varies_along_z_and_is_seeded():
    a = body_volume(12, 32, generator=torch.Generator().manual_seed(4))
    b = body_volume(12, 32, generator=torch.Generator().manual_seed(4))
    assert a.shape == (12, 1, 32, 32) and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert float((a[0] - a[-1]).abs().mean()) > 0.01  # the anatomy changes from slice to slice
    with pytest.raises(ValueError, match="depth"):
        body_volume(0)


@pytest.mark.parametrize("a, b", [(0.2, 0.9), (0.5, 0.55)])
def test_admm_reaches_the_tv_z_minimiser(a, b):
    """Two slices of one pixel, A = I: argmin ½(v1−a)² + ½(v2−b)² + λ|v2−v1| is known in closed form
    (shrink the gap by 2λ, or average when the gap is below 2λ)."""
    from invdiff.operators import dense_operator

    lam = 0.1
    op = dense_operator((1, 1, 1), torch.ones(1, 1, dtype=D64))
    pb = Problem(op, torch.tensor([[a], [b]], dtype=D64), 0.01)
    solver = MBIR(lam=lam, rho=2.0, admm_iters=400, cg_iters=5)
    v0 = torch.zeros(2, 1, 1, 1, dtype=D64)
    z = torch.zeros_like(solver.difference.A(v0))
    v, _, _ = solver.admm(pb, v0, z, z.clone(), scale=1.0)
    gap = b - a
    expected = [a + lam, b - lam] if abs(gap) > 2 * lam else [(a + b) / 2] * 2
    assert torch.allclose(v.reshape(-1), torch.tensor(expected, dtype=D64), atol=1e-6), v.reshape(-1)


def test_volume_layout_errors(slice_prior):
    from invdiff.operators import volume_ct

    op = volume_ct(16, 4)
    with pytest.raises(ValueError, match="slices on the first axis"):
        op.A(torch.rand(1, 1, 4, 16, 16))
    vol = torch.full((4, 1, 16, 16), 0.5)
    pb = Problem.simulate(vol, op, 0.01)
    with pytest.raises(ValueError, match="problem and prior do not match"):
        solve(pb, SliceStackPrior(GaussianPrior(torch.full((1, 8, 8), 0.5), torch.full((1, 8, 8), 0.04)), 2), MBIR(),
              steps=2, progress=False)


def test_chunked_operator_matches_the_whole_volume():
    from invdiff.operators import chunked, volume_ct, volume_mri

    op = volume_ct(16, 4)
    w = torch.rand(7, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    c = chunked(op, 3)
    assert torch.allclose(c.normal(w), op.A_adjoint(op.A(w)), atol=1e-6)
    assert torch.allclose(c.A(w), op.A(w), atol=1e-6)
    assert torch.allclose(c.A_adjoint(op.A(w)), op.A_adjoint(op.A(w)), atol=1e-6)
    # per-slice parameters (one MRI mask per slice) tie the operator to the whole stack
    mri = volume_mri(7, 16, 4.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(chunked(mri, 3).normal(w), mri.A_adjoint(mri.A(w)))
    with pytest.raises(ValueError, match="chunk"):
        chunked(op, 0)


# ---------------------------------------------------------------------------------------------------------------
# Value checks of the maths: λ relative to ‖A‖², the corrector, each placement, MRI.


@pytest.mark.parametrize("c", [3.0, 0.5])
def test_admm_lambda_is_relative_to_the_operator_norm(c):
    """λ and ρ are relative to ‖A‖² (module doc): with ``A = c·Q`` per slice (Q orthogonal, 4 pixels),
    ½‖y − A v‖² + λ‖A‖²‖D_z v‖₁ = c² [½‖v − u‖² + λ‖D_z v‖₁] with u_k = Qᵀ y_k / c, so pixel by pixel the
    two-slice closed form (shrink the gap by 2λ, or average) with targets u — the same answer for every c.
    The solver estimates ‖A‖ itself (``init``); no scale is passed by hand."""
    from invdiff.operators import dense_operator

    lam = 0.1
    Q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=D64))[0]
    op = dense_operator((1, 2, 2), c * Q)
    u = torch.tensor([[0.2, 0.5, 0.8, 0.7], [0.9, 0.55, 0.3, 0.72]], dtype=D64)  # gaps 0.7, 0.05, −0.5, 0.02
    pb = Problem(op, c * u @ Q.T, 0.01)  # y_k = c Q u_k
    prior = SliceStackPrior(GaussianPrior(torch.full((1, 2, 2), 0.5, dtype=D64),
                                          torch.full((1, 2, 2), 0.04, dtype=D64)), 2)
    solver = MBIR(lam=lam, rho=2.0, admm_iters=400, cg_iters=5)
    v0 = torch.zeros(2, 1, 2, 2, dtype=D64)
    state = solver.init(pb, prior, v0, 1.0, None)
    v, _, _ = solver.admm(pb, v0, state.z, state.u, state.scale, aty=state.aty)
    a, b = u
    step = lam * torch.sign(b - a)
    shrunk = torch.stack([a + step, b - step])
    averaged = ((a + b) / 2).expand(2, -1)
    expected = torch.where((b - a).abs() > 2 * lam, shrunk, averaged)
    assert torch.allclose(v.reshape(2, 4), expected, atol=1e-6), (v.reshape(2, 4), expected)


def _smooth_cov(n: int) -> torch.Tensor:
    """The slice prior's covariance, built here: separable squared exponential (length 2 px), var 0.04."""
    idx = torch.arange(n, dtype=D64)
    k = torch.exp(-(idx[:, None] - idx[None, :]) ** 2 / (2 * 2.0**2))
    return 0.04 * torch.kron(k, k) + 1e-4 * torch.eye(n * n, dtype=D64)


def _exact_denoiser(cov):
    """E[x0 | x0 + σ ε = x] = m + C (C + σ² I)⁻¹ (x − m) for N(0.5, C), by a dense solve."""
    def denoise(x, sigma):
        r = (x - 0.5).reshape(x.shape[0], -1).T
        shrunk = cov @ torch.linalg.solve(cov + sigma**2 * torch.eye(cov.shape[0], dtype=D64), r)
        return (0.5 + shrunk.T).reshape(x.shape)
    return denoise


def _exact_score(cov):
    """∇ log p_σ(x) = −(C + σ² I)⁻¹ (x − m) for the noisy marginal N(0.5, C + σ² I)."""
    def score(x, sigma):
        r = (x - 0.5).reshape(x.shape[0], -1).T
        return (-torch.linalg.solve(cov + sigma**2 * torch.eye(cov.shape[0], dtype=D64), r)).T.reshape(x.shape)
    return score


def _ddim_sigmas(sigma, sigma_next, eta):
    """σ_up = min(σ', η σ' √((σ² − σ'²)/σ²)), σ_down = √(σ'² − σ_up²) (DDIM(η), VE form)."""
    up = min(sigma_next, eta * sigma_next * ((sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - up**2) ** 0.5, up


@pytest.mark.parametrize("corrector", [False, True])
@pytest.mark.parametrize("placement", ["x0", "xt"])
def test_mbir_step_is_the_documented_update(slice_prior, placement, corrector):
    """One step on a 4-slice volume with exact Gaussian slices, noisy inpainting and λ = 0 (the data step is
    then CG on AᵀA v = Aᵀy from its start; AᵀA is the 0/1 mask, so CG sets the observed pixels to y and keeps
    the others: v = M y + (1 − M) start, after one CG iteration). Expected, computed here:

    * corrector: x ← x + ε s + √(2ε) z, s the exact score at σ, ε = 2 (r ‖z‖/‖s‖)² (norms over the volume);
    * ``x0``: v = data step on x̂0 = D(x, σ); x' = v + σ_down (x − x̂0)/σ + σ_up ξ, and the state's x̂0 is v;
    * ``xt``: x' = data step on x̂0 + σ_down (x − x̂0)/σ, then + σ_up ξ; the state's x̂0 is D(x, σ).

    The noises z (corrector) and ξ (re-noising) are the generator's first draws, in that order."""
    g = torch.Generator().manual_seed(0)
    vol = slice_prior.sample(4, generator=g)
    op = random_inpainting((1, 8, 8), 0.5, generator=g).double()
    pb = Problem.simulate(vol, op, 0.05, generator=g, unit_range=False)
    prior = SliceStackPrior(slice_prior, 2)
    sigma, sigma_next, eta, snr = 2.0, 0.7, 0.85, 0.16
    x = 0.5 + sigma * torch.randn(vol.shape, generator=g, dtype=D64)
    solver = MBIR(lam=0.0, placement=placement, corrector=corrector, eta=eta, snr=snr)
    state = solver.init(pb, prior, x, sigma, torch.Generator().manual_seed(99))
    new, _ = solver.step(state, sigma, sigma_next, pb, prior, torch.Generator().manual_seed(5))

    cov = _smooth_cov(8)
    denoise, score = _exact_denoiser(cov), _exact_score(cov)
    draws = torch.Generator().manual_seed(5)
    if corrector:
        z = torch.randn(x.shape, generator=draws, dtype=D64)
        s = score(x, sigma)
        eps = 2 * (snr * z.norm() / s.norm()) ** 2
        x = x + eps * s + (2 * eps) ** 0.5 * z
    xi = torch.randn(x.shape, generator=draws, dtype=D64)
    down, up = _ddim_sigmas(sigma, sigma_next, eta)
    assert up > 0 and down > 0
    mask = op.mask

    def data_step(start):
        return mask * pb.y + (1 - mask) * start

    x0 = denoise(x, sigma)
    if placement == "x0":
        v = data_step(x0)
        expected, expected_x0 = v + down * (x - x0) / sigma + up * xi, v
    else:
        expected, expected_x0 = data_step(x0 + down * (x - x0) / sigma) + up * xi, x0
    assert torch.allclose(new.x0, expected_x0, atol=1e-9), float((new.x0 - expected_x0).abs().max())
    assert torch.allclose(new.x, expected, atol=1e-9), float((new.x - expected).abs().max())


def test_corrector_keeps_the_noisy_prior_stationary():
    """Langevin steps x ← x + ε ∇log p_σ(x) + √(2ε) z leave p_σ invariant up to the step's bias. For an
    isotropic Gaussian p_σ = N(m, v I) and ε = 2 (r‖z‖/‖s‖)², the chain's variance v∞ solves
    v∞ = (1 − ε/v)² v∞ + 2ε with ε ≈ 2 r² v²/v∞ (‖s‖² ≈ n v∞/v², ‖z‖² ≈ n), i.e. v∞ = (1 + r²) v. Started from
    exact draws of p_σ, 200 steps must keep the mean at m and the variance at (1 + r²) v, within 5 standard
    errors of n = 16384 samples. (A flipped score sign multiplies the spread by ≈ 1 + ε/v per step.)"""
    from invdiff.priors import GaussianPrior

    sigma, v0 = 0.3, 0.04
    v = v0 + sigma**2
    prior = GaussianPrior(torch.full((1, 8, 8), 0.5, dtype=D64), torch.full((1, 8, 8), v0, dtype=D64))
    solver = MBIR(corrector=True)
    g = torch.Generator().manual_seed(0)
    x = 0.5 + v**0.5 * torch.randn(256, 1, 8, 8, generator=g, dtype=D64)
    for _ in range(200):
        x = solver._corrector(prior, x, sigma, g)
    n = x.numel()
    assert abs(float(x.mean()) - 0.5) < 5 * (v * 1.03 / n) ** 0.5
    ratio = float(((x - 0.5) ** 2).mean()) / v
    assert abs(ratio - (1 + solver.snr**2)) < 5 * (2 / n) ** 0.5 * ratio, ratio


def _slice_matrix(op, n):
    """Dense matrix (measurements × n²) of a single-slice operator, from its action on the standard basis."""
    with torch.no_grad():
        return op.A(torch.eye(n * n, dtype=D64).reshape(n * n, 1, n, n)).reshape(n * n, -1).T


@pytest.mark.parametrize("sigma_next", [0.5, 0.0])
def test_mbir_mri_step_is_the_exact_data_projection(sigma_next):
    """MRI with one mask per slice, λ = 0, placement x0, η = 0: the data step is CG on AᵀA v = Aᵀy from
    x̂0 = D(x, σ), whose limit is x̂0 + A⁺(y − A x̂0) (CG stays in x̂0 + range(AᵀA); for real images
    AᵀA = Re(F⁻¹ M F) has eigenvalues in {0, ½, 1}, so 5 CG iterations reach it). A⁺ is computed here from
    each slice's dense matrix. At σ' = 0 the step returns v itself: a least-squares fit of the data."""
    from invdiff.operators import mri_cartesian, volume_mri

    n, depth, sigma = 16, 4, 0.8
    cov = _smooth_cov(n)
    p2 = GaussianPrior(torch.full((1, n, n), 0.5, dtype=D64), cov)
    g = torch.Generator().manual_seed(0)
    vol = p2.sample(depth, generator=g)
    op = volume_mri(depth, n, 4.0, generator=torch.Generator().manual_seed(1)).double()
    pb = Problem.simulate(vol, op, 0.01, generator=g, unit_range=False)
    x = 0.5 + sigma * torch.randn(vol.shape, generator=g, dtype=D64)
    solver = MBIR(lam=0.0, eta=0.0, placement="x0", cg_iters=5)
    prior = SliceStackPrior(p2, 2)
    state = solver.init(pb, prior, x, sigma, None)
    new, _ = solver.step(state, sigma, sigma_next, pb, prior, torch.Generator().manual_seed(2))

    x0 = _exact_denoiser(cov)(x, sigma)
    v = torch.empty_like(x0)
    for k in range(depth):
        M = _slice_matrix(mri_cartesian(n, mask=op.mask[k, 0]).double(), n)  # (2·n², n²)
        r = pb.y[k].reshape(-1) - M @ x0[k].reshape(-1)
        v[k] = (x0[k].reshape(-1) + torch.linalg.pinv(M) @ r).reshape(1, n, n)
    expected = v + sigma_next * (x - x0) / sigma  # η = 0: σ_down = σ', σ_up = 0
    assert torch.allclose(new.x, expected, atol=1e-6), float((new.x - expected).abs().max())
    if sigma_next == 0:
        normal_residual = op.A_adjoint(op.A(new.x) - pb.y)
        assert float(normal_residual.norm()) < 1e-6 * float(op.A_adjoint(pb.y).norm())


@pytest.mark.parametrize("options", [
    {}, {"corrector": True},
    pytest.param({"placement": "xt"}, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "placement='xt' diverges with the MRI preset at 10 steps (result spans about ±10, squared error about "
        "130x an exact sample's; ±22 at 50 steps, fine at 200): the ADMM split z, started on the sigma_max = 80 "
        "iterate, keeps |z| ~ 40 along z-varying, unmeasured k-space directions that cg_iters = 5 cannot undo; "
        "fine with cg_iters=50 or lam=0")))])
def test_mbir_runs_on_mri_with_a_mask_per_slice(options):
    """The MRI preset on a volume drawn from an exact Gaussian slice prior, one mask per slice, judged against
    an exact posterior sample x_s ~ N(μ, Σ) (each slice's posterior, computed here). For a Gaussian vector
    e ~ N(b, S), ‖e‖² has mean tr S + ‖b‖² and variance 2 tr S² + 4 bᵀ S b. The run's data residual
    ‖A x̂ − y‖² (e = A x_s − y: b = Aμ − y, S = A Σ Aᵀ) must lie within mean ± 3 sd — neither ignoring the
    data nor fitting its noise — and its error ‖x̂ − x‖² (b = μ − x, S = Σ) below mean + 3 sd."""
    from invdiff.operators import mri_cartesian, volume_mri

    n, depth, sigma_y = 16, 4, 0.01
    p2 = GaussianPrior(torch.full((1, n, n), 0.5, dtype=D64), _smooth_cov(n))
    vol = p2.sample(depth, generator=torch.Generator().manual_seed(1))
    op = volume_mri(depth, n, 4.0, generator=torch.Generator().manual_seed(0)).double()
    pb = Problem.simulate(vol, op, sigma_y, generator=torch.Generator().manual_seed(2), unit_range=False)
    res = solve(pb, SliceStackPrior(p2, 2), MBIR.preset("mri_cartesian", **options), steps=10,
                generator=torch.Generator().manual_seed(3), progress=False)
    assert res.x_hat.shape == (depth, 1, n, n)

    def moments(b, S):
        return float(torch.trace(S) + b @ b), float(2 * torch.trace(S @ S) + 4 * b @ S @ b)

    err, res_ = [0.0, 0.0], [0.0, 0.0]
    for k in range(depth):
        op_k = mri_cartesian(n, mask=op.mask[k, 0]).double()
        post = p2.posterior(op_k, pb.y[k:k + 1], sigma_y)
        M, mu, cov = _slice_matrix(op_k, n), post.mean.reshape(-1), post.cov[0]
        for acc, m in ((err, moments(mu - vol[k].reshape(-1), cov)),
                       (res_, moments(M @ mu - pb.y[k].reshape(-1), M @ cov @ M.T))):
            acc[0], acc[1] = acc[0] + m[0], acc[1] + m[1]
    residual_sq = float(((op.A(res.x_hat) - pb.y) ** 2).sum())
    assert abs(residual_sq - res_[0]) < 3 * res_[1] ** 0.5, (residual_sq, res_[0], res_[1] ** 0.5)
    err_sq = float(((res.x_hat - vol) ** 2).sum())
    assert err_sq < err[0] + 3 * err[1] ** 0.5, (err_sq, err[0], err[1] ** 0.5)
