"""Value checks of the particle/volume samplers' pieces against their definitions, written out here:
resampling schemes and log-weight normalisation, MBIR's coupling, ADMM/CG data step, validation and
chunking, SMC and DAPS one-step updates with exact Gaussian priors (tiny problems, float64)."""

import pytest
import torch

from invdiff import Problem
from invdiff.operators import dense_operator, random_inpainting
from invdiff.operators.checks import operator_norm
from invdiff.operators.dense import DenseOperator
from invdiff.operators.spectral import diagonal_normal
from invdiff.priors import GaussianPrior, SliceStackPrior
from invdiff.solvers import DAPS, MBIR
from invdiff.solvers.base import State
from invdiff.solvers.mbir import Coupling
from invdiff.solvers.resampling import LocalParticles, multinomial, normalise_log_weights, stratified, systematic
from invdiff.solvers.smc import POTENTIALS, SMC

D64 = torch.float64


# ---------------------------------------------------------------------------------------------------------------
# Resampling


def _inverse_cdf_reference(w, u):
    """Ancestor of each uniform: the number of cumulative weights strictly below it (capped at K − 1)."""
    cdf = torch.cumsum(w, dim=-1)
    idx = (cdf[:, None, :] < u[:, :, None]).sum(-1)
    return idx.clamp(max=w.shape[-1] - 1)


def test_stratified_uses_one_uniform_of_the_generator_per_stratum():
    """u_k = (k + U_k)/K with U the generator's (N, K) uniforms in the weights' dtype; ancestors by inverse CDF."""
    g = torch.Generator().manual_seed(3)
    w = torch.rand(4, 64, generator=g, dtype=D64) ** 3
    w = w / w.sum(-1, keepdim=True)
    U = torch.rand(4, 64, generator=torch.Generator().manual_seed(11), dtype=D64)
    u = (torch.arange(64, dtype=D64)[None] + U) / 64
    got = stratified(w, torch.Generator().manual_seed(11))
    assert torch.equal(got, _inverse_cdf_reference(w, u))


def test_inverse_cdf_picks_the_first_particle_whose_cumulative_weight_reaches_u():
    """Ancestor of u: the first k with Σ_{j ≤ k} w_j ≥ u — also for a last weight below 1e-12, whose
    cumulative weight sits within 1e-12 of 1 (the guard on the last entry must not fall below the others)."""
    from invdiff.solvers.resampling import _inverse_cdf

    w = torch.tensor([[1 - 1e-13, 1e-13], [0.25, 0.75]], dtype=D64)
    u = torch.tensor([[1 - 5e-13, 0.3], [0.2, 0.999]], dtype=D64)
    assert torch.equal(_inverse_cdf(w, u), torch.tensor([[0, 0], [0, 1]]))
    assert torch.equal(_inverse_cdf(w, u), _inverse_cdf_reference(w, u))


def test_multinomial_draws_from_the_generator():
    """K independent categorical draws per row, from the given generator (torch.multinomial's draws)."""
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0, 0.0], [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]], dtype=D64)
    expected = torch.multinomial(w, 6, replacement=True, generator=torch.Generator().manual_seed(7))
    for _ in range(2):  # the global RNG state plays no part
        torch.rand(3)
        assert torch.equal(multinomial(w, torch.Generator().manual_seed(7)), expected)


def test_normalise_log_weights_is_a_row_softmax():
    """exp(log_w − logsumexp(log_w)) per row of an (N, K) array, N ≠ K, with huge offsets."""
    log_w = torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]], dtype=D64) + torch.tensor([[1000.0], [-800.0]], dtype=D64)
    e = torch.tensor([[1.0, 2.718281828459045, 7.38905609893065], [1.0, 1.0, 1.0]], dtype=D64)
    expected = e / e.sum(-1, keepdim=True)
    assert torch.allclose(normalise_log_weights(log_w), expected, atol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# MBIR: the Coupling's inner products and operator norm


def test_coupling_local_dot_accumulates_in_double_precision():
    """Σ a_i b_i in float64 (complex128 for complex inputs), whatever the inputs' precision."""
    a = torch.tensor([16777216.0, 1.0, 1.0, 1.0, 1.0, -16777216.0], dtype=torch.float32)
    b = torch.ones(6, dtype=torch.float32)
    s = Coupling.local_dot(a, b)
    assert s.dtype == torch.float64 and float(s) == 4.0
    ac = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)
    bc = torch.tensor([2 - 1j, 1j], dtype=torch.complex64)
    sc = Coupling.local_dot(ac, bc)
    assert sc.dtype == torch.complex128 and complex(sc) == (1 + 2j) * (2 - 1j) + (3 - 1j) * 1j


def test_coupling_dot_and_norm_dtypes_and_values():
    """dot: ⟨a, b⟩ in a's dtype; norm: √Σ|t_i|² in t's real dtype (complex: the modulus)."""
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float32)
    c = Coupling()
    d = c.dot(a, a + 1)
    assert d.dtype == torch.float32 and d.ndim == 0 and float(d) == 2 + 6 + 12 + 20
    n = c.norm(a)
    assert n.dtype == torch.float32 and float(n) == pytest.approx(30**0.5, rel=1e-7)
    t = torch.tensor([3 + 4j, 1j], dtype=torch.complex64)
    nc = c.norm(t)
    assert nc.dtype == torch.float32 and float(nc) == pytest.approx(26**0.5, rel=1e-7)


def test_coupling_operator_norm_is_the_seeded_power_iteration():
    """The coupling's ‖A‖ is invdiff.operators.checks.operator_norm with the given iters, dtype and generator
    (one iteration from a seeded start is far from the converged value, so each argument shows)."""
    op = dense_operator((1, 2, 2), torch.diag(torch.tensor([1.0, 0.5, 0.3, 0.9], dtype=D64)))
    c = Coupling()
    one = c.operator_norm(op, (1, 1, 2, 2), iters=1, dtype=D64, generator=torch.Generator().manual_seed(4))
    ref = operator_norm(op, (1, 1, 2, 2), iters=1, dtype=D64, generator=torch.Generator().manual_seed(4))
    assert one == ref and abs(one - 1.0) > 1e-3
    again = c.operator_norm(op, (1, 1, 2, 2), iters=1, dtype=D64, generator=torch.Generator().manual_seed(4))
    assert again == one
    many = c.operator_norm(op, (1, 1, 2, 2), iters=200, dtype=D64, generator=torch.Generator().manual_seed(4))
    assert many == pytest.approx(1.0, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# MBIR: validation and params


def test_mbir_validation_bounds():
    """snr > 0, eta ∈ [0, 1] inclusive, coupling a Coupling."""
    for bad in (dict(snr=0.0), dict(eta=1.5), dict(eta=-0.1)):
        with pytest.raises(ValueError):
            MBIR(**bad)
    MBIR(eta=1.0), MBIR(eta=0.0), MBIR(lam=0.0), MBIR(cg_iters=1, admm_iters=1)
    MBIR(coupling=Coupling())
    with pytest.raises(TypeError, match="coupling"):
        MBIR(coupling="whole")


def test_mbir_params_leave_out_the_coupling():
    """params() lists the hyperparameters (every field) except ``coupling``."""
    p = MBIR(lam=0.1, coupling=Coupling()).params()
    assert "coupling" not in p
    assert p == dict(lam=0.1, rho=5.0e-3, cg_iters=5, admm_iters=1, tv="z", corrector=False, snr=0.16,
                     placement="x0", eta=0.85)


# ---------------------------------------------------------------------------------------------------------------
# MBIR: init (‖A‖², Aᵀy) and the no-measurement case


def _gauss2(n=2, var=0.04):
    return GaussianPrior(torch.full((1, n, n), 0.5, dtype=D64), torch.full((1, n, n), var, dtype=D64))


def test_mbir_init_scale_of_one_pixel_slices():
    """Slices of one pixel measured once (A = 3): ‖A‖² = 9 (not the 'no measurement' 0)."""
    op = dense_operator((1, 1, 1), torch.full((1, 1), 3.0, dtype=D64))
    pb = Problem(op, torch.tensor([[0.3], [0.6], [0.9]], dtype=D64), 0.01)
    prior = SliceStackPrior(_gauss2(1), 2)
    state = MBIR().init(pb, prior, torch.zeros(3, 1, 1, 1, dtype=D64), 1.0, None)
    assert state.scale == pytest.approx(9.0, rel=1e-12)
    assert torch.allclose(state.aty, 3.0 * pb.y.reshape(3, 1, 1, 1), atol=1e-14)


def test_mbir_without_measurement_leaves_the_denoised_slices():
    """No measurement: ‖A‖² = 0, no ADMM; one η = 0 step is x' = x̂0 + σ' (x − x̂0)/σ with x̂0 the exact denoiser."""
    pb = Problem.unconditional((1, 2, 2), batch=3, dtype=D64)
    prior = SliceStackPrior(_gauss2(), 2)
    x = 0.5 + torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=D64)
    solver = MBIR(lam=0.1, rho=1.0, eta=0.0)
    state = solver.init(pb, prior, x, 1.0, None)
    assert state.scale == 0.0
    new, _ = solver.step(state, 1.0, 0.5, pb, prior, torch.Generator().manual_seed(1))
    x0 = 0.5 + 0.04 / (0.04 + 1.0) * (x - 0.5)
    assert torch.allclose(new.x0, x0, atol=1e-14)
    assert torch.allclose(new.x, x0 + 0.5 * (x - x0), atol=1e-14)


def test_mbir_power_iteration_does_not_use_the_global_rng():
    """‖A‖² is estimated once per solve from a start of its own: the same state whatever the global RNG
    (singular values 1 and 0.99, so 20 power iterations depend on their start)."""
    op = dense_operator((1, 1, 2), torch.diag(torch.tensor([1.0, 0.99], dtype=D64)))
    pb = Problem(op, torch.rand(2, 2, generator=torch.Generator().manual_seed(0), dtype=D64), 0.01)
    prior = SliceStackPrior(GaussianPrior(torch.full((1, 1, 2), 0.5, dtype=D64), torch.full((1, 1, 2), 0.04, dtype=D64)),
                            2)
    x = torch.zeros(2, 1, 1, 2, dtype=D64)
    scales = []
    with torch.random.fork_rng():
        for seed in (0, 1):
            torch.manual_seed(seed)
            scales.append(MBIR().init(pb, prior, x, 1.0, None).scale)
    assert scales[0] == scales[1] and scales[0] == pytest.approx(1.0, abs=0.02)


class _SpyCoupling(Coupling):
    """The whole-volume coupling, recording what MBIR asks of it."""

    def __init__(self):
        self.shapes, self.dots = [], 0

    def dot(self, a, b):
        self.dots += 1
        return super().dot(a, b)

    def operator_norm(self, op, x_shape, **kw):
        self.shapes.append(tuple(x_shape))
        return super().operator_norm(op, x_shape, **kw)


def test_mbir_asks_its_coupling_for_norm_and_cg_inner_products():
    """init asks for ‖A‖ with one slice's shape, batch 1; the coupled CG (λ > 0) takes its inner products
    from the coupling (documented: the volume-wide quantities come from the Coupling)."""
    op = dense_operator((1, 2, 2), torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D64)))
    pb = Problem(op, torch.rand(3, 4, generator=torch.Generator().manual_seed(0), dtype=D64), 0.01)
    spy = _SpyCoupling()
    solver = MBIR(lam=0.1, rho=1.0, cg_iters=3, coupling=spy)
    prior = SliceStackPrior(_gauss2(), 2)
    x = torch.zeros(3, 1, 2, 2, dtype=D64)
    state = solver.init(pb, prior, x, 1.0, None)
    assert spy.shapes == [(1, 1, 2, 2)]
    solver.step(state, 1.0, 0.5, pb, prior, torch.Generator().manual_seed(0))
    assert spy.dots > 0


class _ChunkSpy(DenseOperator):
    """A dense per-slice operator recording the largest stack of slices it is applied to."""

    largest = 0

    def A(self, x, **kw):
        _ChunkSpy.largest = max(_ChunkSpy.largest, x.shape[0])
        return super().A(x, **kw)

    def A_adjoint(self, y, **kw):
        _ChunkSpy.largest = max(_ChunkSpy.largest, y.shape[0])
        return super().A_adjoint(y, **kw)


@pytest.mark.parametrize("lam", [0.0, 0.1])
@pytest.mark.parametrize("placement", ["x0", "xt"])
def test_mbir_applies_the_operator_a_prior_chunk_at_a_time(placement, lam):
    """The prior's chunk_size also bounds the operator's batches (Aᵀy in init, AᵀA in the ADMM), over
    init and two steps; the steps agree with the unchunked solver (chunking changes no value)."""
    M = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=D64)
    op = _ChunkSpy(M, (1, 2, 2))
    y = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=D64)
    pb = Problem(op, y, 0.01)
    x = 0.5 + torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(2), dtype=D64)
    solver = MBIR(lam=lam, rho=1.0, placement=placement, eta=0.5)

    def run(chunk):
        prior = SliceStackPrior(_gauss2(), chunk)
        _ChunkSpy.largest = 0
        state = solver.init(pb, prior, x, 1.0, None)
        g = torch.Generator().manual_seed(3)
        for s, s_next in ((1.0, 0.6), (0.6, 0.3)):
            state, _ = solver.step(state, s, s_next, pb, prior, g)
        return state.x, _ChunkSpy.largest

    x2, largest2 = run(2)
    assert largest2 == 2
    x6, largest6 = run(6)
    assert largest6 == 6 and torch.allclose(x2, x6, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# MBIR: the CG data step, against CG written out here


def _cg_reference(M, b, x, iters):
    """Textbook CG (Hestenes–Stiefel) on a dense SPD M, exactly ``iters`` iterations."""
    r = b - M @ x
    p = r.clone()
    for _ in range(iters):
        Mp = M @ p
        alpha = (r @ r) / (p @ Mp)
        x = x + alpha * p
        r_new = r - alpha * Mp
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    return x


def test_mbir_lam0_data_step_is_cg_with_cg_iters_times_admm_iters_iterations():
    """λ = 0: per slice CG on AᵀA v = Aᵀy from v, cg_iters·admm_iters = 2 iterations (AᵀA = diag(1, 4, 9, 16):
    not converged after 2)."""
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D64)
    op = dense_operator((1, 2, 2), torch.diag(a))
    y = torch.tensor([[1.0, -1.0, 0.5, 2.0], [0.3, 0.2, -0.7, 1.0]], dtype=D64)
    pb = Problem(op, y, 0.01)
    v0 = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, -0.5, 0.5, 1.0]], dtype=D64)
    z = torch.zeros(2, 1, 2, 2, dtype=D64)
    v, _, _ = MBIR(lam=0.0, cg_iters=1, admm_iters=2).admm(pb, v0.reshape(2, 1, 2, 2), z, z.clone(), scale=16.0)
    for k in range(2):
        expected = _cg_reference(torch.diag(a**2), a * y[k], v0[k], 2)
        assert torch.allclose(v[k].reshape(-1), expected, atol=1e-12)
        assert not torch.allclose(expected, y[k] / a, atol=1e-3)  # not yet the solution


def test_mbir_lam0_cg_stops_at_relative_residual_1e7():
    """CG's tolerance is 1e-7: AᵀA = diag(1, 1 + ε), ε = 1e-6, b = (1, 1): after one iteration the relative
    residual is ε/(2 + ε) ≈ 5e-7 > 1e-7, so a second iteration is taken and reaches the exact solution."""
    eps = 1e-6
    op = dense_operator((1, 1, 2), torch.diag(torch.tensor([1.0, (1 + eps) ** 0.5], dtype=D64)))
    y = torch.tensor([[1.0, 1.0 / (1 + eps) ** 0.5]], dtype=D64)  # Aᵀy = (1, 1)
    pb = Problem(op, y, 0.01)
    z = torch.zeros(1, 1, 1, 2, dtype=D64)
    v, _, _ = MBIR(lam=0.0, cg_iters=2).admm(pb, torch.zeros(1, 1, 1, 2, dtype=D64), z, z.clone(), scale=1.0)
    assert torch.allclose(v.reshape(-1), torch.tensor([1.0, 1 / (1 + eps)], dtype=D64), atol=1e-12, rtol=0)


def test_mbir_coupled_cg_stops_at_relative_residual_1e7():
    """λ > 0: CG on (AᵀA + ρ DᵀD) v = Aᵀy + ρ Dᵀ(z − u) over the volume, tolerance 1e-7. Two one-pixel slices,
    A = 1, z = u = 0, ρ small: the matrix has eigenvalues 1 and 1 + 2ρ, the first iteration leaves a relative
    residual in (1e-7, 1e-6), so the second one is taken: v is the dense solve (checked here to 1e-12)."""
    from invdiff.operators import FiniteDifference

    rho = 5e-7
    op = dense_operator((1, 1, 1), torch.ones(1, 1, dtype=D64))
    y = torch.tensor([[1.0], [0.0]], dtype=D64)
    pb = Problem(op, y, 0.01)
    D = FiniteDifference(0)
    basis = torch.eye(2, dtype=D64).reshape(2, 2, 1, 1, 1)
    M = torch.stack([(e + rho * D.A_adjoint(D.A(e))).reshape(-1) for e in basis], 1)
    b = y.reshape(-1)
    x1 = _cg_reference(M, b, torch.zeros(2, dtype=D64), 1)
    rel = float((b - M @ x1).norm() / b.norm())
    assert 1e-7 < rel < 1e-6, rel
    solver = MBIR(lam=1e-3, rho=rho, cg_iters=2)
    z = torch.zeros_like(solver.difference.A(torch.zeros(2, 1, 1, 1, dtype=D64)))
    v, _, _ = solver.admm(pb, torch.zeros(2, 1, 1, 1, dtype=D64), z, z.clone(), scale=1.0)
    assert torch.allclose(v.reshape(-1), torch.linalg.solve(M, b), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# MBIR: corrector with a small score, and the noiseless step


def test_mbir_corrector_with_a_score_norm_below_one():
    """ε = 2 (r‖z‖/‖s‖)² with the exact score s = −(x − m)/(v0 + σ²) of N(m, v0) — here ‖s‖ ≈ 0.05 < 1
    (the clamp only guards against ‖s‖ = 0)."""
    v0, sigma, snr = 0.04, 0.5, 0.16
    prior = GaussianPrior(torch.full((1, 2, 2), 0.5, dtype=D64), torch.full((1, 2, 2), v0, dtype=D64))
    x = 0.5 + 0.01 * torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=D64)
    got = MBIR(corrector=True, snr=snr)._corrector(prior, x, sigma, torch.Generator().manual_seed(1))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=D64)
    s = -(x - 0.5) / (v0 + sigma**2)
    assert float(s.norm()) < 1
    eps = 2 * (snr * z.norm() / s.norm()) ** 2
    assert torch.allclose(got, x + eps * s + (2 * eps) ** 0.5 * z, atol=1e-12)


def test_mbir_eta0_step_draws_no_noise():
    """η = 0: σ_up = 0, so x' = v + σ'(x − x̂0)/σ and the generator is not drawn from."""
    op = dense_operator((1, 2, 2), torch.eye(4, dtype=D64))
    pb = Problem(op, torch.full((2, 4), 0.7, dtype=D64), 0.01)
    prior = SliceStackPrior(_gauss2(), 2)
    x = 0.5 + torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=D64)
    solver = MBIR(lam=0.0, eta=0.0, cg_iters=3)
    state = solver.init(pb, prior, x, 1.0, None)
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    new, _ = solver.step(state, 1.0, 0.4, pb, prior, g)
    assert torch.equal(g.get_state(), before)
    x0 = 0.5 + 0.04 / 1.04 * (x - 0.5)
    assert torch.allclose(new.x, 0.7 + 0.4 * (x - x0), atol=1e-12)  # A = I: the data step sets v = y


# ---------------------------------------------------------------------------------------------------------------
# SMC: FK potentials, and one init / step / final step written out with an exact Gaussian prior


def test_fk_potentials_follow_their_definitions():
    """Over rewards r0, r1, r2 along a path (stat threaded through): difference λ(r_σ' − r_σ) (λ r0 first),
    current λ r_σ', max λ max_{s ≥ σ'} r_s, sum λ Σ_{s ≥ σ'} r_s."""
    lam = 0.7
    rs = [torch.tensor([1.0, -2.0, 0.5], dtype=D64), torch.tensor([3.0, -5.0, 0.25], dtype=D64),
          torch.tensor([2.0, -1.0, 4.0], dtype=D64)]
    expected = {
        "difference": [lam * rs[0], lam * (rs[1] - rs[0]), lam * (rs[2] - rs[1])],
        "current": [lam * r for r in rs],
        "max": [lam * rs[0], lam * torch.maximum(rs[0], rs[1]), lam * torch.stack(rs).max(0).values],
        "sum": [lam * rs[0], lam * (rs[0] + rs[1]), lam * (rs[0] + rs[1] + rs[2])],
    }
    for name, exp in expected.items():
        r_old, stat = None, None
        for r, e in zip(rs, exp):
            inc, stat = POTENTIALS[name](r, r_old, stat, lam)
            assert torch.allclose(inc, e, atol=1e-14), (name, inc, e)
            r_old = r


_V, _SY, _TAU, _LAM, _ETA = 0.09, 0.1, 0.25, 0.7, 0.8  # τ ≠ the prior's data_std (0.3)
_M = torch.tensor([[1.0, 0.5], [0.2, -0.7], [0.3, 0.3]], dtype=D64)  # 3 measurements ≠ N = 2 problems


def _smc_setup():
    prior = GaussianPrior(torch.full((1, 1, 2), 0.5, dtype=D64), torch.full((1, 1, 2), _V, dtype=D64))
    y = torch.tensor([[0.9, -0.1, 0.4], [0.2, 0.4, 0.6]], dtype=D64)
    return prior, Problem(dense_operator((1, 1, 2), _M), y, _SY)


def _hand_eval(x, y_rep, sigma):
    """x̂0 = m + a (x − m), a = v/(v + σ²); r = −‖y − M x̂0‖²/(2(σ_y² + ρ²)), ρ² = τ²σ²/(τ² + σ²);
    ∇_x λ r = λ a Mᵀ(y − M x̂0)/(σ_y² + ρ²)."""
    a = _V / (_V + sigma**2)
    x0 = 0.5 + a * (x - 0.5)
    s = _SY**2 + _TAU**2 * sigma**2 / (_TAU**2 + sigma**2)
    resid = y_rep - x0.reshape(-1, 2) @ _M.T
    r = -(resid**2).sum(1) / (2 * s)
    grad = (_LAM * a * resid @ _M / s).reshape(x.shape)
    return x0, r, grad


def _hand_sigmas(sigma, sigma_next):
    up = min(sigma_next, _ETA * sigma_next * ((sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - up**2) ** 0.5, up


def _smc_hand_two_steps(K, N, y, sigma, sigma_next, g_init, g_step):
    """init at σ and one twisted, untempered-resampling step to σ', by the module docstring's formulas."""
    y_rep = y.repeat(K, 1)
    x = 0.5 + sigma * torch.randn(K * N, 1, 1, 2, generator=g_init, dtype=D64)
    x0, r, grad = _hand_eval(x, y_rep, sigma)
    log_w0 = (_LAM * r).reshape(K, N).T
    down, up = _hand_sigmas(sigma, sigma_next)
    mean = x0 + down * (x - x0) / sigma
    shift = up**2 * grad
    x_new = mean + shift + up * torch.randn(K * N, 1, 1, 2, generator=g_step, dtype=D64)
    log_pq = (-((x_new - mean) ** 2) + (x_new - mean - shift) ** 2).flatten(1).sum(1) / (2 * up**2)
    x0_new, r_new, grad_new = _hand_eval(x_new, y_rep, sigma_next)
    inc = _LAM * (r_new - r)
    log_w = log_w0 + (log_pq + inc).reshape(K, N).T
    return dict(x=x, x0=x0, r=r, grad=grad, log_w0=log_w0, x_new=x_new, x0_new=x0_new, r_new=r_new,
                grad_new=grad_new, log_w=log_w, log_g=_LAM * r_new, y_rep=y_rep)


def _ess(log_w):
    w = torch.softmax(log_w, -1)
    return 1 / (w**2).sum(-1)


def test_smc_init_step_and_final_step_are_the_documented_updates():
    """K = 4 particles for N = 2 problems (2 pixels, 2 measurements), twisted isotropic SMC, λ = 0.7,
    η = 0.8, no resampling: init x = centre + σ ε with weights λ r; a step's proposal mean + σ_up² ∇λr + σ_up ξ,
    its weight increment log p − log q + λ(r_σ' − r_σ) and ESS; the last step (σ' = 0) adds λ·loglik − log G,
    returns the weighted mean of x̂0 and K systematic draws (generator's uniforms)."""
    prior, pb = _smc_setup()
    K, N, sigma, sigma_next = 4, 2, 1.0, 0.5
    smc = SMC(particles=K, lam=_LAM, tau=_TAU, eta=_ETA, ess_threshold=0.0)
    state = smc.init(pb, prior, torch.zeros(N, 1, 1, 2, dtype=D64), sigma, torch.Generator().manual_seed(0))
    h = _smc_hand_two_steps(K, N, pb.y, sigma, sigma_next, torch.Generator().manual_seed(0),
                            torch.Generator().manual_seed(1))
    assert torch.allclose(state.x, h["x"], atol=1e-13) and torch.allclose(state.x0, h["x0"], atol=1e-13)
    assert torch.allclose(state.reward, h["r"], atol=1e-12) and torch.allclose(state.grad, h["grad"], atol=1e-12)
    assert torch.allclose(state.log_w, h["log_w0"], atol=1e-12)
    assert torch.allclose(state.log_g, _LAM * h["r"], atol=1e-12)
    state, info = smc.step(state, sigma, sigma_next, pb, prior, torch.Generator().manual_seed(1))
    assert torch.allclose(state.x, h["x_new"], atol=1e-13)
    assert torch.allclose(state.x0, h["x0_new"], atol=1e-13)
    assert torch.allclose(state.reward, h["r_new"], atol=1e-12)
    assert torch.allclose(state.grad, h["grad_new"], atol=1e-12)
    assert torch.allclose(state.log_g, h["log_g"], atol=1e-12)
    assert torch.allclose(state.log_w, h["log_w"], atol=1e-10), (state.log_w, h["log_w"])
    assert torch.allclose(info["ess"], _ess(h["log_w"]), atol=1e-10)

    g_final = torch.Generator().manual_seed(2)
    final, info = smc.step(state, sigma_next, 0.0, pb, prior, g_final)
    resid = h["y_rep"] - h["x0_new"].reshape(-1, 2) @ _M.T
    loglik = -(resid**2).sum(1) / (2 * _SY**2)
    log_w = h["log_w"] + (_LAM * loglik - h["log_g"]).reshape(K, N).T
    assert torch.allclose(final.log_w, log_w, atol=1e-10)
    w = torch.softmax(log_w, -1)
    xs = h["x0_new"].reshape(K, N, 1, 1, 2)
    assert torch.allclose(final.mean, torch.einsum("nk,kn...->n...", w, xs), atol=1e-12)
    U = torch.rand(N, 1, generator=torch.Generator().manual_seed(2), dtype=D64)
    idx = _inverse_cdf_reference(w, (torch.arange(K, dtype=D64)[None] + U) / K)
    draws = xs[idx.T, torch.arange(N)[None]]
    assert torch.allclose(final.samples, draws, atol=1e-13)
    ref = torch.Generator().manual_seed(2)
    torch.rand(N, 1, generator=ref, dtype=D64)  # the resampling's uniforms come from the solve's generator
    assert torch.equal(g_final.get_state(), ref.get_state())
    assert final.x.shape == (K * N, 1, 1, 2) and torch.allclose(final.x, draws.reshape(K * N, 1, 1, 2), atol=1e-13)
    assert torch.equal(final.x0, state.x0)
    assert torch.equal(final.y_rep, h["y_rep"])
    assert torch.allclose(info["ess"], _ess(log_w), atol=1e-10)
    fin = smc.finalize(final, N)
    assert torch.equal(fin[0], final.samples) and torch.allclose(fin[1], final.mean)
    fin = smc.finalize(final, 1)  # two samples (systems) of one problem: 8 draws, the point is their means' mean
    assert torch.allclose(fin[0], draws.reshape(K * N, 1, 1, 1, 2), atol=1e-13)
    assert torch.allclose(fin[1], final.mean.mean(0, keepdim=True), atol=1e-14)


@pytest.mark.parametrize("potential", ["difference", "sum"])
def test_smc_resamples_only_the_systems_below_the_ess_threshold(potential):
    """ESS < threshold·K: that system's particles (x, x̂0, reward, grad, log G) are copied from systematic
    ancestors drawn with the generator after the step's noise, and its weights reset to 0; a system above the
    threshold keeps its particles and weights."""
    prior, pb = _smc_setup()
    K, N, sigma, sigma_next = 4, 2, 1.0, 0.5
    h = _smc_hand_two_steps(K, N, pb.y, sigma, sigma_next, torch.Generator().manual_seed(0),
                            torch.Generator().manual_seed(1))
    if potential == "sum":  # λ Σ r: the step adds λ(r0 + r1) instead of λ(r1 − r0)
        h["log_w"] = h["log_w"] + (2 * _LAM * h["r"]).reshape(K, N).T
        h["log_g"] = _LAM * (2 * h["r"] + h["r_new"])
    e = _ess(h["log_w"])
    lo, hi = sorted(e.tolist())
    assert hi - lo > 0.05, e
    thr = (lo + hi) / 2 / K
    smc = SMC(particles=K, lam=_LAM, tau=_TAU, eta=_ETA, ess_threshold=thr, potential=potential)
    state = smc.init(pb, prior, torch.zeros(N, 1, 1, 2, dtype=D64), sigma, torch.Generator().manual_seed(0))
    g_step = torch.Generator().manual_seed(1)
    state, info = smc.step(state, sigma, sigma_next, pb, prior, g_step)
    assert torch.allclose(info["ess"], e, atol=1e-10)
    which = e < thr * K
    g = torch.Generator().manual_seed(1)
    torch.randn(K * N, 1, 1, 2, generator=g, dtype=D64)  # the step's noise
    U = torch.rand(N, 1, generator=g, dtype=D64)
    assert torch.equal(g_step.get_state(), g.get_state())  # the ancestors' uniforms come from the solve's generator
    w = torch.softmax(h["log_w"], -1)
    idx = _inverse_cdf_reference(w, (torch.arange(K, dtype=D64)[None] + U) / K)
    idx = torch.where(which[:, None], idx, torch.arange(K)[None])
    flat = (idx.T * N + torch.arange(N)[None]).reshape(-1)
    assert not torch.equal(flat, torch.arange(K * N))  # something was copied
    for name, key in (("x", "x_new"), ("x0", "x0_new"), ("reward", "r_new"), ("grad", "grad_new"),
                      ("log_g", "log_g")):
        assert torch.allclose(getattr(state, name), h[key][flat], atol=1e-10), name
    expected_w = torch.where(which[:, None], torch.zeros_like(h["log_w"]), h["log_w"])
    assert torch.allclose(state.log_w, expected_w, atol=1e-10)
    assert torch.equal(state.y_rep, h["y_rep"])
    if potential == "sum":
        assert torch.allclose(state.stat, (h["r"] + h["r_new"])[flat], atol=1e-12)
    else:
        assert state.stat is None
    state, _ = smc.step(state, sigma_next, 0.25, pb, prior, g_step)  # the resampled system carries on
    assert torch.isfinite(state.log_w).all()


def test_smc_untwisted_step_has_no_proposal_correction():
    """twist=False: x' = μ(x) + σ_up ξ and the weight increment is the potential alone (log p − log q = 0)."""
    prior, pb = _smc_setup()
    K, N, sigma, sigma_next = 4, 2, 1.0, 0.5
    smc = SMC(particles=K, lam=_LAM, tau=_TAU, eta=_ETA, ess_threshold=0.0, twist=False, potential="current")
    state = smc.init(pb, prior, torch.zeros(N, 1, 1, 2, dtype=D64), sigma, torch.Generator().manual_seed(0))
    assert state.grad is None
    state, _ = smc.step(state, sigma, sigma_next, pb, prior, torch.Generator().manual_seed(1))
    y_rep = pb.y.repeat(K, 1)
    x = 0.5 + sigma * torch.randn(K * N, 1, 1, 2, generator=torch.Generator().manual_seed(0), dtype=D64)
    x0, r, _ = _hand_eval(x, y_rep, sigma)
    down, up = _hand_sigmas(sigma, sigma_next)
    x_new = x0 + down * (x - x0) / sigma + up * torch.randn(K * N, 1, 1, 2, generator=torch.Generator().manual_seed(1),
                                                            dtype=D64)
    _, r_new, _ = _hand_eval(x_new, y_rep, sigma_next)
    assert torch.allclose(state.x, x_new, atol=1e-13)
    assert torch.allclose(state.log_w, (_LAM * (r + r_new)).reshape(K, N).T, atol=1e-10)
    assert torch.allclose(state.log_g, _LAM * (r + r_new), atol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# DAPS: validation, schedule, step size, the ODE, the Langevin loop, the closed form and its stability test


def test_daps_validation_bounds():
    """Integers ≥ 1, lr > 0, 0 < lr_min_ratio ≤ 1, tau > 0 or None, 0 < sigma_min ≤ sigma_max, rho > 0."""
    for ok in (dict(lr_min_ratio=1.0), dict(sigma_min=0.5, sigma_max=0.5), dict(tau=None), dict(langevin_steps=1),
               dict(ode_steps=1), dict(rho=0.5)):
        DAPS(**ok)
    for bad in (dict(langevin_steps=0), dict(lr_min_ratio=0.0), dict(lr_min_ratio=1.5), dict(tau=0.0),
                dict(sigma_min=0.0), dict(sigma_min=0.6, sigma_max=0.5), dict(rho=0.0), dict(lr=0.0)):
        with pytest.raises(ValueError):
            DAPS(**bad)


def _karras(n, lo, hi, rho):
    """σ_i = (hi^{1/ρ} + i/(n−1) (lo^{1/ρ} − hi^{1/ρ}))^ρ, then 0."""
    i = torch.arange(n, dtype=D64) / (n - 1)
    return torch.cat([(hi ** (1 / rho) + i * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho, torch.zeros(1, dtype=D64)])


def test_daps_sigmas_and_step_size_within_the_prior_range():
    """Levels: Karras(ρ) between max(sigma_min, prior's min) and min(sigma_max, prior's max); η_j falls linearly
    in σ^{1/ρ} from lr at the top to lr·lr_min_ratio at the bottom, clipped outside; equal bounds give lr."""
    prior = _gauss2()
    prior.sigma_min, prior.sigma_max = 0.1, 10.0
    s = DAPS(sigma_min=0.05, sigma_max=50.0, rho=5.0, lr=1e-3, lr_min_ratio=0.2)
    assert torch.allclose(s.default_sigmas(prior, 6), _karras(6, 0.1, 10.0, 5.0), rtol=1e-12)
    a, b = 10.0 ** 0.2, 0.1 ** 0.2
    for sigma in (3.0, 0.5, 20.0, 0.01):
        ratio = min(max((a - sigma ** 0.2) / (a - b), 0.0), 1.0)
        assert s.step_size(sigma, prior) == pytest.approx(1e-3 * (1 - 0.8 * ratio), rel=1e-12)
    narrow = DAPS(sigma_min=0.3, sigma_max=50.0, lr=1e-3, lr_min_ratio=0.2)
    prior.sigma_max = 0.2  # below sigma_min: hi = lo
    assert torch.allclose(narrow.default_sigmas(prior, 1), torch.tensor([0.3, 0.0], dtype=D64))
    assert narrow.step_size(0.3, prior) == pytest.approx(1e-3, rel=1e-12)


def test_daps_step_is_ode_then_langevin_then_renoise():
    """One level σ → σ' with a dense (non-diagonal) operator: x̂0 by ode_steps Euler/DDIM(0) steps on the Karras
    levels from σ to min(prior σ_min, σ) and 0; K Langevin steps x ← x − η∇U + √(2η) ε_k on
    U = ‖y − Ax‖²/(2τ²) + ‖x − x̂0‖²/(2σ²) with η = step_size(σ); x' = x_K + σ' ε."""
    v = 0.05
    prior = GaussianPrior(torch.full((1, 1, 2), 0.5, dtype=D64), torch.full((1, 1, 2), v, dtype=D64))
    M = torch.tensor([[1.0, 0.5], [0.2, -0.7], [0.3, 0.3]], dtype=D64)
    pb = Problem(dense_operator((1, 1, 2), M), torch.tensor([[0.9, -0.1, 0.4]], dtype=D64), 0.05)
    solver = DAPS(ode_steps=3, langevin_steps=4, lr=2e-3, lr_min_ratio=0.1, tau=0.2, sigma_max=20.0,
                  sigma_min=0.1, rho=5.0)
    sigma, sigma_next = 1.0, 0.4
    x = 0.5 + sigma * torch.randn(1, 1, 1, 2, generator=torch.Generator().manual_seed(0), dtype=D64)
    new, _ = solver.step(State(x=x), sigma, sigma_next, pb, prior, torch.Generator().manual_seed(1))

    levels = _karras(3, 2e-3, sigma, 5.0).tolist()
    xe = x.clone()
    for s, s_next in zip(levels[:-1], levels[1:]):
        x0 = 0.5 + v / (v + s**2) * (xe - 0.5)
        xe = x0 + s_next * (xe - x0) / s
    x0_hat = xe
    a, b = 20.0 ** 0.2, 0.1 ** 0.2
    eta = 2e-3 * (1 - 0.9 * (a - sigma ** 0.2) / (a - b))
    g = torch.Generator().manual_seed(1)
    xl = x0_hat
    for _ in range(4):
        grad = (xl - x0_hat) / sigma**2 + ((xl.reshape(1, 2) @ M.T - pb.y) @ M).reshape(xl.shape) / 0.2**2
        xl = xl - eta * grad + (2 * eta) ** 0.5 * torch.randn(xl.shape, generator=g, dtype=D64)
    expected = xl + sigma_next * torch.randn(xl.shape, generator=g, dtype=D64)
    assert torch.allclose(new.x0, xl, atol=1e-12)
    assert torch.allclose(new.x, expected, atol=1e-12)
    g_last = torch.Generator().manual_seed(1)
    last, _ = solver.step(State(x=x), sigma, 0.0, pb, prior, g_last)
    assert torch.equal(last.x, last.x0) and torch.allclose(last.x, xl, atol=1e-12)  # σ' = 0: no re-noising
    ref = torch.Generator().manual_seed(1)
    torch.randn(4, 1, 1, 2, generator=ref, dtype=D64)  # the 4 Langevin draws, and no more
    assert torch.equal(g_last.get_state(), ref.get_state())


@pytest.mark.parametrize("tau", [0.1, None])
def test_daps_langevin_without_measurement_targets_the_prior_term_only(tau):
    """m = 0: x ← x − η (x − x̂0)/σ² + √(2η) ε_k; no likelihood scale is needed (tau=None with σ_y = 0 is fine)."""
    pb = Problem.unconditional((1, 1, 2), batch=1, dtype=D64)
    assert pb.sigma_y == 0
    x0_hat = torch.tensor([[[[0.3, 0.8]]]], dtype=D64)
    out = DAPS(langevin_steps=3, tau=tau).langevin(pb, x0_hat, 0.5, 0.01, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    x = x0_hat
    for _ in range(3):
        x = x - 0.01 * (x - x0_hat) / 0.25 + 0.02 ** 0.5 * torch.randn(x.shape, generator=g, dtype=D64)
    assert torch.allclose(out, x, atol=1e-14)


def test_daps_langevin_with_one_measurement_and_tau_none():
    """One measurement (m = 1) is a measurement; tau=None uses σ_y as τ; σ_y = 0 with tau=None is refused."""
    M = torch.tensor([[1.0, -2.0]], dtype=D64)
    pb = Problem(dense_operator((1, 1, 2), M), torch.tensor([[0.4]], dtype=D64), 0.3)
    x0_hat = torch.tensor([[[[0.3, 0.8]]]], dtype=D64)
    sigma, lr = 0.5, 0.01
    out = DAPS(langevin_steps=3, tau=None).langevin(pb, x0_hat, sigma, lr, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    x = x0_hat
    for _ in range(3):
        grad = (x - x0_hat) / sigma**2 + ((x.reshape(1, 2) @ M.T - pb.y) @ M).reshape(x.shape) / 0.3**2
        x = x - lr * grad + (2 * lr) ** 0.5 * torch.randn(x.shape, generator=g, dtype=D64)
    assert torch.allclose(out, x, atol=1e-14)
    with pytest.raises(ValueError, match="give tau > 0"):
        DAPS(tau=None).langevin(Problem(pb.physics, pb.y, 0.0), x0_hat, sigma, lr, torch.Generator().manual_seed(2))


def _mask_problem(dtype):
    op = random_inpainting((1, 4, 4), 0.5, generator=torch.Generator().manual_seed(0))
    op = op.double() if dtype == D64 else op
    y = op.A(torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=dtype))
    return Problem(op, y, 0.05)


@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_daps_closed_form_langevin_is_one_draw_from_the_chains_law(dtype):
    """Mask operator (AᵀA = diag(w) in the pixel basis): the K-step chain's output is drawn as
    x_K = d^K x̂0 + (1 − d^K) b/m + √(2η(1 − d^{2K})/(1 − d²)) ε, m = 1/σ² + w/τ², d = 1 − ηm,
    b = x̂0/σ² + Aᵀy/τ², ε the generator's first normal draw; returned in x̂0's dtype."""
    pb = _mask_problem(dtype)
    x0_hat = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=dtype)
    sigma, tau, lr, K = 0.3, 0.1, 2e-3, 7
    out = DAPS(langevin_steps=K, tau=tau).langevin(pb, x0_hat, sigma, lr, torch.Generator().manual_seed(3))
    assert out.dtype == dtype
    w = pb.physics.mask.double().expand(1, 1, 4, 4)
    m = 1 / sigma**2 + w / tau**2
    d = 1 - lr * m
    b = x0_hat.double() / sigma**2 + pb.physics.A_adjoint(pb.y).double() / tau**2
    mean = d**K * x0_hat.double() + (1 - d**K) * b / m
    std = (2 * lr * (1 - d ** (2 * K)) / (1 - d**2)).sqrt()
    eps = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=dtype).double()
    tol = 1e-12 if dtype == D64 else 1e-6
    assert torch.allclose(out.double(), mean + std * eps, atol=tol, rtol=0)


def test_daps_chain_law_refuses_unstable_chains():
    """None exactly where |1 − η m| ≥ 1 for some coefficient, m = 1/σ² + w/τ² (σ = τ = 1: m ∈ {1, 2} on a mask):
    η m = 2 and 2.5 → None; η m rounding to 0 → None; η m ≤ 1.5 → a finite law."""
    pb = _mask_problem(D64)
    A, y = pb.physics, pb.y
    x0_hat = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=D64)
    diag = diagonal_normal(A, x0_hat)
    assert set(diag[2].unique().tolist()) == {0.0, 1.0}
    s = DAPS(langevin_steps=5)
    assert s.chain_law(A, y, x0_hat, 1.0, 1.0, 1.0, diag) is None      # η m = 2 on observed pixels
    assert s.chain_law(A, y, x0_hat, 1.0, 1.0, 1.25, diag) is None     # 2.5
    assert s.chain_law(A, y, x0_hat, 1e150, 1.0, 1e-30, diag) is None  # η/σ² underflows to 0 where w = 0
    law = s.chain_law(A, y, x0_hat, 1.0, 1.0, 0.75, diag)             # 1.5 and 0.75
    assert law is not None and torch.isfinite(law[0]).all() and torch.isfinite(law[1]).all()


# ---------------------------------------------------------------------------------------------------------------
# SMC: validation, params, cost, no measurement, Jacobian twist, the ESS test, particles over processes


class _Rank(LocalParticles):
    """Process ``rank`` of ``size``, with the one-process exchanges (enough for init and unresampled steps)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def test_smc_validation_bounds():
    """eta ∈ [0, 1], tau > 0 or None, lam ≥ 0, ess_threshold ∈ [0, 1] (inclusive), cg_iters ≥ 1; a communicator
    must have every method and a size ≥ 1 dividing K."""
    for ok in (dict(eta=1.0), dict(eta=0.0, ess_threshold=0.0), dict(lam=0.0), dict(ess_threshold=1.0),
               dict(ess_threshold=0.0), dict(tau=None), dict(cg_iters=1, cov="jacobian"),
               dict(particles=4, comm=_Rank(0, 2)), dict(particles=4, comm=_Rank(0, 1)), dict(particles=1)):
        SMC(**ok)
    for bad in (dict(eta=1.5), dict(eta=-0.1), dict(tau=0.0), dict(lam=-0.1), dict(ess_threshold=1.5),
                dict(ess_threshold=-0.1), dict(cg_iters=0), dict(particles=0), dict(eta=0.0, ess_threshold=0.5),
                dict(particles=3, comm=_Rank(0, 2)), dict(particles=4, comm=_Rank(0, 0)),
                dict(particles=4, comm=_Rank(0, True))):
        with pytest.raises(ValueError):
            SMC(**bad)

    class NoTake:
        rank, size = 0, 1

        def logsumexp(self, t):
            return t

        all_gather = broadcast = logsumexp

    with pytest.raises(TypeError, match="take"):
        SMC(comm=NoTake())


def test_smc_params_and_cost():
    """params: every field but comm; cost: (steps, steps·(twist + cg_iters if jacobian))."""
    p = SMC(particles=8, comm=_Rank(0, 2)).params()
    assert p == dict(particles=8, lam=1.0, potential="difference", twist=True, tau=None, cov="isotropic", cg_iters=5,
                     eta=1.0, ess_threshold=0.5, resampling="systematic")
    assert SMC().cost(3) == (3, 3) and SMC(twist=False).cost(3) == (3, 0)
    assert SMC(cov="jacobian", cg_iters=4).cost(3) == (3, 15)
    assert SMC(cov="jacobian", cg_iters=4, twist=False).cost(3) == (3, 12)


@pytest.mark.parametrize("twist", [True, False])
def test_smc_without_measurement_has_zero_reward(twist):
    """No measurement: x̂0 is the prior's denoiser, the reward is 0 and the twist gradient 0 (None untwisted)."""
    prior = GaussianPrior(torch.full((1, 1, 2), 0.5, dtype=D64), torch.full((1, 1, 2), _V, dtype=D64))
    pb = Problem.unconditional((1, 1, 2), batch=2, dtype=D64)
    state = SMC(particles=3, twist=twist).init(pb, prior, torch.zeros(2, 1, 1, 2, dtype=D64), 1.0,
                                                torch.Generator().manual_seed(0))
    x = 0.5 + torch.randn(6, 1, 1, 2, generator=torch.Generator().manual_seed(0), dtype=D64)
    assert torch.allclose(state.x0, 0.5 + _V / (_V + 1) * (x - 0.5), atol=1e-14)
    assert torch.equal(state.reward, torch.zeros(6, dtype=D64)) and torch.equal(state.log_w, torch.zeros(2, 3,
                                                                                                          dtype=D64))
    if twist:
        assert torch.equal(state.grad, torch.zeros_like(x))
    else:
        assert state.grad is None


@pytest.mark.parametrize("cg_iters", [1, 10])
def test_smc_jacobian_reward_and_twist_by_hand(cg_iters):
    """cov="jacobian" with J = a I (diagonal Gaussian prior): S = σ_y² I + σ² a M Mᵀ, u = CG_k(S, ρ) from 0
    (k = cg_iters, per particle), r = −½ ρᵀu, twist λ a Mᵀ u."""
    prior, pb = _smc_setup()
    sigma, K, N = 0.7, 3, 2
    y_rep = pb.y.repeat(K, 1)
    x = 0.5 + sigma * torch.randn(K * N, 1, 1, 2, generator=torch.Generator().manual_seed(4), dtype=D64)
    x0, r, grad = SMC(cov="jacobian", lam=_LAM, cg_iters=cg_iters)._evaluate(pb, prior, y_rep, x, sigma)
    a = _V / (_V + sigma**2)
    x0_e = 0.5 + a * (x - 0.5)
    S = _SY**2 * torch.eye(3, dtype=D64) + sigma**2 * a * _M @ _M.T
    resid = y_rep - x0_e.reshape(-1, 2) @ _M.T
    u = torch.stack([_cg_reference(S, rho, torch.zeros(3, dtype=D64), min(cg_iters, 3)) for rho in resid])
    assert torch.allclose(x0, x0_e, atol=1e-14)
    assert torch.allclose(r, -0.5 * (resid * u).sum(1), rtol=1e-9)
    assert torch.allclose(grad, (_LAM * a * u @ _M).reshape(x.shape), rtol=1e-9, atol=1e-12)
    _, _, none = SMC(cov="jacobian", twist=False)._evaluate(pb, prior, y_rep, x, sigma)
    assert none is None


def test_smc_equal_weights_at_threshold_one_are_not_resampled():
    """λ = 0, no twist: all weights stay equal, ESS = K exactly, and 'ESS < threshold·K' is false even at
    threshold 1: nothing is resampled, so the step draws only its own noise from the generator."""
    prior, pb = _smc_setup()
    smc = SMC(particles=4, lam=0.0, twist=False, ess_threshold=1.0, eta=_ETA)
    state = smc.init(pb, prior, torch.zeros(2, 1, 1, 2, dtype=D64), 1.0, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    state, info = smc.step(state, 1.0, 0.5, pb, prior, g)
    assert torch.equal(info["ess"], torch.full((2,), 4.0, dtype=D64))
    ref = torch.Generator().manual_seed(1)
    torch.randn(8, 1, 1, 2, generator=ref, dtype=D64)
    assert torch.equal(g.get_state(), ref.get_state())


@pytest.mark.parametrize("rank", [0, 1])
def test_smc_process_keeps_its_rows_of_the_one_process_particles(rank):
    """Particles over processes: process r of size holds rows [r·L, (r+1)·L), L = N·K/size, of the one-process
    particles — at init and after an unresampled step (every process draws the whole noise)."""
    prior, pb = _smc_setup()
    K, N = 4, 2
    whole = SMC(particles=K, lam=_LAM, tau=_TAU, eta=_ETA, ess_threshold=0.0)
    mine = SMC(particles=K, lam=_LAM, tau=_TAU, eta=_ETA, ess_threshold=0.0, comm=_Rank(rank, 2))
    rows, cols = slice(4 * rank, 4 * rank + 4), slice(2 * rank, 2 * rank + 2)
    x_T = torch.zeros(N, 1, 1, 2, dtype=D64)
    states = [s.init(pb, prior, x_T, 1.0, torch.Generator().manual_seed(0)) for s in (whole, mine)]
    assert states[1].x.shape[0] == 4 and torch.equal(states[1].x, states[0].x[rows])
    assert torch.equal(states[1].log_w, states[0].log_w[:, cols])
    new = [s.step(st, 1.0, 0.5, pb, prior, torch.Generator().manual_seed(1))[0] for s, st in zip((whole, mine), states)]
    assert torch.allclose(new[1].x, new[0].x[rows], atol=1e-14)
    assert torch.allclose(new[1].log_w, new[0].log_w[:, cols], atol=1e-12)


@pytest.mark.parametrize("potential", ["max", "sum"])
def test_smc_path_statistic_is_carried_from_init_through_the_steps(potential):
    """max / sum potentials over a path r0 (init), r1, r2 (two untwisted steps, no resampling): the weight
    increments are λ r0, λ S(r0, r1), λ S(r0, r1, r2) with S = max or Σ; log G is their sum."""
    prior, pb = _smc_setup()
    K, N = 3, 2
    smc = SMC(particles=K, lam=_LAM, tau=_TAU, eta=_ETA, ess_threshold=0.0, twist=False, potential=potential)
    state = smc.init(pb, prior, torch.zeros(N, 1, 1, 2, dtype=D64), 1.0, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    rewards = [state.reward]
    for s, s_next in ((1.0, 0.6), (0.6, 0.3)):
        state, _ = smc.step(state, s, s_next, pb, prior, g)
        rewards.append(state.reward)
    # the rewards themselves are checked against the hand computation in the tests above; here the statistic
    y_rep = pb.y.repeat(K, 1)
    x = 0.5 + torch.randn(K * N, 1, 1, 2, generator=torch.Generator().manual_seed(0), dtype=D64)
    assert torch.allclose(rewards[0], _hand_eval(x, y_rep, 1.0)[1], atol=1e-12)
    r = torch.stack(rewards)
    stats = [r[:1].max(0).values, r[:2].max(0).values, r.max(0).values] if potential == "max" else \
        [r[0], r[0] + r[1], r.sum(0)]
    log_g = _LAM * sum(stats)
    assert torch.allclose(state.log_g, log_g, atol=1e-12)
    assert torch.allclose(state.log_w, log_g.reshape(K, N).T, atol=1e-12)
    assert torch.allclose(state.stat, stats[-1], atol=1e-12)


def test_smc_deterministic_step_draws_no_noise():
    """η = 0 (no resampling): σ_up = 0, x' = μ(x) + shift, and the generator is not drawn from."""
    prior, pb = _smc_setup()
    smc = SMC(particles=3, lam=_LAM, tau=_TAU, eta=0.0, ess_threshold=0.0, twist=False)
    state = smc.init(pb, prior, torch.zeros(2, 1, 1, 2, dtype=D64), 1.0, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    before = g.get_state()
    new, _ = smc.step(state, 1.0, 0.5, pb, prior, g)
    assert torch.equal(g.get_state(), before)
    assert torch.allclose(new.x, state.x0 + 0.5 * (state.x - state.x0), atol=1e-14)


def test_smc_untwisted_step_on_multichannel_images():
    """Images of 2 channels (K·N = 3 particles): the untwisted weight increment is the potential alone, per particle."""
    prior = GaussianPrior(torch.full((2, 1, 1), 0.5, dtype=D64), torch.full((2, 1, 1), _V, dtype=D64))
    pb = Problem(dense_operator((2, 1, 1), torch.eye(2, dtype=D64)), torch.tensor([[0.2, 0.9]], dtype=D64), _SY)
    smc = SMC(particles=3, lam=0.0, tau=_TAU, ess_threshold=0.0, twist=False)
    state = smc.init(pb, prior, torch.zeros(1, 2, 1, 1, dtype=D64), 1.0, torch.Generator().manual_seed(0))
    new, _ = smc.step(state, 1.0, 0.5, pb, prior, torch.Generator().manual_seed(1))
    assert torch.equal(new.log_w, torch.zeros(1, 3, dtype=D64))


class _Mirror(LocalParticles):
    """Process 0 of 2 whose partner holds an exact copy of its particles (a consistent two-process system):
    every exchange sees each local particle twice, so the whole system is ``cat([local, local])``."""

    rank, size = 0, 2

    def logsumexp(self, t):
        return torch.logsumexp(torch.cat([t, t], -1), -1)

    def all_gather(self, t, dim):
        return torch.cat([t, t], dim)

    def take(self, tensors, index):
        return [None if t is None else torch.cat([t, t])[index][: t.shape[0]] for t in tensors]


def test_smc_over_processes_normalises_and_gathers_through_the_communicator():
    """With the mirrored partner: the ESS is over all 2·K_here particles (twice the local one); resampling
    draws ancestors from the gathered (N, K) weights and takes this process's rows of whole[index]; the last
    step gathers every particle: weights cat([w, w]), K draws from the gathered x̂0 with the generator's uniforms."""
    prior, pb = _smc_setup()
    K, N = 8, 2
    smc = SMC(particles=K, lam=_LAM, tau=_TAU, eta=_ETA, ess_threshold=1.0, comm=_Mirror())
    state = smc.init(pb, prior, torch.zeros(N, 1, 1, 2, dtype=D64), 1.0, torch.Generator().manual_seed(0))
    assert state.x.shape[0] == 4 * N
    g = torch.Generator().manual_seed(1)
    new, info = smc.step(state, 1.0, 0.5, pb, prior, g)
    # by hand: the step on this process's rows (noise: rows [0, 4N) of the whole draw), then the resampling
    ref_g = torch.Generator().manual_seed(1)
    noise = torch.randn(K * N, 1, 1, 2, generator=ref_g, dtype=D64)[: 4 * N]
    _, up = _hand_sigmas(1.0, 0.5)
    mean = state.x0 + _hand_sigmas(1.0, 0.5)[0] * (state.x - state.x0) / 1.0
    x_new = mean + up**2 * state.grad + up * noise
    x0_new, r_new, grad_new = _hand_eval(x_new, pb.y.repeat(4, 1), 0.5)
    log_pq = (-((x_new - mean) ** 2) + (x_new - mean - up**2 * state.grad) ** 2).flatten(1).sum(1) / (2 * up**2)
    log_w = state.log_w + (log_pq + _LAM * (r_new - state.reward)).reshape(4, N).T
    assert torch.allclose(info["ess"], 2 * _ess(log_w), atol=1e-10)
    U = torch.rand(N, 1, generator=ref_g, dtype=D64)
    idx = _inverse_cdf_reference(torch.softmax(torch.cat([log_w, log_w], 1), -1),
                                 (torch.arange(K, dtype=D64)[None] + U) / K)
    flat = (idx.T * N + torch.arange(N)[None]).reshape(-1)
    assert torch.allclose(new.x, torch.cat([x_new, x_new])[flat][: 4 * N], atol=1e-13)
    assert torch.allclose(new.log_g, torch.cat([_LAM * r_new] * 2)[flat][: 4 * N], atol=1e-12)
    assert torch.equal(new.log_w, torch.zeros(N, 4, dtype=D64))

    final, _ = smc.step(new, 0.5, 0.0, pb, prior, g)
    resid = new.y_rep - new.x0.reshape(-1, 2) @ _M.T
    lw = new.log_w + (_LAM * -(resid**2).sum(1) / (2 * _SY**2) - new.log_g).reshape(4, N).T
    lw_all = torch.cat([lw, lw], 1)
    assert torch.allclose(final.log_w, lw_all, atol=1e-10)
    w = torch.softmax(lw_all, -1)
    xs = torch.cat([new.x0, new.x0]).reshape(K, N, 1, 1, 2)
    assert torch.allclose(final.mean, torch.einsum("nk,kn...->n...", w, xs), atol=1e-12)
    U = torch.rand(N, 1, generator=ref_g, dtype=D64)
    idx = _inverse_cdf_reference(w, (torch.arange(K, dtype=D64)[None] + U) / K)
    assert torch.allclose(final.samples, xs[idx.T, torch.arange(N)[None]], atol=1e-13)


def test_smc_final_mean_of_float32_particles_with_float64_data():
    """float32 particles and float64 measurements (weights then float64): the weighted mean is taken in the
    particles' dtype, Σ_k w_k x̂0_k with w = softmax(log_w)."""
    prior, pb = _smc_setup()
    smc = SMC(particles=3, lam=_LAM, tau=_TAU, eta=_ETA, twist=False, ess_threshold=0.0)
    state = smc.init(pb, prior, torch.zeros(2, 1, 1, 2), 1.0, torch.Generator().manual_seed(0))
    assert state.x.dtype == torch.float32 and state.log_w.dtype == D64
    final, _ = smc.step(state, 1.0, 0.0, pb, prior, torch.Generator().manual_seed(1))
    w = torch.softmax(final.log_w, -1).float()
    expected = torch.einsum("nk,kn...->n...", w, state.x0.reshape(3, 2, 1, 1, 2))
    assert final.mean.dtype == torch.float32 and torch.allclose(final.mean, expected, atol=1e-6)


def test_boundary_settings_of_ddrm_and_dps_are_accepted():
    """η = 0 (deterministic DDRM), η_b = 0 and ζ = 0 (DPS without guidance) are valid settings; just
    outside them is refused."""
    from invdiff.solvers import DDRM, DPS

    DDRM(eta=0.0, eta_b=0.0)
    DDRM(eta=1.0, eta_b=1.0)
    DPS(zeta=0.0)
    with pytest.raises(ValueError, match="eta"):
        DDRM(eta=-1e-9)
    with pytest.raises(ValueError, match="zeta"):
        DPS(zeta=-1e-9)


@pytest.mark.parametrize("field", ["particles", "cg_iters"])
@pytest.mark.parametrize("bad, error", [(2.5, TypeError), (True, TypeError), (0, ValueError), (-3, ValueError)])
def test_smc_counts_must_be_positive_integers(field, bad, error):
    from invdiff.solvers import SMC

    with pytest.raises(error, match=field):
        SMC(**{field: bad})


def test_optional_hyperparameters_are_type_checked_when_given():
    """A field that may be None (DiffPIR's precond_floor) is still checked when it is given."""
    from invdiff.solvers import DiffPIR

    DiffPIR(precond_floor=None)
    with pytest.raises(TypeError, match=r"DiffPIR: precond_floor must be a real number, got 'a'"):
        DiffPIR(precond_floor="a")
    with pytest.raises(TypeError, match=r"DiffPIR: lam must be a real number, got True"):
        DiffPIR(lam=True)
