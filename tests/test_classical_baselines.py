"""The strongest classical baselines: wavelet-ℓ1 by FISTA (CT/MRI) and plug-and-play BM3D (photographs)."""

import math

import numpy as np
import pytest
import pywt
import torch

from invdiff import Problem
from invdiff.methods import METHODS, get_method
from invdiff.metrics import psnr
from invdiff.operators import (box_inpainting, gaussian_blur, mask_inpainting, mri_cartesian, random_inpainting,
                               super_resolution)
from invdiff.problems import get_problem
from invdiff.solvers import BASELINES, bm3d_denoise, bm3d_restore, pinv, wavelet_l1
from invdiff.operators.spectral import data_prox
from invdiff.solvers.bm3d import initial_estimate
from invdiff.solvers.wavelet import wavelet_l1_objective, wavelet_weight
from invdiff.linalg import cg


@pytest.fixture(scope="module")
def ct():
    return get_problem("ct-sparse-32").make("test", 2, seed=0)


@pytest.fixture(scope="module")
def photos():
    return get_problem("deblur-gauss").images("test", 2)


def _simulate(x, op, sigma, seed=0):
    return Problem.simulate(x, op, sigma, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- wavelet-ℓ1


@pytest.mark.filterwarnings("ignore:Level value")  # pywt: periodization stays orthonormal at any level
def test_wavelet_identity_is_soft_thresholding():
    """A = I, no box: the minimiser is soft-thresholding of the detail coefficients of y by λ."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    pb = _simulate(x, mask_inpainting((3, 32, 32), torch.ones(32, 32)), 0.05)
    lam = 0.04
    got = wavelet_l1(pb, lam, box=None, iters=100, wavelet="db4", levels=3)
    coeffs = pywt.wavedec2(pb.y.double().numpy(), "db4", mode="periodization", level=3, axes=(-2, -1))
    soft = [coeffs[0]] + [tuple(np.sign(c) * np.maximum(np.abs(c) - lam, 0) for c in band) for band in coeffs[1:]]
    want = torch.from_numpy(pywt.waverec2(soft, "db4", mode="periodization", axes=(-2, -1))).float()
    assert (got - want).abs().max() < 1e-5
    assert (want - pb.y).abs().max() > 1e-2  # the thresholding did something


def test_wavelet_objective_decreases_box_kept_and_beats_fbp(ct):
    lam = wavelet_weight(ct.sigma_y)
    assert lam == pytest.approx(ct.sigma_y**2 / 0.1)
    f0 = wavelet_l1_objective(ct, pinv(ct).clamp(0, 1), lam)
    prev = f0
    for iters in (1, 3, 10, 30):
        x = wavelet_l1(ct, iters=iters)
        f = wavelet_l1_objective(ct, x, lam)
        assert (f <= prev * (1 + 1e-6)).all(), (iters, f, prev)
        assert x.min() >= 0 and x.max() <= 1
        prev = f
    assert (prev < 0.9 * f0).all()
    assert (psnr(x, ct.x_true) > psnr(pinv(ct).clamp(0, 1), ct.x_true) + 1.5).all()  # 30 iterations already
    tight = wavelet_l1(ct, iters=5, box=(0.2, 0.6))
    assert tight.min() >= 0.2 and tight.max() <= 0.6


def test_wavelet_on_real_input_mri():
    """Compressed-sensing MRI (2D random sampling, centre kept): far better than zero-filling."""
    x = get_problem("mri-4x").images("test", 2)
    m = (torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) < 0.25).float()
    r = (torch.arange(64) - 32).abs()
    m[(r[:, None] < 4) & (r[None, :] < 4)] = 1
    pb = _simulate(x, mri_cartesian(64, mask=m), 0.02)
    xh = wavelet_l1(pb, iters=100)
    assert xh.shape == x.shape
    assert (psnr(xh.clamp(0, 1), x) > psnr(pinv(pb).clamp(0, 1), x) + 3).all()


def test_wavelet_batch_independent_and_inputs_untouched(ct):
    y0 = ct.y.clone()
    x0 = torch.full_like(ct.x_true, 0.3)
    x0_copy = x0.clone()
    both = wavelet_l1(ct, iters=20, x0=x0)
    for i in range(2):
        one = wavelet_l1(Problem(ct.physics, ct.y[i:i + 1], ct.sigma_y), iters=20, x0=x0[i:i + 1])
        assert torch.allclose(one[0], both[i], atol=1e-5)
    assert torch.equal(ct.y, y0) and torch.equal(x0, x0_copy)
    assert torch.equal(wavelet_l1(ct, iters=5), wavelet_l1(ct, iters=5))  # deterministic


@pytest.mark.parametrize("kwargs, err, match", [
    ({"lam": -1.0}, ValueError, "lam"),
    ({"lam": math.nan}, ValueError, "lam"),
    ({"lam": "big"}, TypeError, "lam"),
    ({"wavelet": "nope"}, ValueError, "unknown wavelet"),
    ({"wavelet": "bior2.2"}, ValueError, "not orthogonal"),
    ({"levels": 7}, ValueError, "divisible by 2\\*\\*levels"),
    ({"levels": 0}, ValueError, "levels"),
    ({"levels": 2.0}, TypeError, "levels"),
    ({"iters": 0}, ValueError, "iters"),
    ({"box": (1.0, 0.0)}, ValueError, "box"),
    ({"x0": torch.zeros(1, 1, 8, 8)}, ValueError, "x0"),
    ({"x0": torch.full((2, 1, 64, 64), math.nan)}, ValueError, "x0"),
])
def test_wavelet_bad_input(ct, kwargs, err, match):
    with pytest.raises(err, match=match):
        wavelet_l1(ct, **{"iters": 1, **kwargs})


# ---------------------------------------------------------------- BM3D


def test_bm3d_deblurring_beats_pinv_and_the_blurred_image(photos):
    pb = _simulate(photos, gaussian_blur((3, 64, 64), 2.0), 0.02)
    y0 = pb.y.clone()
    xh = bm3d_restore(pb, iters=8)
    assert xh.shape == photos.shape and torch.isfinite(xh).all()
    assert xh.min() > -0.2 and xh.max() < 1.2
    gain = psnr(xh.clamp(0, 1), photos)
    assert (gain > psnr(pinv(pb).clamp(0, 1), photos) + 10).all()
    assert (gain > psnr(pb.y.clamp(0, 1), photos) + 2).all()
    assert torch.equal(pb.y, y0)
    assert torch.equal(bm3d_restore(pb, iters=2), bm3d_restore(pb, iters=2))  # deterministic
    one = bm3d_restore(Problem(pb.physics, pb.y[1:], pb.sigma_y), iters=2)
    assert torch.allclose(one[0], bm3d_restore(pb, iters=2)[1], atol=1e-6)  # batch independent


def test_bm3d_inpainting_beats_pinv_and_a_mean_fill(photos):
    op = random_inpainting((3, 64, 64), 0.7, generator=torch.Generator().manual_seed(0))
    pb = _simulate(photos, op, 0.01)
    m = op.mask.expand_as(photos)
    mean_fill = m * pb.y + (1 - m) * (m * pb.y).sum((-2, -1), keepdim=True) / m.sum((-2, -1), keepdim=True)
    start = initial_estimate(pb)  # pull–push fill: observed pixels kept, holes smoothly filled
    assert torch.equal(start * m, pb.y * m)
    assert (psnr(start.clamp(0, 1), photos) > psnr(mean_fill.clamp(0, 1), photos) + 2).all()
    xh = bm3d_restore(pb, iters=8)
    assert (psnr(xh.clamp(0, 1), photos) > psnr(pinv(pb).clamp(0, 1), photos) + 8).all()
    assert (psnr(xh.clamp(0, 1), photos) > psnr(mean_fill.clamp(0, 1), photos) + 3).all()
    box = bm3d_restore(_simulate(photos[:1], box_inpainting((3, 64, 64)), 0.01), iters=2)
    assert box.shape == (1, 3, 64, 64) and torch.isfinite(box).all()


def test_bm3d_grey_super_resolution_and_cg_paths(photos):
    grey = photos.mean(1, keepdim=True)[..., :32, :32]
    pb = _simulate(grey, gaussian_blur((1, 32, 32), 1.0, boundary="reflect"), 0.02)  # no SVD: CG data step
    xh = bm3d_restore(pb, iters=4)
    assert xh.shape == grey.shape and (psnr(xh.clamp(0, 1), grey) > psnr(pb.y.clamp(0, 1), grey)).all()
    sr = _simulate(photos[:1], super_resolution((3, 64, 64), 4), 0.01)
    assert bm3d_restore(sr, iters=2).shape == (1, 3, 64, 64)
    # grey images stored as RGB (constant opponent channels) stay finite
    assert torch.isfinite(bm3d_denoise(grey.expand(-1, 3, -1, -1)[:1], 0.05)).all()


@pytest.mark.parametrize("make", [
    lambda: super_resolution((3, 32, 32), 4),
    lambda: random_inpainting((3, 32, 32), 0.5, generator=torch.Generator().manual_seed(0)),
    lambda: gaussian_blur((3, 32, 32), 1.5),
])
def test_bm3d_closed_form_data_steps_match_cg(make):
    op = make().double()
    g = torch.Generator().manual_seed(0)
    y = op.A(torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64))
    z = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64)
    for mu in (0.01, 1.0):
        got = data_prox(op, y, z, mu, cg_iters=0)
        want = cg(lambda v: op.A_adjoint(op.A(v)) + mu * v, op.A_adjoint(y) + mu * z, z, max_iter=1000, tol=1e-12)
        assert (got - want).norm() < 1e-6 * want.norm()


@pytest.mark.parametrize("kwargs, err, match", [
    ({"sigma_d": 0.0}, ValueError, "sigma_d"),
    ({"sigma_d": math.nan}, ValueError, "sigma_d"),
    ({"rho": -1.0}, ValueError, "rho"),
    ({"iters": 0}, ValueError, "iters"),
    ({"iters": 2.5}, TypeError, "iters"),
    ({"final_stage": "wiener"}, ValueError, "final_stage"),
    ({"x0": torch.zeros(1, 3, 8, 8)}, ValueError, "x0"),
])
def test_bm3d_bad_input(photos, kwargs, err, match):
    pb = _simulate(photos[:1], gaussian_blur((3, 64, 64), 2.0), 0.02)
    with pytest.raises(err, match=match):
        bm3d_restore(pb, **{"iters": 1, **kwargs})


def test_bm3d_refuses_other_channel_counts_and_tiny_images():
    complex_mri = _simulate(torch.rand(1, 2, 32, 32), mri_cartesian((2, 32, 32), real_input=False), 0.01)
    with pytest.raises(ValueError, match="grey .* or RGB"):
        bm3d_restore(complex_mri, iters=1)
    with pytest.raises(ValueError, match="at least 16"):
        bm3d_restore(_simulate(torch.rand(1, 1, 8, 8), gaussian_blur((1, 8, 8), 0.5), 0.01), iters=1)
    assert METHODS["bm3d"].applicable(complex_mri.physics).startswith("BM3D needs grey")


# ---------------------------------------------------------------- registry


def test_both_run_as_methods_on_named_problems():
    assert BASELINES["wavelet"] is wavelet_l1 and BASELINES["bm3d"] is bm3d_restore
    ct8 = get_problem("ct-sparse-8").make("test", 1)
    wav = get_method("wavelet")
    assert wav.family == "classical" and not wav.uses_prior and len(wav.grid["lam"]) == 6
    assert wav.grid_points(ct8)[2]["lam"] == pytest.approx(10 * ct8.sigma_y**2)  # the default, mid-grid
    res = wav.run(ct8, None, params={"lam": wav.grid_points(ct8)[2]["lam"], "iters": 50})
    assert res.x_hat.shape == ct8.x_true.shape and res.seconds > 0
    assert (psnr(res.x_hat.clamp(0, 1), ct8.x_true) > psnr(pinv(ct8).clamp(0, 1), ct8.x_true)).all()

    blur = get_problem("deblur-gauss").make("test", 1)
    bm = get_method("bm3d")
    assert bm.applicable(blur.physics) is True and 4 <= len(bm.grid["rho"]) <= 6
    res = bm.run(blur, None, params={"rho": 0.25, "iters": 6})
    assert res.x_hat.shape == blur.x_true.shape and res.params == {"rho": 0.25, "iters": 6}
    assert (psnr(res.x_hat.clamp(0, 1), blur.x_true) > psnr(blur.y.clamp(0, 1), blur.x_true)).all()

    # applicability: image sides for the wavelet, channels for BM3D
    odd = gaussian_blur((3, 60, 60), 2.0)
    assert "divisible by 8" in wav.applicable(odd)
    assert bm.applicable(odd) is True
    with pytest.raises(ValueError, match="cannot run on this problem"):
        wav.run(_simulate(torch.rand(1, 3, 60, 60), odd, 0.01), None)
