"""invdiff solvers the deepinv way: model(y, physics), deepinv.test, noise from physics.noise_model."""

import deepinv
import pytest
import torch

from invdiff import Problem, as_reconstructor, solve
from invdiff.problems import get_problem


class _Images(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def _ct_with_noise():
    spec = get_problem("ct-sparse-8")
    physics = spec.operator()
    physics.noise_model = deepinv.physics.GaussianNoise(sigma=spec.sigma_y, rng=torch.Generator().manual_seed(0))
    return spec, physics


def test_deepinv_test_runs_an_invdiff_solver_on_a_named_problem():
    spec, physics = _ct_with_noise()
    x = spec.images("test", 2)
    model = as_reconstructor(spec.build_prior(), spec.solver("diffpir"), steps=5)
    out = deepinv.test(model, torch.utils.data.DataLoader(_Images(x), batch_size=2), physics,
                       online_measurements=True, show_progress_bar=False, verbose=False)
    # the diffusion reconstruction beats deepinv's no-learning baseline (Aᵀy) by a wide margin
    assert out["PSNR"] > out["PSNR no learning"] + 10


def test_reconstructor_equals_solve_with_the_noise_of_the_physics():
    spec, physics = _ct_with_noise()
    pb = spec.make("test", 1, seed=3)
    model = as_reconstructor(spec.build_prior(), "dps", steps=3, seed=5)
    x_hat = model(pb.y, physics)
    ref = solve(Problem(pb.physics, pb.y, spec.sigma_y), spec.build_prior(), spec.solver("dps").__class__(),
                steps=3, generator=torch.Generator().manual_seed(5), progress=False).x_hat
    assert torch.equal(x_hat, ref)
    assert torch.equal(model(pb.y, physics), x_hat)  # reseeded at every call


def test_problem_from_physics_reads_the_noise_model():
    spec, physics = _ct_with_noise()
    y = physics(spec.images("test", 1))
    assert Problem.from_physics(physics, y).sigma_y == pytest.approx(spec.sigma_y)
    assert Problem.from_physics(spec.operator(), y).sigma_y == 0.0  # deepinv's default ZeroNoise
    poisson = spec.operator()
    poisson.noise_model = deepinv.physics.PoissonNoise(gain=0.01)
    with pytest.raises(ValueError, match="PoissonNoise.*give sigma_y"):
        Problem.from_physics(poisson, y)
    assert Problem.from_physics(poisson, y, sigma_y=0.02).sigma_y == 0.02
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        as_reconstructor(None, "nope")
