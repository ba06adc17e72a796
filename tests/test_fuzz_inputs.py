"""Issue 15, "no silent wrong results": every public entry point works or says exactly why not.

Each bad input is a ``pytest.param`` with a readable id and is checked for the exception type
*and* for a message naming the offending argument. Valid non-float32 inputs (float64, float16,
bfloat16) must give finite results of the input's dtype, and float32 results must not change.
"""

from __future__ import annotations

import json
import math
import re
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepinv
from invdiff.cli import main as cli
from invdiff.operators import (CT, OPERATORS, FiniteDifference, box_inpainting, cartesian_mask, coil_sensitivities,
                               ct_limited_angle, ct_parallel, ct_sparse_view, dense_operator, finite_difference,
                               gaussian_blur, gaussian_kernel, kernel_blur, line_kernel, mask_inpainting,
                               motion_blur, mri_cartesian, ramp_filter, random_inpainting, super_resolution,
                               volume_ct, volume_mri)
from invdiff.priors import load_checkpoint
from invdiff.priors.unet import EDMPrior, UNet, UNetConfig
from invdiff.train import TrainConfig, train

NAN, INF = math.nan, math.inf
IMG = (1, 16, 16)
_BUILT: dict = {}

# Bad inputs counted by test_there_are_at_least_80_bad_inputs (the parametrized tables below).
BAD_TABLES: list = []


def build(name):
    """One operator per registry name, built once for the whole module (seeded)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = OPERATORS[name](IMG)
    return _BUILT[name]


def table(*params):
    BAD_TABLES.append(params)
    return params


# --------------------------------------------------------------------------- 1. operator dtype policy

OPS = ("ct_sparse_view", "ct_fan_beam", "ct_limited_angle", "mri_cartesian", "mri_multicoil", "gaussian_blur",
       "motion_blur", "random_inpainting", "box_inpainting", "super_resolution", "dense")

BAD_X = {
    "uint8": lambda: torch.randint(0, 255, (1,) + IMG, dtype=torch.uint8),
    "int64": lambda: torch.ones((1,) + IMG, dtype=torch.int64),
    "bool": lambda: torch.ones((1,) + IMG, dtype=torch.bool),
    "complex64": lambda: torch.ones((1,) + IMG, dtype=torch.complex64),
    "list": lambda: torch.ones((1,) + IMG).tolist(),
    "ndarray": lambda: np.ones((1,) + IMG, dtype=np.float32),
    "none": lambda: None,
}

X_CASES = table(*[pytest.param(op, kind, id=f"{op}-x-{kind}") for op in OPS for kind in BAD_X])


@pytest.mark.parametrize("name,kind", X_CASES)
def test_operator_rejects_bad_x(name, kind):
    op = build(name)
    with pytest.raises(TypeError, match=r"\bx must be a"):
        op.A(BAD_X[kind]())


def _bad_y(name, kind):
    y = build(name).A(torch.rand((1,) + IMG))
    return {"int32": lambda: y.to(torch.int32), "complex64": lambda: y.to(torch.complex64),
            "list": lambda: y.tolist()}[kind]()


Y_CASES = table(*[pytest.param(op, kind, id=f"{op}-y-{kind}") for op in OPS
                  for kind in ("int32", "complex64", "list")])


@pytest.mark.parametrize("name,kind", Y_CASES)
def test_operator_rejects_bad_y(name, kind):
    op = build(name)
    with pytest.raises(TypeError, match=r"\by must be a"):
        op.A_adjoint(_bad_y(name, kind))


def test_messages_say_how_to_fix_and_hide_private_classes():
    op = build("mri_cartesian")
    with pytest.raises(TypeError) as err:
        op.A(torch.zeros((1,) + IMG, dtype=torch.uint8))
    assert "[0, 1]" in str(err.value) and "_MRI" not in str(err.value) and "MRI(1, 16, 16)" in str(err.value)
    with pytest.raises(TypeError, match="real and imaginary channels"):
        op.A_adjoint(op.A(torch.rand((1,) + IMG)).to(torch.complex64))
    with pytest.raises(TypeError) as err:
        build("gaussian_blur").A(torch.zeros((1,) + IMG, dtype=torch.complex64))
    assert "_Blur" not in str(err.value) and "BlurFFT(1, 16, 16)" in str(err.value)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=6), name=st.sampled_from(OPS))
def test_operator_rejects_random_bad_shapes(shape, name):
    if len(shape) == 4 and tuple(shape[1:]) == IMG:
        return
    op = build(name)
    if op.batch is not None and len(shape) == 4:
        return
    with pytest.raises(ValueError, match=r"expected (x of shape|an image batch)"):
        op.A(torch.zeros(shape))


VALID_OPS = ("ct_sparse_view", "ct_fan_beam", "ct_limited_angle", "mri_cartesian", "mri_multicoil",
             "gaussian_blur", "motion_blur", "random_inpainting", "box_inpainting", "super_resolution", "dense")


@pytest.mark.parametrize("dtype,tol", [pytest.param(torch.float64, 1e-5, id="float64"),
                                       pytest.param(torch.float16, 2e-2, id="float16"),
                                       pytest.param(torch.bfloat16, 5e-2, id="bfloat16")])
@pytest.mark.parametrize("name", VALID_OPS)
def test_operator_accepts_other_float_dtypes(name, dtype, tol):
    """float64/float16/bfloat16 into a float32 operator: computed in float32, returned in x's dtype."""
    op = build(name)
    x32 = torch.rand((2,) + IMG, generator=torch.Generator().manual_seed(1))
    y32 = op.A(x32)
    x = x32.to(dtype)
    y = op.A(x)
    assert y.dtype == dtype and y.shape == y32.shape and torch.isfinite(y).all()
    assert float((y.float() - y32).norm() / y32.norm()) < tol
    back = op.A_adjoint(y32.to(dtype))
    ref = op.A_adjoint(y32)
    assert back.dtype == dtype and back.shape == x32.shape and torch.isfinite(back).all()
    assert float((back.float() - ref).norm() / ref.norm()) < tol


@pytest.mark.parametrize("name", ("ct_sparse_view", "mri_cartesian", "gaussian_blur", "random_inpainting"))
def test_float32_input_into_a_float64_operator(name):
    op = OPERATORS[name](IMG).double()
    x = torch.rand((2,) + IMG, generator=torch.Generator().manual_seed(2))
    y = op.A(x)
    assert y.dtype == torch.float32 and torch.allclose(y.double(), op.A(x.double()), atol=1e-6)
    assert op.A_adjoint(y).dtype == torch.float32


def test_float32_results_are_unchanged():
    """float32 in, float32 operator: the result is exactly the wrapped deepinv computation."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand((2,) + IMG, generator=g)
    ct = ct_sparse_view(IMG, 8)
    ref = deepinv.physics.Tomography(angles=ct.angles.clone(), img_width=16, circle=False, normalize=False,
                                     adjoint_via_backprop=True)
    assert torch.equal(ct.A(x), ref.A(x) * (1.0 / 16))
    blur = gaussian_blur(IMG, 1.5)
    assert torch.equal(blur.A(x), deepinv.physics.BlurFFT(img_size=IMG, filter=blur.filter.clone()).A(x))
    inp = random_inpainting(IMG, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(inp.A(x), x * inp.mask) and torch.equal(inp.A_adjoint(inp.A(x)), x * inp.mask)
    mri = mri_cartesian(16, 4.0, generator=torch.Generator().manual_seed(0))
    fresh = deepinv.physics.MRI(mask=mri.mask.clone(), img_size=(2, 16, 16))
    assert torch.equal(mri.A(x), fresh.A(torch.cat([x, torch.zeros_like(x)], 1)))
    for name in VALID_OPS:  # a rebuilt operator gives the same float32 numbers (no state from casts)
        y1 = build(name).A(x)
        build(name).A(x.double())
        assert torch.equal(build(name).A(x), y1) and y1.dtype == torch.float32


def test_finite_difference_dtypes():
    d = FiniteDifference()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    assert d.A(x).dtype == torch.float64 and d.A(x.half()).dtype == torch.float16
    with pytest.raises(TypeError, match=r"\bx must be a real floating"):
        d.A(x.to(torch.uint8))
    with pytest.raises(TypeError, match=r"\by must be a"):
        d.A_adjoint([[1.0]])


# --------------------------------------------------------------------------- 2. factory arguments

def _nan_mask():
    m = torch.ones(16, 16)
    m[3, 3] = NAN
    return m


FACTORY_CASES = table(
    # img_size, everywhere sizes are parsed
    pytest.param(lambda: ct_sparse_view("188"), TypeError, "img_size", id="ct_sparse_view-size-str"),
    pytest.param(lambda: ct_sparse_view(64.0), TypeError, "img_size", id="ct_sparse_view-size-float"),
    pytest.param(lambda: ct_sparse_view(True), TypeError, "img_size", id="ct_sparse_view-size-bool"),
    pytest.param(lambda: ct_sparse_view((1, 32.0, 32)), TypeError, "img_size", id="ct_sparse_view-size-float-entry"),
    pytest.param(lambda: ct_sparse_view((1, True, 2)), TypeError, "img_size", id="ct_sparse_view-size-bool-entry"),
    pytest.param(lambda: ct_sparse_view(None), TypeError, "img_size", id="ct_sparse_view-size-none"),
    pytest.param(lambda: ct_sparse_view((32,)), ValueError, "img_size", id="ct_sparse_view-size-1-entry"),
    pytest.param(lambda: ct_sparse_view((1, 1, 32, 32)), ValueError, "img_size", id="ct_sparse_view-size-4-entries"),
    pytest.param(lambda: ct_sparse_view(-5), ValueError, "img_size", id="ct_sparse_view-size-negative"),
    pytest.param(lambda: gaussian_blur("32"), TypeError, "img_size", id="gaussian_blur-size-str"),
    pytest.param(lambda: mri_cartesian(b"32"), TypeError, "img_size", id="mri_cartesian-size-bytes"),
    pytest.param(lambda: random_inpainting(16.5), TypeError, "img_size", id="random_inpainting-size-float"),
    pytest.param(lambda: super_resolution((16, "16")), TypeError, "img_size", id="super_resolution-size-str-entry"),
    pytest.param(lambda: dense_operator(torch.tensor(4.0)), TypeError, "img_size", id="dense-size-float-tensor"),
    pytest.param(lambda: finite_difference("188"), TypeError, "img_size", id="finite_difference-size-str"),
    pytest.param(lambda: mri_cartesian((3, 32, 32)), ValueError, "img_size", id="mri_cartesian-size-3-channels"),
    pytest.param(lambda: CT((1, 32, 48), torch.zeros(4)), ValueError, "img_size", id="CT-size-not-square"),
    # CT
    pytest.param(lambda: ct_sparse_view(32, "8"), TypeError, "n_views", id="ct_sparse_view-n_views-str"),
    pytest.param(lambda: ct_sparse_view(32, 8.0), TypeError, "n_views", id="ct_sparse_view-n_views-float"),
    pytest.param(lambda: ct_sparse_view(32, True), TypeError, "n_views", id="ct_sparse_view-n_views-bool"),
    pytest.param(lambda: ct_sparse_view(32, 0), ValueError, "n_views", id="ct_sparse_view-n_views-zero"),
    pytest.param(lambda: ct_sparse_view(32, 8, geometry="cone"), ValueError, "geometry", id="ct_sparse_view-geometry"),
    pytest.param(lambda: ct_sparse_view(32, 8, fbp_filter=None), ValueError, "fbp_filter",
                 id="ct_sparse_view-fbp_filter-none"),
    pytest.param(lambda: ct_sparse_view(32, 8, fan_parameters={"source_radius": 50.0}), ValueError,
                 "fan_parameters", id="ct_sparse_view-fan_parameters-with-parallel"),
    pytest.param(lambda: ct_sparse_view(32, 8, geometry="fan", fan_parameters={"source_radus": 50.0}), ValueError,
                 "fan_parameters", id="ct_sparse_view-fan_parameters-typo"),
    pytest.param(lambda: ct_sparse_view(32, 8, geometry="fan", fan_parameters={"source_radius": -1.0}), ValueError,
                 "fan_parameters", id="ct_sparse_view-fan_parameters-negative"),
    pytest.param(lambda: ct_sparse_view(32, 8, geometry="fan", fan_parameters={"n_detector_pixels": 10.5}),
                 TypeError, "fan_parameters", id="ct_sparse_view-fan_parameters-float-count"),
    pytest.param(lambda: ct_sparse_view(32, 8, geometry="fan", fan_parameters=[1]), TypeError, "fan_parameters",
                 id="ct_sparse_view-fan_parameters-list"),
    pytest.param(lambda: ct_limited_angle(32, 0), ValueError, "max_angle_deg", id="ct_limited_angle-angle-zero"),
    pytest.param(lambda: ct_limited_angle(32, -10), ValueError, "max_angle_deg", id="ct_limited_angle-angle-negative"),
    pytest.param(lambda: ct_limited_angle(32, 180.5), ValueError, "max_angle_deg", id="ct_limited_angle-angle-above-180"),
    pytest.param(lambda: ct_limited_angle(32, NAN), ValueError, "max_angle_deg", id="ct_limited_angle-angle-nan"),
    pytest.param(lambda: ct_limited_angle(32, INF), ValueError, "max_angle_deg", id="ct_limited_angle-angle-inf"),
    pytest.param(lambda: ct_limited_angle(32, "90"), TypeError, "max_angle_deg", id="ct_limited_angle-angle-str"),
    pytest.param(lambda: ct_limited_angle(32, 90, 2.5), TypeError, "n_views", id="ct_limited_angle-n_views-float"),
    pytest.param(lambda: ct_limited_angle(32, 90, -1), ValueError, "n_views", id="ct_limited_angle-n_views-negative"),
    pytest.param(lambda: ct_parallel(32, []), ValueError, "angles_deg", id="ct_parallel-angles-empty"),
    pytest.param(lambda: ct_parallel(32, [0.0, NAN]), ValueError, "angles_deg", id="ct_parallel-angles-nan"),
    pytest.param(lambda: ct_parallel(32, torch.tensor([1j])), TypeError, "angles_deg", id="ct_parallel-angles-complex"),
    pytest.param(lambda: ct_parallel(32, "0,45"), TypeError, "angles_deg", id="ct_parallel-angles-str"),
    pytest.param(lambda: ramp_filter(0), ValueError, "n_det", id="ramp_filter-n_det-zero"),
    pytest.param(lambda: ramp_filter(8, "bogus"), ValueError, "window", id="ramp_filter-window"),
    pytest.param(lambda: volume_ct(32, 8, max_angle_deg=270), ValueError, "max_angle_deg", id="volume_ct-angle-270"),
    pytest.param(lambda: volume_ct(32, 8, max_angle_deg=NAN), ValueError, "max_angle_deg", id="volume_ct-angle-nan"),
    pytest.param(lambda: volume_ct(32, 0), ValueError, "n_views", id="volume_ct-n_views-zero"),
    # MRI
    pytest.param(lambda: mri_cartesian(32, 0.5), ValueError, "acceleration", id="mri-acceleration-below-1"),
    pytest.param(lambda: mri_cartesian(32, NAN), ValueError, "acceleration", id="mri-acceleration-nan"),
    pytest.param(lambda: mri_cartesian(32, "4"), TypeError, "acceleration", id="mri-acceleration-str"),
    pytest.param(lambda: mri_cartesian(32, True), TypeError, "acceleration", id="mri-acceleration-bool"),
    pytest.param(lambda: mri_cartesian(32, 4, -0.1), ValueError, "center_fraction", id="mri-center-negative"),
    pytest.param(lambda: mri_cartesian(32, 4, NAN), ValueError, "center_fraction", id="mri-center-nan"),
    pytest.param(lambda: mri_cartesian(32, 4, mask="spiral"), ValueError, "mask", id="mri-mask-kind"),
    pytest.param(lambda: mri_cartesian(16, mask=torch.ones(16, 16, dtype=torch.complex64)), TypeError, "mask",
                 id="mri-mask-complex"),
    pytest.param(lambda: mri_cartesian(16, mask=_nan_mask()), ValueError, "mask", id="mri-mask-nan"),
    pytest.param(lambda: mri_cartesian(16, mask=torch.full((16, 16), 0.5)), ValueError, "mask", id="mri-mask-not-binary"),
    pytest.param(lambda: mri_cartesian(16, mask=torch.zeros(16, 16)), ValueError, "mask", id="mri-mask-empty"),
    pytest.param(lambda: mri_cartesian(16, mask=torch.ones(8, 8)), ValueError, "mask", id="mri-mask-wrong-shape"),
    pytest.param(lambda: mri_cartesian(32, coils=0), ValueError, "coils", id="mri-coils-zero"),
    pytest.param(lambda: mri_cartesian(32, coils=2.0), TypeError, "coils", id="mri-coils-float"),
    pytest.param(lambda: mri_cartesian(32, real_input="yes"), TypeError, "real_input", id="mri-real_input-str"),
    pytest.param(lambda: mri_cartesian(32, n_slices=0), ValueError, "n_slices", id="mri-n_slices-zero"),
    pytest.param(lambda: mri_cartesian(32, n_slices=2.5), TypeError, "n_slices", id="mri-n_slices-float"),
    pytest.param(lambda: mri_cartesian(32, generator=0), TypeError, "generator", id="mri-generator-int"),
    pytest.param(lambda: cartesian_mask(32, n_masks=0), ValueError, "n_masks", id="cartesian_mask-n_masks-zero"),
    pytest.param(lambda: coil_sensitivities(0, 32), ValueError, "coils", id="coil_sensitivities-coils-zero"),
    pytest.param(lambda: coil_sensitivities(4, 32, width=0.0), ValueError, "width", id="coil_sensitivities-width-zero"),
    pytest.param(lambda: coil_sensitivities(4, 32, width=NAN), ValueError, "width", id="coil_sensitivities-width-nan"),
    pytest.param(lambda: volume_mri(0, 32), ValueError, "depth", id="volume_mri-depth-zero"),
    pytest.param(lambda: volume_mri(4, 32, masks="both"), ValueError, "masks", id="volume_mri-masks"),
    # blur
    pytest.param(lambda: gaussian_blur(32, -1.0), ValueError, "sigma", id="gaussian_blur-sigma-negative"),
    pytest.param(lambda: gaussian_blur(32, 0.0), ValueError, "sigma", id="gaussian_blur-sigma-zero"),
    pytest.param(lambda: gaussian_blur(32, NAN), ValueError, "sigma", id="gaussian_blur-sigma-nan"),
    pytest.param(lambda: gaussian_blur(32, INF), ValueError, "sigma", id="gaussian_blur-sigma-inf"),
    pytest.param(lambda: gaussian_blur(32, "2"), TypeError, "sigma", id="gaussian_blur-sigma-str"),
    pytest.param(lambda: gaussian_blur(32, 1j), TypeError, "sigma", id="gaussian_blur-sigma-complex"),
    pytest.param(lambda: gaussian_blur(32, True), TypeError, "sigma", id="gaussian_blur-sigma-bool"),
    pytest.param(lambda: gaussian_blur(32, (1.0, 2.0, 3.0)), ValueError, "sigma", id="gaussian_blur-sigma-triple"),
    pytest.param(lambda: gaussian_blur(32, (1.0, -2.0)), ValueError, "sigma", id="gaussian_blur-sigma-pair-negative"),
    pytest.param(lambda: gaussian_blur(16, 20.0), ValueError, "sigma", id="gaussian_blur-sigma-too-large-for-image"),
    pytest.param(lambda: gaussian_blur(32, kernel_size=-5), ValueError, "kernel_size", id="gaussian_blur-ksize-negative"),
    pytest.param(lambda: gaussian_blur(32, kernel_size=0), ValueError, "kernel_size", id="gaussian_blur-ksize-zero"),
    pytest.param(lambda: gaussian_blur(32, kernel_size=4), ValueError, "kernel_size", id="gaussian_blur-ksize-even"),
    pytest.param(lambda: gaussian_blur(32, kernel_size=5.0), TypeError, "kernel_size", id="gaussian_blur-ksize-float"),
    pytest.param(lambda: gaussian_blur(32, kernel_size="5"), TypeError, "kernel_size", id="gaussian_blur-ksize-str"),
    pytest.param(lambda: gaussian_blur(16, kernel_size=33), ValueError, "kernel_size", id="gaussian_blur-ksize-too-large"),
    pytest.param(lambda: gaussian_blur(32, angle=NAN), ValueError, "angle", id="gaussian_blur-angle-nan"),
    pytest.param(lambda: gaussian_blur(32, boundary="zero"), ValueError, "boundary", id="gaussian_blur-boundary"),
    pytest.param(lambda: gaussian_kernel(1.0, size=4), ValueError, "size", id="gaussian_kernel-size-even"),
    pytest.param(lambda: kernel_blur(16, torch.ones(3, 3, dtype=torch.complex64)), TypeError, "kernel",
                 id="kernel_blur-kernel-complex"),
    pytest.param(lambda: kernel_blur(16, torch.ones(3, 3, dtype=torch.bool)), TypeError, "kernel",
                 id="kernel_blur-kernel-bool"),
    pytest.param(lambda: kernel_blur(16, torch.tensor([[NAN]])), ValueError, "kernel", id="kernel_blur-kernel-nan"),
    pytest.param(lambda: kernel_blur(16, torch.tensor([[-INF]])), ValueError, "kernel", id="kernel_blur-kernel-inf"),
    pytest.param(lambda: kernel_blur(16, torch.zeros(3, 3)), ValueError, "kernel", id="kernel_blur-kernel-zeros"),
    pytest.param(lambda: kernel_blur(16, torch.ones(0, 0)), ValueError, "kernel", id="kernel_blur-kernel-empty"),
    pytest.param(lambda: kernel_blur(16, torch.ones(2, 1, 3, 3)), ValueError, "kernel", id="kernel_blur-kernel-batch-2"),
    pytest.param(lambda: kernel_blur(16, torch.ones(3, 3, 3)), ValueError, "kernel", id="kernel_blur-kernel-channels"),
    pytest.param(lambda: kernel_blur(16, "box"), TypeError, "kernel", id="kernel_blur-kernel-str"),
    pytest.param(lambda: kernel_blur(16, None), TypeError, "kernel", id="kernel_blur-kernel-none"),
    pytest.param(lambda: motion_blur(32, 0.0), ValueError, "length", id="motion_blur-length-zero"),
    pytest.param(lambda: motion_blur(32, NAN), ValueError, "length", id="motion_blur-length-nan"),
    pytest.param(lambda: motion_blur(32, "9"), TypeError, "length", id="motion_blur-length-str"),
    pytest.param(lambda: motion_blur(32, 9, INF), ValueError, "angle", id="motion_blur-angle-inf"),
    pytest.param(lambda: motion_blur(32, 9, generator=5), TypeError, "generator", id="motion_blur-generator-int"),
    pytest.param(lambda: line_kernel(9, 0.0, size=4), ValueError, "size", id="line_kernel-size-even"),
    pytest.param(lambda: line_kernel(9, 0.0, size=3), ValueError, "size", id="line_kernel-size-cuts-line"),
    pytest.param(lambda: line_kernel(9, 0.0, samples=1), ValueError, "samples", id="line_kernel-samples-one"),
    # inpainting
    pytest.param(lambda: mask_inpainting(16, torch.ones(16, 16, dtype=torch.complex64)), TypeError, "mask",
                 id="mask_inpainting-mask-complex"),
    pytest.param(lambda: mask_inpainting(16, _nan_mask()), ValueError, "mask", id="mask_inpainting-mask-nan"),
    pytest.param(lambda: mask_inpainting(16, torch.full((16, 16), 0.5)), ValueError, "mask",
                 id="mask_inpainting-mask-not-binary"),
    pytest.param(lambda: mask_inpainting(16, torch.ones(8, 8)), ValueError, "mask", id="mask_inpainting-mask-shape"),
    pytest.param(lambda: mask_inpainting(16, "all"), TypeError, "mask", id="mask_inpainting-mask-str"),
    pytest.param(lambda: random_inpainting(16, 1.0), ValueError, "missing_fraction", id="random_inpainting-fraction-1"),
    pytest.param(lambda: random_inpainting(16, 1.5), ValueError, "missing_fraction", id="random_inpainting-fraction-1.5"),
    pytest.param(lambda: random_inpainting(16, -0.1), ValueError, "missing_fraction",
                 id="random_inpainting-fraction-negative"),
    pytest.param(lambda: random_inpainting(16, NAN), ValueError, "missing_fraction", id="random_inpainting-fraction-nan"),
    pytest.param(lambda: random_inpainting(16, "0.5"), TypeError, "missing_fraction", id="random_inpainting-fraction-str"),
    pytest.param(lambda: random_inpainting(16, 0.5, generator="g"), TypeError, "generator",
                 id="random_inpainting-generator-str"),
    pytest.param(lambda: box_inpainting(16, (1, 2, 3)), ValueError, "box", id="box_inpainting-box-3-entries"),
    pytest.param(lambda: box_inpainting(16, (1.5, 0, 2, 2)), TypeError, "box", id="box_inpainting-box-float"),
    pytest.param(lambda: box_inpainting(16, (True, 0, 2, 2)), TypeError, "box", id="box_inpainting-box-bool"),
    pytest.param(lambda: box_inpainting(16, (-1, 0, 2, 2)), ValueError, "box", id="box_inpainting-box-negative"),
    pytest.param(lambda: box_inpainting(16, (10, 10, 10, 10)), ValueError, "box", id="box_inpainting-box-outside"),
    pytest.param(lambda: box_inpainting(16, "abcd"), TypeError, "box", id="box_inpainting-box-str"),
    pytest.param(lambda: box_inpainting(16, 4), TypeError, "box", id="box_inpainting-box-int"),
    # super-resolution
    pytest.param(lambda: super_resolution(32, 1), ValueError, "factor", id="super_resolution-factor-1"),
    pytest.param(lambda: super_resolution(32, 0), ValueError, "factor", id="super_resolution-factor-0"),
    pytest.param(lambda: super_resolution(32, 2.0), TypeError, "factor", id="super_resolution-factor-float"),
    pytest.param(lambda: super_resolution(32, True), TypeError, "factor", id="super_resolution-factor-bool"),
    pytest.param(lambda: super_resolution(30, 4), ValueError, "factor", id="super_resolution-factor-not-dividing"),
    pytest.param(lambda: super_resolution(32, 2, filter="lanczos"), ValueError, "filter", id="super_resolution-filter"),
    # dense
    pytest.param(lambda: dense_operator((1, 1, 2), torch.ones(2, 2, dtype=torch.complex64)), TypeError, "matrix",
                 id="dense-matrix-complex"),
    pytest.param(lambda: dense_operator((1, 1, 2), torch.ones(2, 2, dtype=torch.bool)), TypeError, "matrix",
                 id="dense-matrix-bool"),
    pytest.param(lambda: dense_operator((1, 1, 2), "eye"), TypeError, "matrix", id="dense-matrix-str"),
    pytest.param(lambda: dense_operator((1, 1, 2), torch.tensor([[NAN, 1.0]])), ValueError, "matrix",
                 id="dense-matrix-nan"),
    pytest.param(lambda: dense_operator((1, 1, 2), torch.ones(2, 3)), ValueError, "matrix", id="dense-matrix-shape"),
    pytest.param(lambda: dense_operator(4, measurements=0), ValueError, "measurements", id="dense-measurements-zero"),
    pytest.param(lambda: dense_operator(4, measurements=2.0), TypeError, "measurements", id="dense-measurements-float"),
    pytest.param(lambda: dense_operator((1, 1, 2), torch.eye(2), measurements=2), ValueError, "measurements",
                 id="dense-matrix-and-measurements"),
    pytest.param(lambda: dense_operator(4, generator=3), TypeError, "generator", id="dense-generator-int"),
    # finite differences
    pytest.param(lambda: FiniteDifference(dim="x"), TypeError, "dim", id="FiniteDifference-dim-str"),
    pytest.param(lambda: FiniteDifference(dim=True), TypeError, "dim", id="FiniteDifference-dim-bool"),
    pytest.param(lambda: FiniteDifference(dim=(0, 0)), ValueError, "dim", id="FiniteDifference-dim-repeated"),
    pytest.param(lambda: FiniteDifference(dim=()), ValueError, "dim", id="FiniteDifference-dim-empty"),
    pytest.param(lambda: FiniteDifference(dim=5).A(torch.zeros(1, 1, 4, 4)), ValueError, "dim",
                 id="FiniteDifference-dim-out-of-range"),
)


@pytest.mark.parametrize("call,exc,name", FACTORY_CASES)
def test_factory_rejects(call, exc, name):
    with pytest.raises(exc, match=rf"(?<![\w-]){re.escape(name)}\b") as err:
        call()
    assert "Traceback" not in str(err.value)


@settings(max_examples=30, deadline=None)
@given(bad=st.one_of(st.floats(allow_nan=True), st.text(max_size=4), st.booleans(),
                     st.tuples(st.integers(1, 8), st.floats(allow_nan=True)),
                     st.tuples(st.text(max_size=2), st.integers(1, 8), st.integers(1, 8))))
def test_img_size_rejects_non_integers(bad):
    with pytest.raises(TypeError, match="img_size"):
        gaussian_blur(bad, 1.0, kernel_size=1)


def test_valid_sizes_still_accepted():
    assert random_inpainting(np.int64(8)).img_shape == (1, 8, 8)
    assert random_inpainting((np.int32(1), 8, torch.tensor(8))).img_shape == (1, 8, 8)
    assert ct_limited_angle(16, 90.0).n_views == 90 and ct_sparse_view(16, np.int64(4)).n_views == 4
    assert gaussian_blur(16, (1.0, 2.0), kernel_size=7).filter.shape[-1] == 7
    assert mask_inpainting(4, torch.ones(4, 4, dtype=torch.bool)).mask.dtype == torch.float32


# --------------------------------------------------------------------------- 3. invdiff train

def tiny_cfg(tmp_path, **kw):
    base = dict(data="phantoms", size=16, channels=1, steps=2, batch=2, base=8, n_phantoms=8, warmup=1,
                out=str(tmp_path / "p.safetensors"), seed=3)
    base.update(kw)
    return TrainConfig(**base)


TRAIN_CASES = table(
    pytest.param(dict(base=0), ValueError, "--base", id="train-base-zero"),
    pytest.param(dict(base=-8), ValueError, "--base", id="train-base-negative"),
    pytest.param(dict(base=4), ValueError, "--base", id="train-base-4-groupnorm"),
    pytest.param(dict(base=12), ValueError, "--base", id="train-base-12-groupnorm"),
    pytest.param(dict(base=8.0), TypeError, "--base", id="train-base-float"),
    pytest.param(dict(threads=-1), ValueError, "--threads", id="train-threads-negative"),
    pytest.param(dict(batch=0), ValueError, "--batch", id="train-batch-zero"),
    pytest.param(dict(size=12), ValueError, "--size", id="train-size-not-multiple"),
    pytest.param(dict(size=0), ValueError, "--size", id="train-size-zero"),
    pytest.param(dict(size=16.0), TypeError, "--size", id="train-size-float"),
    pytest.param(dict(size=8, base=1, mults=(1, 2, 4, 4), batch=1), ValueError, "--size", id="train-size-too-small"),
    pytest.param(dict(lr=-1e-3), ValueError, "--lr", id="train-lr-negative"),
    pytest.param(dict(lr=NAN), ValueError, "--lr", id="train-lr-nan"),
    pytest.param(dict(lr=INF), ValueError, "--lr", id="train-lr-inf"),
    pytest.param(dict(ckpt_minutes=-1.0), ValueError, "--ckpt-minutes", id="train-ckpt-minutes-negative"),
    pytest.param(dict(ckpt_minutes=NAN), ValueError, "--ckpt-minutes", id="train-ckpt-minutes-nan"),
    pytest.param(dict(max_minutes=-0.5), ValueError, "--max-minutes", id="train-max-minutes-negative"),
    pytest.param(dict(max_minutes=INF), ValueError, "--max-minutes", id="train-max-minutes-inf"),
    pytest.param(dict(stop_after=-1), ValueError, "--stop-after", id="train-stop-after-negative"),
    pytest.param(dict(stop_after=3), ValueError, "--stop-after", id="train-stop-after-beyond-steps"),
    pytest.param(dict(steps=0), ValueError, "--steps", id="train-steps-zero"),
    pytest.param(dict(channels=2), ValueError, "--channels", id="train-channels-2"),
    pytest.param(dict(data="phantoms", channels=3), ValueError, "--channels", id="train-phantoms-rgb"),
    pytest.param(dict(data="nowhere"), ValueError, "--data", id="train-data-unknown"),
    pytest.param(dict(data="folder:"), ValueError, "--data", id="train-data-empty-folder"),
    pytest.param(dict(seed=-1), ValueError, "--seed", id="train-seed-negative"),
    pytest.param(dict(warmup=0), ValueError, "warmup", id="train-warmup-zero"),
    pytest.param(dict(ema_decay=1.5), ValueError, "ema_decay", id="train-ema-decay-above-1"),
    pytest.param(dict(sigma_min=1.0, sigma_max=0.5), ValueError, "sigma_max", id="train-sigma-range"),
    pytest.param(dict(attention_levels=(5,)), ValueError, "attention_levels", id="train-attention-level"),
    pytest.param(dict(mults=()), ValueError, "mults", id="train-mults-empty"),
)


@pytest.mark.parametrize("kw,exc,name", TRAIN_CASES)
def test_train_config_rejects(tmp_path, kw, exc, name):
    with pytest.raises(exc, match=re.escape(name)):
        tiny_cfg(tmp_path, **kw)


def test_train_config_revalidated_by_train(tmp_path):
    cfg = tiny_cfg(tmp_path)
    cfg.threads = -2  # changed after construction
    with pytest.raises(ValueError, match="--threads"):
        train(cfg, progress=False)


def test_base_message_lists_allowed_values(tmp_path):
    with pytest.raises(ValueError) as err:
        tiny_cfg(tmp_path, base=4)
    msg = str(err.value)
    assert "--base 4" in msg and "GroupNorm" in msg and "multiple of 8" in msg and "12 channels" in msg


CLI_CASES = table(
    pytest.param(["--base", "4"], "--base", id="cli-base-4"),
    pytest.param(["--base", "0"], "--base", id="cli-base-0"),
    pytest.param(["--threads", "-1"], "--threads", id="cli-threads-negative"),
    pytest.param(["--batch", "0"], "--batch", id="cli-batch-0"),
    pytest.param(["--size", "20"], "--size", id="cli-size-20"),
    pytest.param(["--lr", "nan"], "--lr", id="cli-lr-nan"),
    pytest.param(["--max-minutes", "-1"], "--max-minutes", id="cli-max-minutes-negative"),
    pytest.param(["--ckpt-minutes", "-1"], "--ckpt-minutes", id="cli-ckpt-minutes-negative"),
    pytest.param(["--stop-after", "-1"], "--stop-after", id="cli-stop-after-negative"),
)


@pytest.mark.parametrize("args,name", CLI_CASES)
def test_cli_train_reports_one_line(tmp_path, capsys, args, name):
    code = cli(["train", "--steps", "2", "--size", "16", "--base", "8", "--no-progress",
                "--out", str(tmp_path / "c.safetensors")] + args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and name in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run: ``(safetensors path, training checkpoint path)``."""
    d = tmp_path_factory.mktemp("run")
    out = train(tiny_cfg(d, steps=1), progress=False)
    return out, d / "p.safetensors.ckpt.pt"


def _resume_into(tmp_path, state_or_bytes, **kw):
    ckpt = tmp_path / "p.safetensors.ckpt.pt"
    if isinstance(state_or_bytes, bytes):
        ckpt.write_bytes(state_or_bytes)
    else:
        torch.save(state_or_bytes, ckpt)
    return train(tiny_cfg(tmp_path, **kw), resume=True, progress=False)


class _NotATensor:
    pass


def _ckpt_variant(trained, kind):
    raw = trained[1].read_bytes()
    state = torch.load(trained[1], weights_only=True)
    if kind == "truncated":
        return raw[: len(raw) // 2]
    if kind == "garbage":
        return b"not a checkpoint at all" * 10
    if kind == "empty":
        return b""
    if kind == "pickled-object":
        return {**state, "step": _NotATensor()}
    if kind == "tensor":
        return torch.zeros(3)
    if kind == "missing-keys":
        return {"net": state["net"]}
    if kind == "nan-weights":
        net = dict(state["net"])
        net["inp.weight"] = torch.full_like(net["inp.weight"], NAN)
        return {**state, "net": net}
    if kind == "bad-step":
        return {**state, "step": -3}
    if kind == "bad-generator":
        return {**state, "generator": torch.zeros(3)}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,match", table(
    pytest.param("truncated", "cannot be read", id="resume-truncated"),
    pytest.param("garbage", "cannot be read", id="resume-garbage"),
    pytest.param("empty", "cannot be read", id="resume-empty"),
    pytest.param("pickled-object", "cannot be read", id="resume-pickled-object"),
    pytest.param("tensor", "not an invdiff training checkpoint", id="resume-not-a-dict"),
    pytest.param("missing-keys", "not an invdiff training checkpoint", id="resume-missing-keys"),
    pytest.param("nan-weights", "NaN or Inf", id="resume-nan-weights"),
    pytest.param("bad-step", "step", id="resume-negative-step"),
    pytest.param("bad-generator", "generator", id="resume-bad-generator"),
))
def test_resume_rejects_bad_checkpoints(trained, tmp_path, kind, match):
    with pytest.raises(ValueError, match=rf"p\.safetensors\.ckpt\.pt.*{match}"):
        _resume_into(tmp_path, _ckpt_variant(trained, kind))


def test_resume_rejects_another_architecture(trained, tmp_path):
    state = torch.load(trained[1], weights_only=True)
    with pytest.raises(ValueError, match=r"ckpt\.pt was written for base=8, channels=1.* this run asks base=16"):
        _resume_into(tmp_path, state, base=16)
    del state["unet_config"]  # a checkpoint written before the architecture was recorded
    with pytest.raises(ValueError, match=r"ckpt\.pt was written for base=8, channels=1 but this run asks base=16"):
        _resume_into(tmp_path, state, base=16)
    with pytest.raises(ValueError, match="--stop-after 1 is not after the step"):
        _resume_into(tmp_path, state, stop_after=1)


def test_cli_resume_with_a_corrupt_checkpoint_is_one_line(trained, tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    (tmp_path / "c.safetensors.ckpt.pt").write_bytes(trained[1].read_bytes()[:500])
    code = cli(["train", "--steps", "2", "--size", "16", "--base", "8", "--no-progress", "--resume",
                "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "c.safetensors.ckpt.pt" in err and "truncated or corrupt" in err


def test_resume_still_loads_weights_only(trained, monkeypatch, tmp_path):
    seen = []
    real = torch.load

    def spy(*a, **kw):
        seen.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr("invdiff.train.torch.load", spy)
    (tmp_path / "p.safetensors.ckpt.pt").write_bytes(trained[1].read_bytes())
    train(tiny_cfg(tmp_path, steps=2), resume=True, progress=False)
    assert seen == [True]


# --------------------------------------------------------------------------- 4. load_checkpoint

def _safetensors_variant(trained, tmp_path, kind):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    src = trained[0]
    path = tmp_path / f"{kind}.safetensors"
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(src))
    if kind == "bitflip-nan":  # flip the exponent bits of one float32 weight in place: loads, holds NaN
        raw = bytearray(src.read_bytes())
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        start = 8 + n + header["emb_mlp.0.weight"]["data_offsets"][0]
        raw[start:start + 4] = struct.pack("<f", NAN)
        path.write_bytes(bytes(raw))
        return path
    if kind == "inf-weight":
        tensors["out_norm.weight"][0] = INF
    elif kind == "other-base":
        meta["unet_config"] = meta["unet_config"].replace('"base": 8', '"base": 16')
    elif kind == "unbuildable-config":
        meta["unet_config"] = meta["unet_config"].replace('"base": 8', '"base": 12')
    elif kind == "missing-config":
        del meta["unet_config"]
    elif kind == "config-not-json":
        meta["unet_config"] = "{base: 8"
    elif kind == "sigma-nan":
        meta["sigma_min"] = "nan"
    elif kind == "sigma-order":
        meta["sigma_min"], meta["sigma_max"] = "40.0", "0.002"
    elif kind == "channels-mismatch":
        meta["channels"] = "3"
    elif kind == "img-size-bad":
        meta["img_size"] = "[16]"
    elif kind == "extra-weight":
        tensors["extra.weight"] = torch.zeros(2)
    elif kind == "missing-weight":
        del tensors["out.bias"]
    elif kind == "not-invdiff":
        meta["format"] = "something-else"
    else:
        raise AssertionError(kind)
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("kind,match", table(
    pytest.param("bitflip-nan", "NaN or Inf", id="ckpt-bitflip-nan"),
    pytest.param("inf-weight", "NaN or Inf", id="ckpt-inf-weight"),
    pytest.param("other-base", "do not fit the UNet described in its metadata", id="ckpt-metadata-other-base"),
    pytest.param("unbuildable-config", "does not describe a buildable UNet", id="ckpt-metadata-unbuildable"),
    pytest.param("missing-config", "missing unet_config", id="ckpt-metadata-missing-config"),
    pytest.param("config-not-json", "unreadable metadata", id="ckpt-metadata-not-json"),
    pytest.param("sigma-nan", "sigma_min", id="ckpt-metadata-sigma-nan"),
    pytest.param("sigma-order", "sigma_min", id="ckpt-metadata-sigma-order"),
    pytest.param("channels-mismatch", "channels", id="ckpt-metadata-channels"),
    pytest.param("img-size-bad", "img_size", id="ckpt-metadata-img-size"),
    pytest.param("extra-weight", "unexpected", id="ckpt-extra-weight"),
    pytest.param("missing-weight", "missing", id="ckpt-missing-weight"),
    pytest.param("not-invdiff", "not an invdiff EDM-UNet checkpoint", id="ckpt-format"),
))
def test_load_checkpoint_rejects(trained, tmp_path, kind, match):
    path = _safetensors_variant(trained, tmp_path, kind)
    with pytest.raises(ValueError, match=rf"{kind}\.safetensors.*{match}|{match}.*{kind}\.safetensors"):
        load_checkpoint(path)


def test_load_checkpoint_file_errors(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_checkpoint(tmp_path)
    text = tmp_path / "notes.safetensors"
    text.write_text("these are not weights")
    with pytest.raises(ValueError, match="notes.safetensors"):
        load_checkpoint(text)
    assert load_checkpoint(trained[0]).metadata["steps"] == "1"  # the original still loads


BAD_TABLES.append(("missing", "directory", "text"))  # the three file errors above


# --------------------------------------------------------------------------- 5. prior inputs

@pytest.fixture(scope="module")
def edm():
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=1, base=8, mults=(1, 2), blocks=1, attention_levels=(1,)))
    with torch.no_grad():  # non-zero output layers, so the network's output matters
        net.out.weight.normal_(0, 0.1)
        net.out.bias.normal_(0, 0.1)
    return EDMPrior(net).eval().requires_grad_(False)


def _x(dtype=torch.float32):
    return torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5)).to(dtype)


PRIOR_X_CASES = table(
    pytest.param(lambda: _x().tolist(), "list", id="prior-x-list"),
    pytest.param(lambda: _x().numpy(), "ndarray", id="prior-x-ndarray"),
    pytest.param(lambda: (_x() * 255).to(torch.uint8), "uint8", id="prior-x-uint8"),
    pytest.param(lambda: _x().to(torch.int64), "int64", id="prior-x-int64"),
    pytest.param(lambda: _x() > 0.5, "bool", id="prior-x-bool"),
    pytest.param(lambda: _x().to(torch.complex64), "complex64", id="prior-x-complex"),
)


@pytest.mark.parametrize("make,kind", PRIOR_X_CASES)
@pytest.mark.parametrize("which", ["edm", "gaussian"])
def test_prior_rejects_bad_x(make, kind, which, edm, smooth_prior):
    prior = edm if which == "edm" else smooth_prior
    with pytest.raises(TypeError, match=r"\bx must be a"):
        prior.denoise(make(), 0.1)
    with pytest.raises(TypeError, match=r"\bx must be a"):
        prior.score(make(), 0.1)


PRIOR_SIGMA_CASES = table(
    pytest.param(-0.1, ValueError, id="prior-sigma-negative"),
    pytest.param(0.0, ValueError, id="prior-sigma-zero"),
    pytest.param(NAN, ValueError, id="prior-sigma-nan"),
    pytest.param(INF, ValueError, id="prior-sigma-inf"),
    pytest.param([0.1, 0.2, 0.3], ValueError, id="prior-sigma-batch-3-for-2"),
    pytest.param(torch.tensor([0.1, NAN]), ValueError, id="prior-sigma-one-nan"),
    pytest.param(torch.ones(2, 2), ValueError, id="prior-sigma-2x2"),
    pytest.param("0.1", TypeError, id="prior-sigma-str"),
    pytest.param(None, TypeError, id="prior-sigma-none"),
    pytest.param(0.1j, TypeError, id="prior-sigma-complex"),
    pytest.param(True, TypeError, id="prior-sigma-bool"),
    pytest.param(torch.tensor([0.1 + 0j, 0.2]), TypeError, id="prior-sigma-complex-tensor"),
)


@pytest.mark.parametrize("sigma,exc", PRIOR_SIGMA_CASES)
def test_prior_rejects_bad_sigma(sigma, exc, edm):
    with pytest.raises(exc, match=r"\bsigma must be"):
        edm.denoise(_x(), sigma)


def test_edm_prior_float64_and_float16_inputs(edm):
    x32 = _x()
    sigma = torch.tensor([0.1, 0.5])
    ref = edm.denoise(x32, sigma)
    for dtype, tol in ((torch.float64, 1e-5), (torch.float16, 2e-2)):
        out = edm.denoise(x32.to(dtype), sigma.to(dtype))
        assert out.dtype == dtype and out.shape == x32.shape and torch.isfinite(out).all()
        assert float((out.float() - ref).abs().max()) < tol


def test_edm_prior_float32_is_unchanged(edm):
    """The float32 path is exactly the EDM formula with the network in float32."""
    x = _x()
    s = torch.tensor([0.1, 0.5]).reshape(-1, 1, 1, 1)
    sd = edm.sigma_data
    xc = x - 0.5
    f = edm.net(1 / torch.sqrt(s**2 + sd**2) * xc, torch.log(s.reshape(-1)) / 4)
    expected = 0.5 + sd**2 / (s**2 + sd**2) * xc + s * sd / torch.sqrt(s**2 + sd**2) * f
    assert torch.equal(edm.denoise(x, s.reshape(-1)), expected)


# --------------------------------------------------------------------------- count

def test_there_are_at_least_80_bad_inputs():
    n = sum(len(t) for t in BAD_TABLES)
    assert n >= 80, n
