"""The circulant preconditioner and the truncated pseudo-inverse against closed forms (written to kill
surviving mutants: benchmarks/mutation.md)."""

import pytest
import torch

from invdiff.operators import dense_operator, kernel_blur
from invdiff.operators.preconditioner import CirculantPreconditioner
from invdiff.operators.spectral import truncated_pinv

D64 = torch.float64


@pytest.mark.parametrize("n", [8, 9])
def test_spectrum_of_a_circular_blur_is_its_squared_transfer_function(n):
    """For ``A = k ⊛ ·`` (circular) ``AᵀA`` has the spectrum ``|K(ω)|²``; the default floor is 5 % of its top:
    ``P_μ r = F⁻¹(F r / (|K|² + max(μ, 0.05 max|K|²)))``."""
    k = torch.tensor([[0.0, 0.1, 0.0], [0.2, 0.4, 0.05], [0.0, 0.15, 0.1]], dtype=D64)
    op = kernel_blur((1, n, n), k).double()
    pre = CirculantPreconditioner(op, (1, 1, n, n), dtype=D64)
    big = torch.zeros(n, n, dtype=D64)
    big[:3, :3] = op.filter[0, 0].double()                                   # the kernel as the operator stores it
    big = torch.roll(big, shifts=(-1, -1), dims=(0, 1))                      # kernel centre at the origin
    K2 = torch.fft.fft2(big).abs() ** 2
    # deepinv's BlurFFT keeps its transfer function in float32 even after .double(): float32 agreement
    torch.testing.assert_close(pre.spectrum[0, 0], K2, rtol=1e-6, atol=1e-6)
    r = torch.randn(1, 1, n, n, generator=torch.Generator().manual_seed(0), dtype=D64)
    for mu in (0.0, 1e-3, 0.5):
        want = torch.fft.ifft2(torch.fft.fft2(r[0, 0]) / (K2 + max(mu, 0.05 * float(K2.max())))).real
        torch.testing.assert_close(pre.for_mu(mu)(r)[0, 0], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="mu must be >= 0"):
        pre.for_mu(-1e-9)


def test_truncated_pinv_drops_singular_values_at_or_below_the_cutoff():
    """``V diag(1/s · [s > cutoff]) Uᵀ y``: strict inequality, and never below 1e-5."""
    M = torch.diag(torch.tensor([1.0, 0.5, 0.25, 1e-6], dtype=D64))
    op = dense_operator((1, 2, 2), M)
    y = torch.tensor([[2.0, 3.0, 4.0, 5.0]], dtype=D64)
    torch.testing.assert_close(truncated_pinv(op, y, 0.5).flatten(), torch.tensor([2.0, 0, 0, 0], dtype=D64))
    torch.testing.assert_close(truncated_pinv(op, y, 0.3).flatten(), torch.tensor([2.0, 6.0, 0, 0], dtype=D64))
    torch.testing.assert_close(truncated_pinv(op, y, 0.0).flatten(), torch.tensor([2.0, 6.0, 16.0, 0], dtype=D64))


def test_diffpir_passes_its_floor_and_steps_with_the_states_preconditioner():
    """The preconditioner DiffPIR builds has the solver's floor, and each step's data step uses the
    state's preconditioner: with 3 CG iterations the step's x̂0 is the preconditioned solve's."""
    from invdiff import Problem
    from invdiff.operators import ct_sparse_view
    from invdiff.priors import GaussianPrior
    from invdiff.solvers import DiffPIR

    A = ct_sparse_view(16, 8)
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    problem = Problem.simulate(x, A, 0.01, generator=torch.Generator().manual_seed(5))
    prior = GaussianPrior(torch.full((1, 16, 16), 0.5, dtype=torch.float64), 0.05)
    solver = DiffPIR(cg_iters=3, precond_floor=0.3)
    state = solver.init(problem, prior, torch.rand_like(x), 1.0, None)
    assert state.precond.floor == pytest.approx(0.3)
    nxt, _ = solver.step(state, 0.5, 0.25, problem, prior, torch.Generator().manual_seed(0))
    rho = solver.lam * problem.sigma_y**2 / (4 * 0.5**2)
    want = solver.data_step(problem, prior.denoise(state.x, 0.5), rho, state.precond)
    plain = solver.data_step(problem, prior.denoise(state.x, 0.5), rho)
    assert (want - plain).abs().max() > 1e-4  # the preconditioner changes 3 CG iterations visibly
    torch.testing.assert_close(nxt.x0, want)
    assert nxt.precond is state.precond
