"""The position-aware patch prior (PaDIS): assembly, positions, seams, training and errors."""

import math
import warnings

import pytest
import torch

from invdiff.priors import PatchPrior, load_checkpoint
from invdiff.priors.patch import grid_shift, patch_training_batch, positions
from invdiff.priors.unet import UNet, UNetConfig
from invdiff.train import TrainConfig, train


def _net(channels=1, seed=0, zero_output=False):
    torch.manual_seed(seed)
    net = UNet(UNetConfig(channels=channels, base=8, mults=(1, 2), blocks=1, attention_levels=(), cond_channels=2))
    if not zero_output:  # the UNet starts with a zero output layer: perturb it so the network does something
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape))
    return net.eval()


def test_positions_are_pixel_centres_inside_and_beyond_one_outside():
    pos = positions(torch.arange(-2, 10), torch.arange(0, 5), 8, 5)
    assert pos.shape == (2, 12, 5)
    assert torch.allclose(pos[0, 2:, 0], (2 * torch.arange(10.0) + 1) / 8 - 1)
    assert pos[0, 2, 0] == pytest.approx(-1 + 1 / 8) and pos[0, 9, 0] == pytest.approx(1 - 1 / 8)
    assert (pos[0, :2].abs() > 1).all() and (pos[0, 10:].abs() > 1).all()
    assert torch.allclose(pos[1, 0], (2 * torch.arange(5.0) + 1) / 5 - 1)


def test_assembly_denoises_every_pixel_once_with_its_own_patch():
    """Every image pixel comes from the patch of the shifted grid that holds it, denoised with that
    patch's positions, and padding is read as zero: rebuilt here patch by patch."""
    prior = PatchPrior(_net(), patch=16, frame=40)
    x = torch.rand(2, 1, 37, 45, generator=torch.Generator().manual_seed(1))
    sigma = 0.37
    with torch.no_grad():
        d = prior.denoise(x, sigma)
    sy, sx = grid_shift(sigma, 16)
    ny, nx = math.ceil((37 + sy) / 16), math.ceil((45 + sx) / 16)
    rebuilt = torch.full_like(x, float("nan"))
    for a in range(ny):
        for b in range(nx):
            rows = torch.arange(a * 16 - sy, (a + 1) * 16 - sy)
            cols = torch.arange(b * 16 - sx, (b + 1) * 16 - sx)
            z = torch.zeros(2, 1, 16, 16)
            ri, ci = (rows >= 0) & (rows < 37), (cols >= 0) & (cols < 45)
            z[:, :, ri.nonzero()[:, 0][:, None], ci.nonzero()[None, :, 0]] = x[:, :, rows[ri][:, None], cols[ci][None]]
            pos = positions(rows, cols, 37, 45)[None].expand(2, -1, -1, -1)
            with torch.no_grad():
                out = prior.patch_denoise(z, torch.full((2, 1, 1, 1), sigma), pos)
            assert torch.isnan(rebuilt[:, :, rows[ri][:, None], cols[ci][None]]).all(), "a pixel was covered twice"
            rebuilt[:, :, rows[ri][:, None], cols[ci][None]] = out[:, :, ri.nonzero()[:, 0][:, None],
                                                                      ci.nonzero()[None, :, 0]]
    assert not torch.isnan(rebuilt).any()
    assert torch.allclose(d, rebuilt, atol=1e-5)


def test_untrained_network_gives_the_exact_skip_denoiser_on_every_pixel():
    """With a zero output layer F = 0, so D(x) = 0.5 + c_skip (x - 0.5) exactly: nothing lost at the
    borders, padding or crop, whatever the shift and size."""
    prior = PatchPrior(_net(zero_output=True), patch=8, frame=32)
    for h, w, sigma in [(8, 8, 0.1), (19, 33, 0.5), (40, 9, 2.0)]:
        x = torch.rand(3, 1, h, w, generator=torch.Generator().manual_seed(h))
        c_skip = 0.25**2 / (sigma**2 + 0.25**2)
        with torch.no_grad():
            assert torch.allclose(prior.denoise(x, sigma), 0.5 + c_skip * (x - 0.5), atol=1e-6)


def test_seams_move_between_steps_and_denoise_is_a_function():
    sigmas = torch.exp(torch.linspace(math.log(40), math.log(0.002), 50))
    shifts = {grid_shift(float(s), 64) for s in sigmas}
    assert len(shifts) >= 45  # 50 steps, 4096 possible shifts: (almost) every step a new grid
    assert grid_shift(0.3, 64) == grid_shift(float(torch.tensor(0.3, dtype=torch.float32)), 64)
    prior = PatchPrior(_net(), patch=16, frame=32)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(prior.denoise(x, 0.2), prior.denoise(x, 0.2))
        assert torch.allclose(prior.denoise(x.double(), 0.2).float(), prior.denoise(x, 0.2), atol=1e-5)
        # two noise levels, two grids: the outputs differ by more than the sigma change alone explains
        assert not torch.allclose(prior.denoise(x, 0.2), prior.denoise(x, 0.2 * (1 + 1e-6)), atol=1e-4)


def test_each_image_is_denoised_on_the_grid_of_its_own_noise_level():
    """A batch with one sigma per image gives each image what it gets alone (not the first image's grid)."""
    prior = PatchPrior(_net(), patch=16, frame=32)
    x = torch.rand(3, 1, 32, 40, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([0.3, 0.7, 0.3])
    with torch.no_grad():
        together = prior.denoise(x, sigma)
        alone = torch.cat([prior.denoise(x[i:i + 1], float(sigma[i])) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_training_patches_hold_the_frame_pixels_their_positions_name():
    frames = torch.rand(6, 2, 20, 24, generator=torch.Generator().manual_seed(0))
    z, pos = patch_training_batch(frames, 8, torch.Generator().manual_seed(5))
    assert z.shape == (6, 2, 8, 8) and pos.shape == (6, 2, 8, 8)
    rows = torch.round(((pos[:, 0] + 1) * 20 - 1) / 2).long()
    cols = torch.round(((pos[:, 1] + 1) * 24 - 1) / 2).long()
    inside = (rows >= 0) & (rows < 20) & (cols >= 0) & (cols < 24)
    assert torch.equal(inside, (pos.abs() < 1).all(1))
    for k in range(6):
        got = z[k][:, inside[k]]
        want = frames[k][:, rows[k][inside[k]], cols[k][inside[k]]]
        assert torch.equal(got, want)
        assert (z[k][:, ~inside[k]] == 0).all()
    # over many draws the corners reach into the padding on every side
    z, pos = patch_training_batch(frames.repeat(50, 1, 1, 1), 8, torch.Generator().manual_seed(6))
    assert (pos[:, 0, 0, 0] < -1).any() and (pos[:, 0, -1, 0] > 1).any()


def test_bad_input_errors_and_large_image_warning():
    with pytest.raises(ValueError, match="cond_channels=2"):
        PatchPrior(UNet(UNetConfig(channels=1, base=8, mults=(1, 2), blocks=1, attention_levels=())), patch=8,
                   frame=16)
    with pytest.raises(ValueError, match="multiple of 2"):
        PatchPrior(_net(), patch=7, frame=16)
    with pytest.raises(ValueError, match="frame"):
        PatchPrior(_net(), patch=16, frame=8)
    prior = PatchPrior(_net(), patch=16, frame=16)
    with pytest.raises(ValueError, match=r"smaller than the patch size 16"):
        prior.denoise(torch.rand(1, 1, 12, 40), 0.1)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 1, H, W\)"):
        prior.denoise(torch.rand(1, 3, 16, 16), 0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            prior.denoise(torch.rand(1, 1, 40, 16), 0.1)
            prior.denoise(torch.rand(1, 1, 40, 16), 0.1)
    msgs = [str(w.message) for w in caught if "more than twice" in str(w.message)]
    assert len(msgs) == 1 and "40×16" in msgs[0] and "16 px" in msgs[0] and "positions" in msgs[0]


def _tiny(tmp_path, **kw):
    base = dict(data="phantoms", size=16, channels=1, steps=4, batch=2, base=8, n_phantoms=16, warmup=2,
                out=str(tmp_path / "p.safetensors"), seed=3, patch_sizes=(8, 16))
    base.update(kw)
    return TrainConfig(**base)


def test_patch_training_writes_a_patch_prior_and_resumes_exactly(tmp_path):
    path = train(_tiny(tmp_path), progress=False)
    prior = load_checkpoint(path)
    assert isinstance(prior, PatchPrior) and prior.patch == 16 and prior.frame == 16
    assert prior.metadata["patch_sizes"] == "[8, 16]" and prior.net.config.cond_channels == 2
    with torch.no_grad():
        d = prior.denoise(torch.rand(2, 1, 24, 32), 0.3)
    assert d.shape == (2, 1, 24, 32) and torch.isfinite(d).all()
    a, b = tmp_path / "a", tmp_path / "b"
    train(_tiny(a, out=str(a / "p.safetensors"), steps=5), progress=False)
    train(_tiny(b, out=str(b / "p.safetensors"), steps=5, stop_after=2), progress=False)
    train(_tiny(b, out=str(b / "p.safetensors"), steps=5), resume=True, progress=False)
    sa = torch.load(a / "p.safetensors.ckpt.pt", weights_only=True)["ema"]
    sb = torch.load(b / "p.safetensors.ckpt.pt", weights_only=True)["ema"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # other patch sizes or frames cannot continue a run
    with pytest.raises(ValueError, match=r"other data settings: patch_sizes \[8, 16\] there, \[16\] here"):
        train(_tiny(b, out=str(b / "p.safetensors"), steps=6, patch_sizes=(16,)), resume=True, progress=False)
    # a checkpoint without position channels cannot be resumed as a patch run, and vice versa
    train(_tiny(tmp_path / "c", out=str(tmp_path / "c" / "p.safetensors"), patch_sizes=()), progress=False)
    with pytest.raises(ValueError, match="cond_channels"):
        train(_tiny(tmp_path / "c", out=str(tmp_path / "c" / "p.safetensors"), steps=6), resume=True,
              progress=False)


def test_short_patch_training_learns_to_denoise_whole_images(tmp_path):
    """150 steps on 8/16-px patches of 32-px phantoms: the assembled whole-image denoiser beats the
    identity at sigma = 0.2 on new phantoms."""
    cfg = _tiny(tmp_path, size=32, steps=150, batch=8, lr=2e-3, ema_decay=0.0, n_phantoms=64)
    prior = load_checkpoint(train(cfg, progress=False))
    from invdiff.data import body_phantoms

    x = body_phantoms(8, 32, "mixed", generator=torch.Generator().manual_seed(99))
    y = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = (prior.denoise(y, 0.2) - x).pow(2).mean()
    assert err < 0.5 * (y - x).pow(2).mean()


def test_patch_config_errors():
    with pytest.raises(ValueError, match="--patch-sizes entries must be multiples of 8"):
        TrainConfig(data="phantoms", size=64, patch_sizes=(12,))
    with pytest.raises(ValueError, match="<= --size"):
        TrainConfig(data="phantoms", size=32, patch_sizes=(64,))
    with pytest.raises(ValueError, match="unknown corpus"):
        TrainConfig(data="corpus:xray", size=64)
    with pytest.raises(ValueError, match="needs --channels 3"):
        TrainConfig(data="corpus:photo", size=64, channels=1)
    with pytest.raises(ValueError, match="--intensity-aug"):
        TrainConfig(data="phantoms", size=64, intensity_aug=-0.1)


def test_a_position_network_without_patch_metadata_is_refused_on_load(tmp_path):
    from safetensors.torch import save_file

    from invdiff.priors.zoo import read_safetensors

    tensors, meta = read_safetensors(train(_tiny(tmp_path, steps=1), progress=False))
    bad = tmp_path / "no-patch.safetensors"
    save_file(tensors, str(bad), metadata={k: v for k, v in meta.items() if k not in ("patch", "frame")})
    with pytest.raises(ValueError, match="2 conditioning channels but the file has no patch metadata"):
        load_checkpoint(bad)
