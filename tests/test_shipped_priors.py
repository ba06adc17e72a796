"""The shipped checkpoints: present, sha256-verified, consistent with the catalog, and useful."""

import re
from pathlib import Path

import pytest
import torch

from invdiff.data import body_phantoms, sample_photo
from invdiff.metrics import psnr
from invdiff.priors import load_prior
from invdiff.priors.zoo import WEIGHTS_DIR, catalog, sha256_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(catalog()))
def test_shipped_prior_loads_and_matches_catalog(name):
    entry = catalog()[name]
    path = WEIGHTS_DIR / entry["file"]
    assert sha256_file(path) == entry["sha256"]
    assert path.stat().st_size <= 20 * 2**20
    prior = load_prior(name)
    assert prior.channels == entry["channels"] and list(prior.img_size) == entry["resolution"]
    assert (ROOT / entry["card"]).is_file()
    assert not any(p.requires_grad for p in prior.parameters())
    assert prior.validated_size == entry["validated_size"] >= max(entry["resolution"])


def test_phantom64_denoising_gate():
    """Held-out phantoms at sigma = 0.1: the MMSE denoiser gains > 10 dB over the noisy input
    (the full evaluation against tuned TV is benchmarks/prior_eval.py)."""
    prior = load_prior("phantom64")
    x = body_phantoms(8, 64, "mixed", generator=torch.Generator().manual_seed(777))
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gain = float((psnr(prior.denoise(y, 0.1), x) - psnr(y, x)).mean())
    assert gain > 10, gain


@pytest.mark.parametrize("name, corpus, min_gain, min_over", [("mri-brain", "mri", 11, 0.8), ("ct", "ct", 11, 1.5)])
def test_real_prior_denoising_gate(name, corpus, min_gain, min_over):
    """Two real test slices of the prior's corpus (never trained on; MRI: Colin27, CT: an abdominal slice) at
    sigma = 0.1, 256 px: the gain over the noisy input and over the phantom prior must clear the bars
    (measured: mri-brain 12.5 and 1.1 dB, ct 12.6 and 2.2 dB; the full tables against tuned TV: the cards)."""
    from invdiff.data.corpora import corpus_images

    x = corpus_images(corpus, "test", 256, 2)
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = psnr(load_prior(name).denoise(y, 0.1), x)
        phantom = psnr(load_prior("phantom64").denoise(y, 0.1), x)
    gain, over = float((ours - psnr(y, x)).mean()), float((ours - phantom).mean())
    assert gain > min_gain and over > min_over, (gain, over)


def test_photo64_denoising_gate():
    prior = load_prior("photo64")
    x = torch.stack([sample_photo("chelsea", size=64), sample_photo("rocket", size=64)])
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gain = float((psnr(prior.denoise(y, 0.1), x) - psnr(y, x)).mean())
    assert gain > 6, gain


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it writes its figure to the working directory
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## A first reconstruction.*?```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "first_reconstruction.png").stat().st_size > 1000


def test_readme_volume_example_runs():
    """The README's DiffusionMBIR snippet, shrunk (4 slices, 2 steps) to stay fast."""
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Volumes \(DiffusionMBIR\).*?```python\n(.*?)```", text, re.S).group(1)
    assert "body_volume(32, 64" in code and "steps=50" in code
    code = code.replace("body_volume(32, 64", "body_volume(4, 64").replace("steps=50", "steps=2")
    exec(compile(code, "README.md", "exec"), {})


@pytest.mark.parametrize("x,sigma,match", [
    (torch.zeros(1, 3, 64, 64), 0.1, r"EDMPrior: expected x of shape \(B, 1, H, W\)"),
    (torch.zeros(1, 1, 60, 60), 0.1, "divisible by 8"),
    (torch.zeros(1, 1, 64, 64), 0.0, "sigma must be finite and > 0"),
    (torch.zeros(1, 1, 64, 64), float("inf"), "sigma must be finite and > 0"),
])
def test_network_prior_bad_input(x, sigma, match):
    with pytest.raises(ValueError, match=match):
        load_prior("phantom64").denoise(x, sigma)


def test_photo_denoising_gate():
    """Two real test windows (chelsea, rocket; never trained on) at sigma = 0.1, 256 px: > 10 dB over
    the noisy input and above photo64 by > 0.5 dB (the full table against tuned TV and BM3D: its card)."""
    from invdiff.data.corpora import corpus_images

    x = corpus_images("photo", "test", 256, 2)
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = psnr(load_prior("photo").denoise(y, 0.1), x)
        old = psnr(load_prior("photo64").denoise(y, 0.1), x)
    gain, over = float((ours - psnr(y, x)).mean()), float((ours - old).mean())
    assert gain > 10 and over > 0.5, (gain, over)


def test_far_larger_image_warns_once_with_the_sizes():
    """A shipped prior warns once (not per call) when an image side exceeds twice the largest
    size it was validated on; at the validated size it stays silent."""
    import warnings

    prior = load_prior("photo64")  # validated at 256 px
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        prior.denoise(torch.rand(1, 3, 512, 64), 0.1)  # 512 = 2 x 256: no warning yet
        assert not [w for w in caught if "validated" in str(w.message)]
        prior.denoise(torch.rand(1, 3, 520, 64), 0.1)
        prior.denoise(torch.rand(1, 3, 520, 64), 0.1)
    msgs = [str(w.message) for w in caught if "validated" in str(w.message)]
    assert len(msgs) == 1 and "520×64" in msgs[0] and "256 px" in msgs[0] and "'photo64'" in msgs[0], msgs
