"""Every validated factory argument at its documented bound: accepted on the bound's valid side, refused just
past it with an error naming the argument (written to kill boundary and message mutants: benchmarks/mutation.md)."""

import math

import pytest
import torch

from invdiff.operators import (box_inpainting, cartesian_mask, coil_sensitivities, ct_limited_angle, ct_sparse_view,
                               dense_operator, gaussian_blur, gaussian_kernel, line_kernel, motion_blur,
                               mri_cartesian, random_inpainting, super_resolution, volume_ct, volume_mri)
from invdiff.operators.volume import check_volume
from invdiff.operators.ct import default_fan_parameters, ramp_filter

G = torch.Generator


REFUSED = [
    # (call, exception, message must contain)
    (lambda: gaussian_kernel(0.0), ValueError, r"^sigma\b"),
    (lambda: gaussian_kernel((1.0, 0.0)), ValueError, r"^sigma\b"),
    (lambda: gaussian_kernel((0.0, 1.0)), ValueError, r"^sigma\b"),
    (lambda: gaussian_kernel((1.0, 1.0, 1.0)), ValueError, "pair"),
    (lambda: gaussian_kernel(1.0, angle=math.inf), ValueError, r"^angle\b"),
    (lambda: gaussian_kernel(1.0, size=4), ValueError, "size must be an odd"),
    (lambda: gaussian_kernel(1.0, size=0), ValueError, r"^size\b"),
    (lambda: line_kernel(0.99, 0.0), ValueError, r"^length\b"),
    (lambda: line_kernel(3.0, math.nan), ValueError, r"^angle\b"),
    (lambda: line_kernel(3.0, 0.0, samples=1), ValueError, r"^samples\b"),
    (lambda: line_kernel(3.0, 0.0, size=2), ValueError, "size must be an odd"),
    (lambda: motion_blur(16, 0.99), ValueError, r"^length\b"),
    (lambda: motion_blur(16, 3.0, generator="seed"), TypeError, r"^generator must be a torch.Generator"),
    (lambda: gaussian_blur(16, 1.0, kernel_size=2), ValueError, "kernel_size"),
    (lambda: random_inpainting(8, 1.0), ValueError, r"^missing_fraction\b"),
    (lambda: random_inpainting(8, -1e-9), ValueError, r"^missing_fraction\b"),
    (lambda: random_inpainting(8, 0.5, generator=3), TypeError, r"^generator must be a torch.Generator"),
    (lambda: box_inpainting(8, (0, 0, 0, 4)), ValueError, "does not fit"),
    (lambda: box_inpainting(8, (0, 0, 4, 0)), ValueError, "does not fit"),
    (lambda: box_inpainting(8, (5, 0, 4, 4)), ValueError, "does not fit"),
    (lambda: box_inpainting(8, (0, 5, 4, 4)), ValueError, "does not fit"),
    (lambda: box_inpainting(8, (-1, 0, 4, 4)), ValueError, "non-negative"),
    (lambda: box_inpainting(8, (0, 0, 4)), ValueError, "non-negative"),
    (lambda: box_inpainting(8, (0, 0, 4, 4, 1)), ValueError, "non-negative"),
    (lambda: box_inpainting(8, "0044"), TypeError, "box"),
    (lambda: box_inpainting(8, (0, 0, 4.5, 4)), TypeError, "box"),
    (lambda: box_inpainting(8, 4), TypeError, "box"),
    (lambda: box_inpainting(8, b"\x00\x00\x04\x04"), TypeError, "box"),
    (lambda: check_volume(torch.zeros(3)), ValueError, r"^volume must be a \(D, C, H, W\)"),
    (lambda: check_volume(torch.zeros(1, 1, 2, 3, 3)), ValueError, r"^volume has shape"),
    (lambda: volume_ct(16, 4, max_angle_deg=0.0), ValueError, r"^max_angle_deg\b"),
    (lambda: volume_ct(16, 4, max_angle_deg=180.01), ValueError, r"^max_angle_deg\b"),
    (lambda: volume_ct(16, 0), ValueError, r"^n_views\b"),
    (lambda: volume_mri(0, 16), ValueError, r"^depth\b"),
    (lambda: volume_mri(2, 16, masks=None), ValueError, r"^masks\b"),
    (lambda: volume_mri(2, 16, masks=("per_slice",)), ValueError, r"^masks\b"),
    (lambda: ct_limited_angle(16, 180.01), ValueError, r"^max_angle_deg\b"),
    (lambda: ct_limited_angle(16, 90.0, 0), ValueError, r"^n_views\b"),
    (lambda: ct_sparse_view(16, 0), ValueError, r"^n_views\b"),
    (lambda: default_fan_parameters(0), ValueError, r"^width\b"),
    (lambda: ramp_filter(0), ValueError, r"^n_det\b"),
    (lambda: cartesian_mask(16, 0.99), ValueError, r"^acceleration\b"),
    (lambda: cartesian_mask(16, 4.0, -0.01), ValueError, r"^center_fraction\b"),
    (lambda: cartesian_mask(16, 4.0, 1.01), ValueError, r"^center_fraction\b"),
    (lambda: cartesian_mask(16, 4.0, n_masks=0), ValueError, r"^n_masks\b"),
    (lambda: cartesian_mask(16, 4.0, generator=1), TypeError, r"^generator must be a torch.Generator"),
    (lambda: coil_sensitivities(0, 16), ValueError, r"^coils\b"),
    (lambda: coil_sensitivities(2, 16, width=0.0), ValueError, r"^width\b"),
    (lambda: mri_cartesian(16, 4.0, coils=0), ValueError, r"^coils\b"),
    (lambda: mri_cartesian(16, 4.0, n_slices=0), ValueError, r"^n_slices\b"),
    (lambda: mri_cartesian(16, 4.0, generator="g"), TypeError, r"^generator must be a torch.Generator"),
    (lambda: super_resolution(16, 1), ValueError, r"^factor\b"),
    (lambda: dense_operator(4, measurements=0), ValueError, r"^measurements\b"),
    (lambda: dense_operator(4, generator=0), TypeError, r"^generator must be a torch.Generator"),
]


@pytest.mark.parametrize("call,exc,match", REFUSED)
def test_refused_past_the_bound(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


ACCEPTED = [
    lambda: gaussian_kernel(1e-3, size=1),
    lambda: line_kernel(1.0, 0.0, samples=2),
    lambda: motion_blur(16, 1.0, 0.0),
    lambda: random_inpainting(8, 0.0),
    lambda: box_inpainting(8, (0, 0, 1, 1)),
    lambda: box_inpainting(8, (7, 7, 1, 1)),
    lambda: box_inpainting(8, (4, 4, 4, 4)),
    lambda: volume_ct(16, 4, max_angle_deg=180.0),
    lambda: volume_ct(16, 1, max_angle_deg=1e-3),
    lambda: volume_mri(1, 16),
    lambda: ct_limited_angle(16, 180.0, 4),
    lambda: cartesian_mask(16, 1.0, 0.0),
    lambda: cartesian_mask(16, 4.0, 1.0),
    lambda: coil_sensitivities(1, 16, width=1e-3),
    lambda: super_resolution(16, 2),
    lambda: dense_operator(4, measurements=1),
]


@pytest.mark.parametrize("call", ACCEPTED)
def test_accepted_on_the_bound(call):
    call()


def test_limited_angle_default_views_and_volume_ct_at_180_degrees_is_sparse_view():
    assert ct_limited_angle(16, 90.0).n_views == 90                       # one view per degree
    assert ct_limited_angle(16, 0.4).n_views == 1                         # at least one
    a = volume_ct(16, 5, max_angle_deg=180.0).angles.double()
    torch.testing.assert_close(a, ct_sparse_view(16, 5).angles.double())
    b = volume_ct(16, 5, max_angle_deg=179.0).angles.double()
    torch.testing.assert_close(b, torch.arange(5, dtype=torch.float64) * 179.0 / 5, rtol=0, atol=1e-4)


def test_volume_mri_passes_every_argument_on():
    a = volume_mri(2, 32, 2.0, 0.25, mask="equispaced", coils=3, generator=G().manual_seed(0))
    b = mri_cartesian(32, 2.0, 0.25, mask="equispaced", coils=3, n_slices=2, generator=G().manual_seed(0))
    assert torch.equal(a.mask, b.mask) and a.coil_maps.shape[-3] == 3 and a.batch == 2
    assert float(a.mask[0, 0, 0, 16 - 4:16 + 4].min()) == 1                 # 8 centre columns (0.25 · 32)
    assert volume_mri(2, 32, generator=G().manual_seed(1)).acceleration == pytest.approx(4.0)


def test_motion_blur_and_line_kernel_defaults():
    torch.testing.assert_close(motion_blur(32, angle=0.0).filter[0, 0], line_kernel(9.0, 0.0))       # length 9
    torch.testing.assert_close(line_kernel(7.5, 35.0), line_kernel(7.5, 35.0, samples=64), rtol=0, atol=0)
    assert type(motion_blur(16, 3.0, 0.0, boundary="reflect")).__name__ == "_BlurPadded"
    assert type(motion_blur(16, 3.0, 0.0)).__name__ == "_BlurFFT"
