"""Every factory and Problem.simulate reject bad input with a ValueError naming the argument."""

import math

import pytest
import torch

from invdiff.operators import (OPERATORS, box_inpainting, ct_limited_angle, ct_sparse_view, gaussian_blur,
                               kernel_blur, make_operator, mask_inpainting, mri_cartesian, motion_blur,
                               random_inpainting, super_resolution)
from invdiff.problem import Problem


@pytest.mark.parametrize("call,match", [
    (lambda: ct_sparse_view(32, 0), "n_views"),
    (lambda: ct_sparse_view(32, -3), "n_views"),
    (lambda: ct_sparse_view((1, 32, 48), 8), "square"),
    (lambda: ct_sparse_view(32, 8, geometry="cone"), "geometry"),
    (lambda: ct_limited_angle(32, 0), "max_angle_deg"),
    (lambda: ct_limited_angle(32, 200), "max_angle_deg"),
    (lambda: ct_sparse_view(32, 8, fbp_filter="magic"), "fbp_filter"),
    (lambda: mri_cartesian(32, 0.5), "acceleration"),
    (lambda: mri_cartesian(32, math.nan), "acceleration"),
    (lambda: mri_cartesian(32, 4, 1.5), "center_fraction"),
    (lambda: mri_cartesian(32, 4, mask="spiral"), "mask"),
    (lambda: mri_cartesian((3, 32, 32), 4), "channel"),
    (lambda: mri_cartesian(32, 4, coils=0), "coils"),
    (lambda: random_inpainting(32, 1.0), "missing_fraction"),
    (lambda: random_inpainting(32, -0.1), "missing_fraction"),
    (lambda: box_inpainting(32, (20, 20, 20, 20)), "box"),
    (lambda: mask_inpainting(32, torch.ones(16, 16)), "mask"),
    (lambda: mask_inpainting(8, torch.full((8, 8), 0.5)), "mask"),
    (lambda: super_resolution(30, 4), "divisible"),
    (lambda: super_resolution(32, 1), "factor"),
    (lambda: super_resolution(32, 4, filter="lanczos"), "filter"),
    (lambda: super_resolution(16, 4, filter="gaussian"), "smaller than the gaussian anti-aliasing filter"),
    (lambda: gaussian_blur(32, -1.0), "sigma"),
    (lambda: motion_blur(32, 0.0), "length"),
    (lambda: kernel_blur(8, torch.ones(9, 9)), "larger"),
    (lambda: kernel_blur(8, torch.tensor([[math.inf]])), "NaN or Inf"),
    (lambda: gaussian_blur(0), "img_size"),
    (lambda: make_operator("ct_sprase_view", 32), "known operators: .*ct_sparse_view"),
])
def test_factories_reject(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", sorted(set(OPERATORS) - {"finite_difference"}))
def test_wrong_image_size_or_channels(name):
    op = OPERATORS[name]((1, 16, 16))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 1, 16, 16\)"):
        op.A(torch.zeros(1, 1, 16, 24))
    with pytest.raises(ValueError, match=r"expected x of shape"):
        op.A(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="measurement of shape"):
        op.A_adjoint(torch.zeros(1, 1, 3, 3))


@pytest.fixture
def setup(gen):
    return torch.rand(2, 1, 16, 16, generator=gen), ct_sparse_view(16, 8)


@pytest.mark.parametrize("sigma_y", [-0.1, math.nan, math.inf, "a lot"])
def test_simulate_rejects_bad_sigma(setup, sigma_y):
    x, op = setup
    with pytest.raises(ValueError, match="sigma_y"):
        Problem.simulate(x, op, sigma_y)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_simulate_rejects_non_finite_x(setup, bad):
    x, op = setup
    x = x.clone()
    x[0, 0, 3, 3] = bad
    with pytest.raises(ValueError, match=r"x contains 1 non-finite"):
        Problem.simulate(x, op, 0.01)


def test_problem_rejects_non_finite_y(setup):
    x, op = setup
    y = op.A(x)
    y[1, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="y .measurement. contains 1 non-finite"):
        Problem(op, y, 0.01)


def test_problem_rejects_measurement_of_wrong_shape(setup):
    _, op = setup
    with pytest.raises(ValueError, match="measurement of shape"):
        Problem(op, torch.zeros(1, 1, 5, 5), 0.01)


def test_problem_rejects_non_physics():
    with pytest.raises(ValueError, match="deepinv.physics.Physics"):
        Problem(lambda x: x, torch.zeros(1, 1, 4, 4), 0.0)
