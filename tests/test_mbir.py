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


def test_mbir_runs_on_mri_with_a_mask_per_slice():
    from invdiff.operators import volume_mri

    op = volume_mri(4, 16, 4.0, generator=torch.Generator().manual_seed(0))
    prior = SliceStackPrior(GaussianPrior(torch.full((1, 16, 16), 0.5), torch.full((1, 16, 16), 0.04)), 2)
    vol = torch.full((4, 1, 16, 16), 0.5) + 0.1 * torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    pb = Problem.simulate(vol, op, 0.01, generator=torch.Generator().manual_seed(2))
    res = solve(pb, prior, MBIR.preset("mri_cartesian"), steps=3, generator=torch.Generator().manual_seed(3),
                progress=False)
    assert res.x_hat.shape == (4, 1, 16, 16) and torch.isfinite(res.x_hat).all()


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
