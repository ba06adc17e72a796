import pytest
import torch

from invdiff import Problem, solve
from invdiff.operators import ct_sparse_view, random_inpainting
from invdiff.priors import GaussianPrior
from invdiff.solvers import SOLVERS
from invdiff.solvers.pigdm import PiGDM

D64 = torch.float64


def test_pigdm_is_exact_for_an_isotropic_gaussian_prior_of_variance_one_quarter():
    """ΠGDM's r_σ² = σ²/(1 + 4σ²) is the exact Var[x0 | x_σ] of N(m, I/4): the guided sampler then
    samples the exact posterior, up to discretisation."""
    prior = GaussianPrior(torch.full((1, 8, 8), 0.5, dtype=D64), torch.full((1, 8, 8), 0.25, dtype=D64))
    g = torch.Generator().manual_seed(0)
    op = random_inpainting((1, 8, 8), 0.5, generator=g).double()
    x = prior.sample(1, generator=g)
    pb = Problem.simulate(x, op, 0.1, generator=g)
    m = op.mask
    post_var = m * (1 / (1 / 0.25 + 1 / 0.1**2)) + (1 - m) * 0.25
    post_mean = m * post_var * (0.5 / 0.25 + pb.y / 0.1**2) + (1 - m) * 0.5
    def run(steps):
        return solve(pb, prior, PiGDM(), steps=steps, num_samples=3000, generator=torch.Generator().manual_seed(1),
                     progress=False)

    def var_err(res):  # signed mean relative variance error on the observed pixels
        return float((res.samples.var(0) / post_var - 1)[m > 0].mean())

    coarse, fine = run(100), run(1000)
    assert torch.allclose(fine.x_hat, post_mean, atol=4 * (0.25 / 3000) ** 0.5)
    # the ancestral discretisation under-disperses (−25 % at 100 steps); it must vanish with steps
    assert abs(var_err(fine)) < 0.06 and abs(var_err(fine)) < 0.3 * abs(var_err(coarse)), (var_err(coarse), var_err(fine))
    assert float((fine.samples.var(0) / post_var - 1)[m == 0].abs().mean()) < 0.05
    assert (fine.nfe, fine.vjp) == (1000, 1000)


def test_pigdm_runs_on_complex_svd_and_refuses_non_decomposable(blur_problem):
    prior, op, pb = blur_problem
    x = pb.x_true
    res = solve(pb, prior, PiGDM(), steps=50, generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.isfinite(res.x_hat).all()
    assert float((op.A(res.x_hat) - pb.y).norm()) < float((op.A(torch.full_like(x, 0.5)) - pb.y).norm())
    ct = Problem.simulate(torch.rand(1, 1, 16, 16), ct_sparse_view(16, 4), 0.01)
    with pytest.raises(ValueError, match="SVD"):
        solve(ct, GaussianPrior(torch.full((1, 16, 16), 0.5), torch.full((1, 16, 16), 0.05)), PiGDM(), steps=3)
    assert SOLVERS["pigdm"] is PiGDM
