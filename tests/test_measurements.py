"""Physical measurement models: low-dose CT photon counts and the user's own MRI k-space."""

import os

import numpy as np
import pytest
import torch

from invdiff import Problem
from invdiff.cli import main
from invdiff.measurements import MeasuredProblem, calibration_width, mri_from_kspace, simulate_ct_poisson
from invdiff.operators import cartesian_mask, coil_sensitivities, ct_sparse_view, gaussian_blur, mri_cartesian


# ------------------------------------------------------------------------------------------- CT


def test_ct_poisson_mean_and_variance_match_the_delta_method():
    """Constant phantom, n draws: each bin's sample mean and variance against the delta method,
    with tolerances from the Monte-Carlo error (std/√n for the mean, √(2/(n-1)) relative for the
    variance of a near-Gaussian variable)."""
    op = ct_sparse_view(16, 8)
    n, I0 = 4000, 1e4
    x = torch.full((n, 1, 16, 16), 0.5)  # water
    pb = simulate_ct_poisson(x, op, I0, pixel_size=5.0, generator=torch.Generator().manual_seed(0))
    assert isinstance(pb, Problem) and isinstance(pb, MeasuredProblem)
    s = 2 * 0.0192 * 16 * 5.0
    assert pb.scale == pytest.approx(s)
    p = op.A(x[:1]).double()[0] * s  # physical line integrals
    lam = I0 * torch.exp(-p)
    assert float(lam.min()) > 500  # the delta method's regime (no clamped bins)
    assert pb.details["n_clamped"] == 0
    var_pred = 1.0 / (lam * s**2)
    mean_pred = (p + 0.5 / lam) / s  # second-order delta method: E[-log N/λ] ≈ 1/(2λ)
    torch.testing.assert_close(pb.noise_std[0].double(), var_pred.sqrt(), rtol=1e-5, atol=0)
    assert pb.sigma_y == pytest.approx(float(var_pred.mean().sqrt()), rel=1e-5)
    y = pb.y.double()
    z_mean = (y.mean(0) - mean_pred) / (var_pred / n).sqrt()
    z_var = (y.var(0) / var_pred - 1) / (2 / (n - 1)) ** 0.5
    m = z_mean.numel()  # 184 bins: mean z² is 1 ± 3·√(2/m)
    assert float(z_mean.abs().max()) < 5 and abs(float((z_mean**2).mean()) - 1) < 3 * (2 / m) ** 0.5
    assert float(z_var.abs().max()) < 5 and abs(float(z_var.mean())) < 5 / m**0.5


def test_ct_poisson_is_reproducible_and_handles_zero_counts():
    op = ct_sparse_view(16, 6)
    x = torch.rand((2, 1, 16, 16), generator=torch.Generator().manual_seed(1))
    a = simulate_ct_poisson(x, op, 1e4, generator=torch.Generator().manual_seed(3))
    b = simulate_ct_poisson(x, op, 1e4, generator=torch.Generator().manual_seed(3))
    c = simulate_ct_poisson(x, op, 1e4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)
    assert a.y.shape == op.A(x).shape and a.y.dtype == torch.float32 and torch.equal(a.x_true, x)
    # photon starvation: N = 0 is clamped to min_count before the log, y stays finite
    starved = simulate_ct_poisson(torch.ones((1, 1, 16, 16)), op, 2.0, generator=torch.Generator().manual_seed(0))
    assert starved.details["n_clamped"] > 0 and torch.isfinite(starved.y).all()
    assert float(starved.y.max()) == pytest.approx(-np.log(0.5 / 2.0) / starved.scale, rel=1e-6)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(I0=0.0), ValueError, "I0"),
    (dict(I0=-5.0), ValueError, "I0"),
    (dict(I0=float("nan")), ValueError, "I0"),
    (dict(mu_water=0.0), ValueError, "mu_water"),
    (dict(pixel_size=-1.0), ValueError, "pixel_size"),
    (dict(min_count=2.0), ValueError, "min_count"),
    (dict(x=torch.full((1, 1, 16, 16), 1.5)), ValueError, "[0, 1]"),
    (dict(x=torch.full((1, 1, 16, 16), -0.1)), ValueError, "[0, 1]"),
    (dict(x=torch.full((1, 1, 16, 16), float("nan"))), ValueError, "NaN"),
    (dict(x=torch.ones((1, 1, 16, 16), dtype=torch.uint8)), TypeError, "x"),
    (dict(physics=gaussian_blur(16)), TypeError, "CT"),
    (dict(generator=None), TypeError, "generator"),
])
def test_ct_poisson_bad_input(kwargs, error, message):
    args = dict(x=torch.full((1, 1, 16, 16), 0.5), physics=ct_sparse_view(16, 4), I0=1e4,
                generator=torch.Generator().manual_seed(0))
    args.update(kwargs)
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        simulate_ct_poisson(args.pop("x"), args.pop("physics"), args.pop("I0"), **args)


# ------------------------------------------------------------------------------------------ MRI

H = W = 32


def _phantom():
    """A smooth phantom, exactly zero outside an ellipse."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    r2 = (xx / 0.7) ** 2 + (yy / 0.8) ** 2
    return (0.9 * (1 - r2).clamp_min(0) ** 2 + 0.1 * (1 - ((xx - 0.2) ** 2 + yy**2) / 0.1).clamp_min(0))[None, None]


def _mask():
    m = torch.zeros(H, W)
    m[:, W // 2 - 5:W // 2 + 5] = 1  # with ::3, 11 calibration columns (11..21)
    m[:, ::3] = 1
    return m


def _kspace(op, x):
    """Complex k-space ``(N, H, W)`` (or ``(H, W)``) from the operator's real/imaginary channels."""
    return torch.view_as_complex(op.A(x)[0].moveaxis(0, -1).contiguous())


def test_fft_convention_matches_the_operator():
    """The operator's k-space is the centred orthonormal DFT: DC at (H//2, W//2), sum/√(HW)."""
    x = _phantom()
    k = _kspace(mri_cartesian((H, W), mask=torch.ones(H, W)), x)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x[0, 0].double().numpy()), norm="ortho"))
    np.testing.assert_allclose(k.numpy(), ref, atol=1e-5)
    assert abs(k[H // 2, W // 2]) == pytest.approx(float(x.sum()) / (H * W) ** 0.5, rel=1e-5)


def test_mri_round_trip_with_known_coil_maps():
    x, m, maps = _phantom(), _mask(), coil_sensitivities(4, (H, W))
    op = mri_cartesian((H, W), mask=m, coil_maps=maps)
    y = op.A(x)
    k = _kspace(op, x)
    pb = mri_from_kspace(k.numpy(), m.numpy(), maps.numpy(), sigma_y=0.01, phase_correct=False)
    assert isinstance(pb, Problem) and pb.sigma_y == 0.01 and pb.img_shape == (1, H, W)
    assert pb.y.shape == (1, 2, 4, H, W) and pb.details["calib"] == 11
    torch.testing.assert_close(pb.y * pb.scale, y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pb.physics.A_adjoint(pb.y) * pb.scale, op.A_adjoint(y), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pb.physics.A(x / pb.scale), pb.y, atol=1e-6, rtol=1e-5)
    zero_filled = pb.physics.A_adjoint(pb.y)
    assert float(torch.quantile(zero_filled.abs().flatten(), 0.995)) == pytest.approx(1.0, abs=0.02)
    # phase correction of given maps: a real object has ~zero phase, so little changes
    pc = mri_from_kspace(k, m, maps, sigma_y=0.01)
    err = pc.physics.A_adjoint(pc.y) * pc.scale - op.A_adjoint(y)
    assert float(err.norm() / op.A_adjoint(y).norm()) < 0.01
    given = mri_from_kspace(k, m, maps, sigma_y=0.01, phase_correct=False, scale=2.0)
    assert given.scale == 2.0 and given.details["scale"] == "given"
    torch.testing.assert_close(given.y * 2.0, y, atol=1e-5, rtol=1e-5)
    # a (W,) mask of columns is the same mask
    cols = mri_from_kspace(k, m[0], maps, sigma_y=0.01, phase_correct=False)
    torch.testing.assert_close(cols.y, pb.y)


def test_mri_single_coil_round_trip():
    x, m = _phantom(), _mask()
    op = mri_cartesian((H, W), mask=m)
    y = op.A(x)
    pb = mri_from_kspace(_kspace(op, x), m, sigma_y=0.0, phase_correct=False)
    assert pb.y.shape == (1, 2, H, W) and pb.coil_maps is None
    torch.testing.assert_close(pb.physics.A_adjoint(pb.y) * pb.scale, op.A_adjoint(y), atol=1e-5, rtol=1e-5)
    # with a phase map estimated from the centre: |S| = 1, the image of a real object barely changes
    ph = mri_from_kspace(_kspace(op, x), m, sigma_y=0.0)
    assert ph.y.shape == (1, 2, 1, H, W)
    inside = x[0, 0] > 0
    torch.testing.assert_close(ph.coil_maps.abs()[:, inside], torch.ones(1, int(inside.sum())), atol=1e-5, rtol=0)
    assert float(ph.coil_maps.abs().max()) <= 1 + 1e-5
    err = ph.physics.A_adjoint(ph.y) * ph.scale - op.A_adjoint(y)
    assert float(err.norm() / op.A_adjoint(y).norm()) < 0.01


@pytest.mark.parametrize("full", [True, False])
def test_mri_estimated_coil_maps(full):
    """Sum-of-squares maps from the calibration region: the zero-filled image is within a small
    error of the truth (fully sampled) or of the true maps' zero-filled image (undersampled)."""
    x, maps = _phantom(), coil_sensitivities(4, (H, W))
    m = torch.ones(H, W) if full else _mask()
    op = mri_cartesian((H, W), mask=m, coil_maps=maps)
    y = op.A(x)
    pb = mri_from_kspace(_kspace(op, x), m, sigma_y=0.01)
    assert pb.details["calib"] == (24 if full else 11)
    energy = (pb.coil_maps.abs() ** 2).sum(0)
    assert float((energy[x[0, 0] > 0] - 1).abs().max()) < 1e-4  # Σ|S|² = 1 in the object
    target = x if full else op.A_adjoint(y)
    err = pb.physics.A_adjoint(pb.y) * pb.scale - target
    assert float(err.norm() / target.norm()) < 0.01


def test_mri_sigma_y_estimated_from_the_outermost_samples():
    x, m = _phantom(), torch.ones(64, 64)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    x = (0.8 * torch.exp(-((xx / 0.5) ** 2 + (yy / 0.6) ** 2)))[None, None]
    maps = coil_sensitivities(2, (64, 64))
    op = mri_cartesian((64, 64), mask=m, coil_maps=maps)
    g = torch.Generator().manual_seed(0)
    sigma = 0.02
    k = _kspace(op, x) + sigma * torch.complex(torch.randn(2, 64, 64, generator=g), torch.randn(2, 64, 64, generator=g))
    pb = mri_from_kspace(k, m, maps, phase_correct=False)
    assert pb.sigma_y * pb.scale == pytest.approx(sigma, rel=0.15)  # ~1150 values: MAD error ~ 5 %
    assert pb.details["sigma_y"].startswith("estimated")


def _no_centre():
    m = torch.ones(H, W)
    m[:, W // 2] = 0
    return m


@pytest.mark.parametrize("change, error, message", [
    (lambda k, c: dict(mask=torch.ones(H, W - 1)), ValueError, "mask must have shape"),
    (lambda k, c: dict(mask=torch.ones(W + 2)), ValueError, "one entry per k-space column"),
    (lambda k, c: dict(mask=torch.zeros(H, W)), ValueError, "samples no k-space"),
    (lambda k, c: dict(mask=torch.full((H, W), 0.5)), ValueError, "only 0"),
    (lambda k, c: dict(mask=torch.ones(H, W, dtype=torch.complex64)), TypeError, "mask"),
    (lambda k, c: dict(mask=_no_centre()), ValueError, "calibration region"),
    (lambda k, c: dict(kspace=k.real), TypeError, "kspace must be complex"),
    (lambda k, c: dict(kspace=k.real.numpy()), TypeError, "kspace must be complex"),
    (lambda k, c: dict(kspace=k.clone().fill_(complex("nan"))), ValueError, "NaN"),
    (lambda k, c: dict(kspace=k[None]), ValueError, "kspace must have shape"),
    (lambda k, c: dict(kspace=[[1j]]), TypeError, "kspace"),
    (lambda k, c: dict(coils=c[:1]), ValueError, "coils must have shape"),
    (lambda k, c: dict(coils=c.real), TypeError, "coils must be complex"),
    (lambda k, c: dict(coils=c.clone().fill_(complex("nan"))), ValueError, "coils contains NaN"),
    (lambda k, c: dict(calib=20), ValueError, "calib = 20"),
    (lambda k, c: dict(sigma_y=-1.0), ValueError, "sigma_y"),
    (lambda k, c: dict(phase_correct=1), TypeError, "phase_correct"),
    (lambda k, c: dict(scale=0.0), ValueError, "scale"),
    (lambda k, c: dict(kspace=torch.zeros_like(k)), ValueError, "kspace is zero"),
])
def test_mri_from_kspace_bad_input(change, error, message):
    maps = coil_sensitivities(2, (H, W))
    k = _kspace(mri_cartesian((H, W), mask=torch.ones(H, W), coil_maps=maps), _phantom())
    args = dict(kspace=k, mask=_mask(), coils=None)
    args.update(change(k, maps))
    with pytest.raises(error, match=message):
        mri_from_kspace(args.pop("kspace"), args.pop("mask"), args.pop("coils"), **args)


def test_calibration_width():
    m = _mask()
    assert calibration_width(m) == 11 and calibration_width(m, 4) == 4
    m[H // 2, W // 2] = 0
    assert calibration_width(m) == 0


def test_mri_cartesian_coil_maps_keyword_is_checked():
    maps = coil_sensitivities(3, (H, W))
    op = mri_cartesian((H, W), mask=_mask(), coil_maps=maps, coils=3)
    assert torch.equal(op.coil_maps[0], maps)
    with pytest.raises(ValueError, match="coils is 2"):
        mri_cartesian((H, W), mask=_mask(), coil_maps=maps, coils=2)
    with pytest.raises(TypeError, match="complex"):
        mri_cartesian((H, W), mask=_mask(), coil_maps=maps.real)
    with pytest.raises(ValueError, match="shape"):
        mri_cartesian((H, W), mask=_mask(), coil_maps=maps[..., :-1])


# ------------------------------------------------------------------------------------------ CLI


def test_cli_solve_kspace_and_its_errors(tmp_path, capsys):
    size = 64
    x = _phantom()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    maps = coil_sensitivities(4, (size, size))
    m = cartesian_mask((size, size), 4, 0.125, generator=torch.Generator().manual_seed(0))[0]
    op = mri_cartesian((size, size), mask=m, coil_maps=maps)
    np.save(tmp_path / "k.npy", _kspace(op, x).numpy())
    np.save(tmp_path / "m.npy", m[0].numpy())  # a (W,) mask
    np.save(tmp_path / "c.npy", maps.numpy())
    np.save(tmp_path / "real.npy", _kspace(op, x).real.numpy())
    base = ["solve", "--kspace", str(tmp_path / "k.npy"), "--mask", str(tmp_path / "m.npy"), "--steps", "2",
            "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert np.load(tmp_path / "a" / "reconstruction.npy").shape == (1, 1, size, size)
    assert main(base + ["--coils", str(tmp_path / "c.npy"), "--sigma-y", "0.01", "--out", str(tmp_path / "b")]) == 0
    assert sorted(os.listdir(tmp_path / "b")) == ["reconstruction.npy", "reconstruction.png"]
    capsys.readouterr()
    sino = tmp_path / "y.npy"
    np.save(sino, np.zeros((1, 2, size, size), dtype=np.float32))
    cases = [  # (argv, message, exit code)
        (base + ["--problem", "ct-sparse-8", "--out", str(tmp_path / "e1")], "drop --problem", 2),
        (base + ["--measurement", str(sino), "--out", str(tmp_path / "e2")], "drop --measurement", 2),
        (base + ["--image", str(sino), "--out", str(tmp_path / "e3")], "drop --image", 2),
        (["solve", "--kspace", str(tmp_path / "k.npy"), "--out", str(tmp_path / "e4")], "go together", 2),
        (["solve", "--kspace", str(tmp_path / "nope.npy"), "--mask", str(tmp_path / "m.npy"),
          "--out", str(tmp_path / "e5")], "no --kspace file", 3),
        (["solve", "--kspace", str(tmp_path / "real.npy"), "--mask", str(tmp_path / "m.npy"),
          "--out", str(tmp_path / "e6")], "kspace must be complex", 2),
        (base + ["--coils", str(tmp_path / "m.npy"), "--out", str(tmp_path / "e7")], "coils must be complex", 2),
        # an operator with random parts cannot be rebuilt for --measurement
        (["solve", "--measurement", str(sino), "--operator", "mri_cartesian", "--sigma-y", "0.01",
          "--out", str(tmp_path / "e8")], "--kspace FILE.npy --mask FILE.npy", 2),
        (["solve", "--measurement", str(sino), "--operator", "random_inpainting", "--sigma-y", "0.01",
          "--out", str(tmp_path / "e9")], "random parts", 2),
    ]
    for argv, message, code in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
        assert not os.path.exists(argv[argv.index("--out") + 1])


def test_random_operators_are_found_by_their_signature():
    from invdiff.operators import OPERATORS
    from invdiff.solve_cli import _has_random_parts

    # motion_blur draws its angle and dense its matrix when the CLI rebuilds them (no flag sets them)
    assert {n for n in OPERATORS if _has_random_parts(n)} == {"mri_cartesian", "mri_multicoil", "random_inpainting",
                                                              "motion_blur", "dense"}
