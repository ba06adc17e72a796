import numpy as np
import pytest
import torch
from scipy import ndimage

from invdiff.data.phantoms import shepp_logan
from invdiff.operators import ct_limited_angle, ct_parallel, ct_sparse_view


@pytest.fixture(scope="module")
def full_view_256():
    x = shepp_logan(256)[None]
    op = ct_sparse_view(256, 256)
    return x, op, op.A(x)


def test_fbp_reproduces_region_intensities(full_view_256):
    """FBP of a noiseless 256-view sinogram: every flat region's mean within 5 %, global mean within 1 %."""
    x, op, y = full_view_256
    xr = op.A_dagger(y)[0, 0].numpy().astype(np.float64)
    xt = x[0, 0].numpy().astype(np.float64)
    assert abs(xr.mean() / xt.mean() - 1) < 0.01
    flat = (ndimage.maximum_filter(xt, 5) - ndimage.minimum_filter(xt, 5)) == 0
    labels, n = ndimage.label(flat & (xt > 0))
    checked = 0
    for k in range(1, n + 1):
        region = labels == k
        if region.sum() < 10:
            continue
        value = xt[region].mean()
        assert abs(xr[region].mean() - value) / value < 0.05, f"region {k} (value {value:.3f})"
        checked += 1
    assert checked >= 5


def test_fbp_matches_skimage_iradon_error(full_view_256):
    """Our FBP's L2 error is no worse than scikit-image's iradon on the same phantom and angles."""
    from skimage.transform import iradon, radon

    x, op, y = full_view_256
    xt = x[0, 0].numpy().astype(np.float64)
    theta = op.angles.numpy().astype(np.float64)
    ref = iradon(radon(xt, theta, circle=False), theta, circle=False, filter_name="ramp")
    ours = op.A_dagger(y)[0, 0].numpy()
    err_ref = np.linalg.norm(ref - xt) / np.linalg.norm(xt)
    err_ours = np.linalg.norm(ours - xt) / np.linalg.norm(xt)
    assert err_ours <= 1.02 * err_ref


def test_hann_filter_damps_noise_more_than_ramp(gen):
    """On pure noise the Hann-windowed ramp passes clearly less energy than the plain ramp."""
    op = ct_sparse_view(64, 90)
    noise = torch.randn((1,) + op.meas_shape, generator=gen)
    ramp, hann = op.fbp(noise, filter="ramp").norm(), op.fbp(noise, filter="hann").norm()
    assert hann < 0.8 * ramp


def test_sinogram_scale_is_mean_attenuation():
    """A = R / W: a uniform disc of intensity 1 gives central-ray values near its diameter / W."""
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n) - 31.5, torch.arange(n) - 31.5, indexing="ij")
    disc = ((yy**2 + xx**2) <= 16**2).float()[None, None]
    y = ct_sparse_view(n, 4).A(disc)
    assert abs(float(y.max()) - 32 / 64) < 0.03


def test_limited_angle_geometry():
    op = ct_limited_angle(32, 90, 30)
    assert op.n_views == 30
    assert float(op.angles.max()) < 90
    assert abs(op.angular_step() - np.radians(3.0)) < 1e-9
    assert ct_limited_angle(32, 60).n_views == 60


def test_explicit_angles():
    op = ct_parallel(32, [0.0, 45.0, 90.0])
    assert op.A(torch.zeros(1, 1, 32, 32)).shape[-1] == 3


def _disc(n, radius, centre, supersample=8):
    """(1, 1, n, n) float64 image of a disc of intensity 1, antialiased: each pixel (centred on integer
    coordinates, row then column) holds the fraction of its area inside the disc (supersampled)."""
    off = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    coords = (torch.arange(n, dtype=torch.float64)[:, None] + off).reshape(-1)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    inside = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).double()
    return inside.reshape(n, supersample, n, supersample).mean((1, 3))[None, None]


def _detector_offsets(y):
    """Detector bin positions relative to the rotation axis, in pixels: the bins of deepinv's parallel beam
    are the columns of the image zero-padded to ceil(√2 W), one pixel apart, centred on the axis."""
    n_det = y.shape[-2]
    return torch.arange(n_det, dtype=torch.float64) - (n_det - 1) / 2


# deepinv rotates the padded image about its centre, which is pixel (W/2, W/2) of the W × W image (row, column)
def _axis(n):
    return (n // 2, n // 2)


def test_sinogram_of_a_disc_is_its_chord_length():
    """A = R/W: a disc of radius r on the rotation axis projects, at every angle, to the chord 2√(r² − s²)
    divided by W. The antialiased boundary pixels hold their area fraction, which can differ from the
    fraction of a ray's length inside them by up to about half a pixel at each end of the chord: 1 px in all.
    Rays farther than r + 1.5√2 from the centre see exactly nothing: a pixel with any coverage is within
    r + √2/2 of it, and bilinear sampling reaches pixels within √2 of the ray."""
    n, r = 64, 20.0
    op = ct_sparse_view(n, 12).double()
    y = op.A(_disc(n, r, _axis(n)))[0, 0]
    s = _detector_offsets(y)[:, None].expand_as(y)
    chord = 2 * (r**2 - s**2).clamp_min(0).sqrt()
    inside, outside = s.abs() <= r - 1, s.abs() > r + 1.5 * 2**0.5
    assert float((n * y - chord)[inside].abs().max()) < 1.0
    assert float(y[outside].abs().max()) == 0.0


def test_projections_keep_mass_and_centroid_at_every_angle():
    """For any view θ, ∫ R x ds = ∫ x (every pixel is crossed once), so W Σ_s y(s, θ) = Σ x; and the centroid
    of the projection is the projection of the object's centroid, s̄(θ) = cos θ Δcol − sin θ Δrow (deepinv's
    convention: the detector is the column axis at θ = 0 and turns with θ, in degrees). Off-axis discs at
    six angles, including non-multiples of 45°. Bilinear resampling on the rotated grid preserves sums and
    first moments up to its aliasing: 1 % and 0.1 px are loose for discs five or more pixels wide (an angle
    error of 1° moves the centroid of a disc 20 px off axis by 0.35 px)."""
    n = 64
    angles = torch.tensor([0.0, 17.0, 45.0, 90.0, 123.0, 160.0], dtype=torch.float64)
    op = ct_parallel(n, angles).double()
    theta = torch.deg2rad(angles)
    for row, col, r in [(20.3, 40.7, 6.0), (44.0, 25.0, 5.0)]:
        x = _disc(n, r, (row, col))
        y = op.A(x)[0, 0]
        mass = n * y.sum(0)
        assert float((mass / x.sum() - 1).abs().max()) < 0.01
        centroid = (_detector_offsets(y)[:, None] * y).sum(0) / y.sum(0)
        expected = torch.cos(theta) * (col - _axis(n)[1]) - torch.sin(theta) * (row - _axis(n)[0])
        assert float((centroid - expected).abs().max()) < 0.1, (centroid, expected)


def test_fan_beam_adjoint_diameter_and_fbp_intensity():
    """Fan beam: the adjoint is exact (autograd); at every view the rays next to the rotation axis (at most half
    a bin, ~0.5 px, from it: chord 2√(r² − ¼) = 2r − 0.01) cross a centred disc along its diameter, within 1 px
    as for parallel beam; and FBP — the parallel-beam formula, with
    no fan weighting — recovers the disc's intensity 1 inside it. With the source 57.5 cm from an image
    0.5 cm wide (deepinv's geometry) the fan half-angle is under 0.5°, so the fan approximation errs by
    O(γ²) ~ 1e-4; the parallel FBP of the same disc is within 0.1 %; 1 % bounds both. The detector spacing
    is set so that its 258 bins are ~1 px apart at the axis (deepinv's default spacing of 0.077 cm puts
    ~5 px between bins, so only ~20 bins see the image)."""
    from invdiff.operators.checks import check_adjoint

    n, r = 64, 20.0
    # at the axis, bins are spacing × source/(source + detector) = 0.0158/2 = 0.0079 cm apart: one pixel of
    # deepinv's default 0.5 cm image (0.5/64 = 0.0078 cm)
    op = ct_sparse_view(n, 360, geometry="fan", fan_parameters={"detector_spacing": 0.0158}).double()
    assert op.geometry == "fan"
    assert check_adjoint(op, (2, 1, n, n), generator=torch.Generator().manual_seed(0)) < 1e-10
    x = _disc(n, r, _axis(n))
    y = op.A(x)
    central = n * y[0, 0].max(0).values  # the largest chord of each view
    assert float((central - 2 * r).abs().max()) < 1.0, central
    idx = torch.arange(n, dtype=torch.float64)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    dist = ((rows - _axis(n)[0]) ** 2 + (cols - _axis(n)[1]) ** 2).sqrt()
    xr = op.A_dagger(y)[0, 0]
    assert abs(float(xr[dist < r - 3].mean()) - 1) < 0.01
    assert abs(float(xr[(dist > r + 3) & (dist < n / 2)].mean())) < 0.01
    # the same check for parallel beam, the formula's own geometry
    par = ct_sparse_view(n, 180).double()
    xp = par.A_dagger(par.A(x))[0, 0]
    assert abs(float(xp[dist < r - 3].mean()) - 1) < 0.001


@pytest.mark.parametrize("n_views", [31, 32])
def test_fan_beam_fbp_weight_is_half_the_angular_spacing(n_views):
    """Over 360° every parallel direction is seen twice, so FBP weighs each of the n views by Δθ = π/n
    (the integral over [0, 2π) halved), whatever the parity of n."""
    op = ct_sparse_view(32, n_views, geometry="fan")
    assert op.angular_step() == pytest.approx(np.pi / n_views, rel=1e-6)  # angles are stored in float32
