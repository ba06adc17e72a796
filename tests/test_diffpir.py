import pytest
import torch

from invdiff import solve
from invdiff.solvers import SOLVERS
from invdiff.solvers.diffpir import DiffPIR

D64 = torch.float64


@pytest.fixture(scope="module")
def setting(smooth_prior, inpainting_problem):
    return (smooth_prior,) + inpainting_problem(0.6)


def test_data_step_is_the_exact_proximal_solution(setting):
    _, pb, _ = setting
    x0 = torch.rand(1, 1, 8, 8, dtype=D64, generator=torch.Generator().manual_seed(1))
    rho = 0.3
    m = pb.physics.mask
    exact = (m * pb.y + rho * x0) / (m + rho)  # (MᵀM + ρI)⁻¹(Mᵀy + ρ x0) for a 0/1 mask
    assert torch.allclose(DiffPIR().data_step(pb, x0, rho), exact, atol=1e-10)


def test_diffpir_mean_is_near_the_exact_posterior_mean(setting):
    prior, pb, post = setting
    res = solve(pb, prior, DiffPIR.preset("random_inpainting"), steps=100, num_samples=32,
                generator=torch.Generator().manual_seed(2), progress=False)
    err = float((res.x_hat - post.mean).norm() / post.mean.norm())
    base = min(float((pb.physics.A_dagger(pb.y) - post.mean).norm() / post.mean.norm()),
               float((prior.mean - post.mean).norm() / post.mean.norm()))
    assert err < 0.25 * base, (err, base)
    assert res.nfe == 100 and res.vjp == 0 and res.samples.shape == (32, 1, 1, 8, 8)


def test_diffpir_presets_and_bad_input():
    assert DiffPIR.preset("gaussian_blur").zeta == 0.1 and DiffPIR.preset("super_resolution").zeta == 0.25
    with pytest.raises(ValueError, match="zeta"):
        DiffPIR(zeta=2.0)
    with pytest.raises(ValueError, match="no DiffPIR preset"):
        DiffPIR.preset("ct_sparse_view")
    assert SOLVERS["diffpir"] is DiffPIR
