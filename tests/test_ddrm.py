import pytest
import torch

from invdiff import Problem, solve
from invdiff.operators import ct_sparse_view
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
