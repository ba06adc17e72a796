import torch

from invdiff.operators import mri_cartesian, random_inpainting
from invdiff.problem import Problem


def test_simulate_noise_std_and_determinism():
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    op = random_inpainting(64, 0.0)
    p1 = Problem.simulate(x, op, 0.05, generator=torch.Generator().manual_seed(7))
    p2 = Problem.simulate(x, op, 0.05, generator=torch.Generator().manual_seed(7))
    assert torch.equal(p1.y, p2.y)
    noise = p1.y - op.A(x)
    assert abs(float(noise.std()) - 0.05) < 0.002 and abs(float(noise.mean())) < 0.002
    assert p1.sigma_y == 0.05 and p1.img_shape == (1, 64, 64)


def test_simulate_does_not_mutate_and_copies_truth():
    x = torch.rand(1, 1, 16, 16)
    x0 = x.clone()
    p = Problem.simulate(x, mri_cartesian(16), 0.01)
    assert torch.equal(x, x0)
    p.x_true.add_(1.0)
    assert torch.equal(x, x0)


def test_zero_noise_gives_clean_measurement():
    x = torch.rand(1, 1, 16, 16)
    op = mri_cartesian(16)
    assert torch.equal(Problem.simulate(x, op, 0.0).y, op.A(x))
