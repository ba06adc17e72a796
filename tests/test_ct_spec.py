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


def test_ct_sparse_view_factory_angles_filter_and_fan_geometry():
    """32 views by default, equally spaced over [0°, 180°) (parallel) or [0°, 360°) (fan); the FBP
    filter reaches the fan-beam operator; the fan geometry is invdiff's default unless given."""
    from invdiff.operators import ct_sparse_view

    op = ct_sparse_view(32)
    assert op.n_views == 32
    torch.testing.assert_close(op.angles.double(), torch.arange(32, dtype=torch.float64) * 180 / 32)
    fan = ct_sparse_view(32, 12, geometry="fan", fbp_filter="hann")
    assert fan.fbp_filter == "hann" and fan.geometry == "fan" and op.geometry == "parallel"
    torch.testing.assert_close(fan.angles.double(), torch.arange(12, dtype=torch.float64) * 30.0)
    n_det = default_fan_parameters(32)["n_detector_pixels"]
    assert fan.A(torch.rand(1, 1, 32, 32)).shape[-2:] == (n_det, 12)
    given = ct_sparse_view(32, 12, geometry="fan", fan_parameters={"n_detector_pixels": n_det + 10})
    assert given.A(torch.rand(1, 1, 32, 32)).shape[-2:] == (n_det + 10, 12)


def test_fbp_and_pinv_baselines_use_the_requested_or_the_operators_filter():
    from invdiff import Problem
    from invdiff.operators import ct_sparse_view
    from invdiff.solvers.baselines import fbp, pinv

    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for own in ("ramp", "hann"):
        op = ct_sparse_view(32, 16, fbp_filter=own)
        pb = Problem(op, op.A(x), 0.0)
        torch.testing.assert_close(fbp(pb), op.fbp(pb.y, filter=own))
        torch.testing.assert_close(pinv(pb), op.fbp(pb.y, filter=own))
        other = "cosine"
        torch.testing.assert_close(fbp(pb, filter=other), op.fbp(pb.y, filter=other))
        assert (fbp(pb, filter=other) - fbp(pb)).abs().max() > 1e-3  # the filters differ visibly


def test_ramp_filter_windows_multiply_the_ramp():
    """The default window is the plain ramp; the others multiply it by their window at each
    frequency f (cycles per sample): Shepp–Logan sinc(f), cosine cos(πf), Hann (1 + cos 2πf)/2."""
    from invdiff.operators.ct import ramp_filter

    ramp = ramp_filter(24)
    torch.testing.assert_close(ramp, ramp_filter(24, "ramp"))
    f = torch.fft.fftfreq(ramp.numel(), dtype=torch.float64)
    windows = {"shepp-logan": torch.sinc(f), "cosine": torch.cos(math.pi * f), "hann": 0.5 + 0.5 * torch.cos(2 * math.pi * f)}
    for name, window in windows.items():
        torch.testing.assert_close(ramp_filter(24, name), ramp * window, rtol=1e-12, atol=1e-15)


def test_ct_class_defaults_checks_and_angular_step():
    """CT's default filter is the ramp; FBP refuses a non-tensor naming y; fan-beam settings must be
    positive and are named; one view weighs π, two views 90° apart weigh π/2 each."""
    from invdiff.operators import CT

    op = CT((1, 16, 16), torch.tensor([0.0, 90.0]))
    assert op.fbp_filter == "ramp" and op.angular_step() == pytest.approx(math.pi / 2)
    assert CT((1, 16, 16), torch.tensor([30.0])).angular_step() == pytest.approx(math.pi)
    with pytest.raises(TypeError, match=r"\by must be a torch.Tensor"):
        op.fbp([[0.0]])
    with pytest.raises(ValueError, match=r"fan_parameters\['source_radius'\]"):
        CT((1, 16, 16), torch.tensor([0.0]), fan_beam=True, fan_parameters={"source_radius": -1.0})
