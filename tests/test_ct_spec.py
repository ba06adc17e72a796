"""CT factories against their documented geometry and arguments (written to kill surviving mutants:
benchmarks/mutation.md)."""

import math

import pytest
import torch

from invdiff.operators import ct_limited_angle, ct_parallel
from invdiff.operators.ct import default_fan_parameters


@pytest.mark.parametrize("width", [16, 64, 257])
def test_default_fan_parameters_follow_the_documented_geometry(width):
    """Source 4 and detector 2 image widths from the axis (magnification 1.5), bins 1.5/width apart, enough of
    them (plus one each side) to cover the fan of half-angle asin((√2/2)/4) holding the circumscribed circle."""
    p = default_fan_parameters(width)
    assert p["source_radius"] == 4.0 and p["detector_radius"] == 2.0
    assert p["pixel_spacing"] == pytest.approx(1 / width)
    assert p["detector_spacing"] == pytest.approx(1.5 / width)
    half = 6.0 * math.tan(math.asin((2 ** 0.5 / 2) / 4))
    assert p["n_detector_pixels"] == 2 * math.ceil(half / (1.5 / width)) + 2
    with pytest.raises(ValueError, match=r"^width\b"):
        default_fan_parameters(0)


def test_ct_parallel_takes_any_angles_and_its_filter():
    one = ct_parallel(8, [30.0])
    assert one.n_views == 1
    op = ct_parallel(8, torch.tensor([0.0, 45.0, 100.0]), fbp_filter="hann")
    assert op.fbp_filter == "hann" and op.n_views == 3
    torch.testing.assert_close(op.angles.double(), torch.tensor([0.0, 45.0, 100.0], dtype=torch.float64))
    assert ct_parallel(8, [0.0, 90.0]).fbp_filter == "ramp"
    with pytest.raises(ValueError, match=r"^angles_deg\b"):
        ct_parallel(8, [0.0, math.nan])
    with pytest.raises(ValueError, match="at least one"):
        ct_parallel(8, [])


def test_ct_limited_angle_defaults_and_filter():
    op = ct_limited_angle(16)
    assert op.n_views == 90
    torch.testing.assert_close(op.angles.double()[:3], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    assert ct_limited_angle(16, 60.0, 4, fbp_filter="cosine").fbp_filter == "cosine"
    assert ct_limited_angle(16, 1.4).n_views == 1
    assert ct_limited_angle(16, 0.5, 2).n_views == 2
    with pytest.raises(ValueError, match=r"^n_views\b"):
        ct_limited_angle(16, 60.0, 0)
