import shutil

import pytest
import torch

from invdiff.cli import main as cli
from invdiff.priors import load_checkpoint, load_prior
from invdiff.priors.zoo import available_priors, sha256_file
from invdiff.train import TrainConfig, train


def tiny(tmp_path, **kw):
    base = dict(data="phantoms", size=16, channels=1, steps=4, batch=2, base=8, n_phantoms=16,
                warmup=2, out=str(tmp_path / "p.safetensors"), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_device_errors_and_metadata(tmp_path):
    with pytest.raises(ValueError, match="not a torch device"):
        train(tiny(tmp_path, device="gpu7"), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train(tiny(tmp_path, device="cuda"), progress=False)
    path = train(tiny(tmp_path, device="cpu", steps=1), progress=False)
    assert "CPU thread" in load_checkpoint(path).metadata["hardware"]


def test_train_writes_a_loadable_checkpoint(tmp_path):
    path = train(tiny(tmp_path), progress=False)
    prior = load_checkpoint(path)
    assert prior.metadata["steps"] == "4" and prior.channels == 1
    x = torch.rand(2, 1, 16, 16)
    assert prior.denoise(x, 0.1).shape == x.shape


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    """A run stopped by --max-minutes and resumed ends with the same weights as an uninterrupted one."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny(a, out=str(a / "p.safetensors"), steps=6), progress=False)
    clock = iter(range(0, 10_000, 60))  # every call to the clock advances one minute
    monkeypatch.setattr("invdiff.train.time.perf_counter", lambda: next(clock))
    train(tiny(b, out=str(b / "p.safetensors"), steps=6, max_minutes=2.5), progress=False)
    first = torch.load(b / "p.safetensors.ckpt.pt", weights_only=True)["step"]
    assert 0 < first < 6
    monkeypatch.undo()
    train(tiny(b, out=str(b / "p.safetensors"), steps=6), resume=True, progress=False)
    sa = torch.load(a / "p.safetensors.ckpt.pt", weights_only=True)
    sb = torch.load(b / "p.safetensors.ckpt.pt", weights_only=True)
    assert sb["step"] == 6
    for k in sa["ema"]:
        assert torch.equal(sa["ema"][k], sb["ema"][k]), k


def test_short_training_learns_to_denoise(tmp_path):
    """120 steps on 16 px phantoms: the EMA-free network must beat the identity at sigma = 0.2."""
    cfg = tiny(tmp_path, steps=120, batch=8, lr=2e-3, ema_decay=0.0, n_phantoms=64)
    prior = load_checkpoint(train(cfg, progress=False))
    from invdiff.data import body_phantoms

    x = body_phantoms(8, 16, "mixed", generator=torch.Generator().manual_seed(99))
    y = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = (prior.denoise(y, 0.2) - x).pow(2).mean()
    assert err < 0.5 * (y - x).pow(2).mean()


def _check_trained(path, out, channels, data):
    """The checkpoint is where it was asked for, loads, records its data and channels, and its
    denoiser maps a batch to finite images of the same shape."""
    assert str(path) == str(out) and out.is_file()
    prior = load_checkpoint(out)
    assert prior.channels == channels and prior.metadata["channels"] == str(channels)
    assert prior.metadata["data"] == data and prior.metadata["steps"] == "1"
    x = torch.rand(2, channels, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = prior.denoise(x, 0.3)
    assert d.shape == x.shape and torch.isfinite(d).all()


def test_photos_and_folder_data(tmp_path):
    from invdiff.data.io import load_folder
    from invdiff.train import make_sampler

    out = tmp_path / "q.safetensors"
    _check_trained(train(tiny(tmp_path, data="photos", channels=3, steps=1, out=str(out)), progress=False),
                   out, 3, "photos")
    crops = make_sampler(tiny(tmp_path, data="photos", channels=3), torch.Generator().manual_seed(0))(16)
    assert crops.shape == (16, 3, 16, 16) and 0 <= float(crops.min()) and float(crops.max()) <= 1
    assert float((crops[:, 0] - crops[:, 1]).abs().max()) > 0.05  # colour photographs, not grey copies

    from skimage import io as skio
    import numpy as np

    folder = tmp_path / "imgs"
    folder.mkdir()
    png = (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)
    npy = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    skio.imsave(folder / "a.png", png, check_contrast=False)
    np.save(folder / "b.npy", npy)
    read = load_folder(folder, channels=1)  # sorted: a.png, b.npy
    assert [tuple(r.shape) for r in read] == [(1, 40, 40), (1, 32, 32)]
    assert torch.equal(read[0][0], torch.from_numpy(png.astype(np.float32) / 255))
    assert torch.equal(read[1][0], torch.from_numpy(npy))
    out = tmp_path / "r.safetensors"
    _check_trained(train(tiny(tmp_path, data=f"folder:{folder}", steps=1, out=str(out)), progress=False),
                   out, 1, f"folder:{folder}")

    # what training draws from a folder comes from its files: two flat images, 0.2 and 0.7
    flat = tmp_path / "flat"
    flat.mkdir()
    skio.imsave(flat / "a.png", np.full((24, 24), 51, np.uint8), check_contrast=False)  # 51/255 = 0.2
    np.save(flat / "b.npy", np.full((20, 20), 0.7, np.float32))
    crops = make_sampler(tiny(tmp_path, data=f"folder:{flat}"), torch.Generator().manual_seed(0))(32)
    assert crops.shape == (32, 1, 16, 16)
    level = crops.flatten(1)[:, 0]
    assert torch.allclose(crops, level[:, None, None, None].expand_as(crops), atol=1e-6)
    assert set(torch.round(level * 10).long().tolist()) == {2, 7}


def test_cli_train_and_errors(tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    assert cli(["train", "--steps", "1", "--batch", "2", "--size", "16", "--base", "8", "--no-progress",
                "--out", str(out)]) == 0
    assert "invdiff train" in load_checkpoint(out).metadata["command"]
    assert cli(["train", "--steps", "0", "--out", str(out)]) == 2
    assert cli(["train", "--data", "nowhere", "--steps", "1", "--out", str(out)]) == 2
    assert cli(["train", "--data", "folder:/does/not/exist", "--steps", "1", "--out", str(out)]) == 3  # a file error
    assert cli(["train", "--device", "gpu7", "--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 4 and "--device 'gpu7'" in err


@pytest.fixture
def ckpt(tmp_path):
    return train(tiny(tmp_path, steps=1), progress=False)


def test_checkpoint_hash_mismatch_names_file_and_hashes(ckpt, tmp_path):
    good = sha256_file(ckpt)
    bad = tmp_path / "bad.safetensors"
    shutil.copy(ckpt, bad)
    data = bytearray(bad.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError) as err:
        load_checkpoint(bad, sha256=good)
    msg = str(err.value)
    assert "bad.safetensors" in msg and good in msg and sha256_file(bad) in msg


def test_truncated_missing_and_mismatched_checkpoints(ckpt, tmp_path):
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match="trunc.safetensors"):
        load_checkpoint(trunc)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_checkpoint(tmp_path / "nope.safetensors")
    entry = {"channels": 3, "resolution": [16, 16], "sigma_min": 0.002, "sigma_max": 40.0}
    with pytest.raises(ValueError, match="catalog entry does not match.*channels catalog=3 file=1"):
        load_checkpoint(ckpt, entry=entry)


def test_unknown_prior_lists_available():
    with pytest.raises(ValueError, match="available: " + ", ".join(available_priors())):
        load_prior("imagenet256")


def test_init_from_checkpoint_records_provenance(ckpt, tmp_path):
    from invdiff.priors.zoo import sha256_file as sha

    out = train(tiny(tmp_path, steps=1, init=str(ckpt), out=str(tmp_path / "ft.safetensors"), lr=0.0),
                progress=False)
    meta = load_checkpoint(out).metadata
    assert meta["init"] == str(ckpt) and meta["init_sha256"] == sha(ckpt)
    a, b = load_checkpoint(ckpt).net.state_dict(), load_checkpoint(out).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr = 0: the weights are the initial ones
    with pytest.raises(ValueError, match="architecture"):
        train(tiny(tmp_path, steps=1, init=str(ckpt), base=16, out=str(tmp_path / "x.safetensors")),
              progress=False)


def test_stop_after_then_resume_equals_one_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny(a, out=str(a / "p.safetensors"), steps=5, data="photos:astronaut,coffee", channels=3), progress=False)
    train(tiny(b, out=str(b / "p.safetensors"), steps=5, data="photos:astronaut,coffee", channels=3, stop_after=2),
          progress=False)
    assert torch.load(b / "p.safetensors.ckpt.pt", weights_only=True)["step"] == 2
    train(tiny(b, out=str(b / "p.safetensors"), steps=5, data="photos:astronaut,coffee", channels=3), resume=True,
          progress=False)
    sa = torch.load(a / "p.safetensors.ckpt.pt", weights_only=True)["ema"]
    sb = torch.load(b / "p.safetensors.ckpt.pt", weights_only=True)["ema"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_dihedral_augment_draws_each_symmetry_of_the_square():
    """Every output is one of the 8 rotations/reflections of its input, all 8 occur, the input is kept."""
    from invdiff.train import dihedral_augment

    x = torch.arange(9.0).reshape(1, 1, 3, 3).repeat(400, 1, 1, 1)
    before = x.clone()
    y = dihedral_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, before) and y.shape == x.shape
    group = [x[0].rot90(k, dims=(-2, -1)) for k in range(4)]
    group += [g.flip(-1) for g in group]
    seen = [next(i for i, g in enumerate(group) if torch.equal(yi, g)) for yi in y]  # StopIteration: not in group
    counts = torch.bincount(torch.tensor(seen), minlength=8)
    assert (counts > 25).all(), counts  # 400 draws of 8 equally likely symmetries: about 50 each
    with pytest.raises(ValueError, match="square"):
        dihedral_augment(torch.zeros(1, 1, 3, 4), torch.Generator())


def test_scales_and_dihedral_options(tmp_path):
    """--scales resizes corpus images (and is refused elsewhere); both options are recorded and must match on resume."""
    with pytest.raises(ValueError, match="--scales applies to --data corpus:NAME without --patch-sizes"):
        tiny(tmp_path, scales=(0.5,))
    with pytest.raises(ValueError, match="with --patch-sizes"):
        tiny(tmp_path, data="corpus:ct", size=64, patch_sizes=(32,), scales=(0.5, 1.0))
    with pytest.raises(ValueError, match="--scales"):
        tiny(tmp_path, data="corpus:ct", scales=())
    with pytest.raises(ValueError, match="--scales"):
        tiny(tmp_path, data="corpus:ct", scales=(0.0,))
    path = train(tiny(tmp_path, dihedral=True, steps=2), progress=False)
    meta = load_checkpoint(path).metadata
    assert meta["dihedral"] == "True" and meta["scales"] == "[1.0]"
    with pytest.raises(ValueError, match="dihedral"):
        train(tiny(tmp_path, dihedral=False, steps=3), resume=True, progress=False)
