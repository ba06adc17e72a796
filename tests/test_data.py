import numpy as np
import pytest
import torch

from invdiff.data import io
from invdiff.data.phantoms import body_phantom, body_phantoms, ellipsoid_volume, shepp_logan


@pytest.mark.parametrize("size", [16, 64, (48, 80), 256])
def test_phantom_shape_and_range(size):
    x = body_phantom(size, generator=torch.Generator().manual_seed(0))
    hw = (size, size) if isinstance(size, int) else size
    assert x.shape == (1,) + tuple(hw) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.max()) > 0.5


def test_phantoms_seeded():
    a = body_phantoms(3, 32, generator=torch.Generator().manual_seed(5))
    b = body_phantoms(3, 32, generator=torch.Generator().manual_seed(5))
    c = body_phantoms(3, 32, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_ct_and_mri_contrast_differ():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ct, mri = body_phantom(64, "ct", generator=g1), body_phantom(64, "mri", generator=g2)
    assert not torch.allclose(ct, mri, atol=0.05)


def test_phantoms_are_not_piecewise_constant():
    """Texture and gradients: inside the body most pixels differ from all their neighbours
    by more than a rounding error, unlike flat ellipses."""
    x = body_phantoms(4, 64, generator=torch.Generator().manual_seed(0))[:, 0]
    inside = x > 0.05
    dx = (x[:, :-1, 1:] - x[:, :-1, :-1]).abs()
    dy = (x[:, 1:, :-1] - x[:, :-1, :-1]).abs()
    inner = inside[:, :-1, :-1]
    frac_flat = float(((dx < 1e-3) & (dy < 1e-3))[inner].float().mean())
    assert frac_flat < 0.1
    sl = shepp_logan(64)[0]  # the cartoon reference is mostly flat
    dxs = (sl[:, 1:] - sl[:, :-1]).abs()[:-1]
    dys = (sl[1:] - sl[:-1]).abs()[:, :-1]
    assert float(((dxs < 1e-3) & (dys < 1e-3))[sl[:-1, :-1] > 0].float().mean()) > 0.7


def test_shepp_logan():
    x = shepp_logan(128)
    assert x.shape == (1, 128, 128) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert len(torch.unique(x)) >= 5


def test_ellipsoid_volume_varies_along_z():
    v = ellipsoid_volume(16, 32, generator=torch.Generator().manual_seed(0))
    assert v.shape == (16, 1, 32, 32) and float(v.min()) >= 0 and float(v.max()) <= 1
    diffs = (v[1:] - v[:-1]).abs().flatten(1).mean(1)
    assert float(diffs.mean()) > 1e-3  # structures change from slice to slice
    assert torch.equal(v, ellipsoid_volume(16, 32, generator=torch.Generator().manual_seed(0)))


def test_png_npy_roundtrip(tmp_path):
    from skimage import io as skio

    img = (np.linspace(0, 1, 64 * 48).reshape(48, 64) * 255).astype(np.uint8)
    skio.imsave(tmp_path / "a.png", img, check_contrast=False)
    x = io.load_image(tmp_path / "a.png")
    assert x.shape == (1, 48, 64) and abs(float(x.max()) - 1) < 1e-6
    np.save(tmp_path / "b.npy", img.astype(np.float32) / 255)
    assert torch.allclose(io.load_npy(tmp_path / "b.npy"), x, atol=1e-6)
    assert len(io.load_folder(tmp_path)) == 2
    assert io.load_file(tmp_path / "a.png", channels=3).shape == (3, 48, 64)


def test_dicom_rescale_and_window():
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    x = io.load_dicom(path, window=(40.0, 400.0))
    expected = np.clip((hu - (40 - 200)) / 400, 0, 1)
    assert x.shape == (1,) + hu.shape
    assert np.allclose(x[0].numpy(), expected, atol=1e-6)
    y = io.dicom_sample("MR_small.dcm")
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_sample_photos_offline():
    for name in ("astronaut", "camera", "chelsea"):
        x = io.sample_photo(name, size=64)
        assert x.shape == (3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert io.sample_photo("camera", channels=1).shape[0] == 1


@pytest.mark.parametrize("call,exc", [
    (lambda: io.load_image("/nonexistent.png"), FileNotFoundError),
    (lambda: io.load_dicom("/nonexistent.dcm"), FileNotFoundError),
    (lambda: io.sample_photo("mona_lisa"), ValueError),
    (lambda: body_phantom(64, "pet"), ValueError),
    (lambda: body_phantom(4), ValueError),
    (lambda: io.load_file("x.gif"), ValueError),
])
def test_data_bad_input(call, exc):
    with pytest.raises(exc):
        call()


def test_corrupt_files_give_value_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom")
    with pytest.raises(ValueError, match="bad.png"):
        io.load_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="bad.dcm"):
        io.load_dicom(tmp_path / "bad.dcm")
