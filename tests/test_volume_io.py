"""Volumes from the user's files: the CT intensity rule, NIfTI, DICOM series, and `invdiff solve`
with --nifti / --dicom-series (issue 12). Every file is written here, in tmp_path."""

import copy

import numpy as np
import pytest
import torch

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from invdiff.data import io  # noqa: E402
from invdiff.data.volumes import (DicomSeriesInfo, NiftiInfo, load_dicom_series, load_nifti,  # noqa: E402
                                  resize_volume, save_dicom_series, save_nifti, volume_planes)

AFFINE = np.array([[-0.8, 0.0, 0.0, 90.0], [0.0, 0.9, 0.0, -100.0], [0.0, 0.0, 2.5, -50.0], [0.0, 0.0, 0.0, 1.0]])


def _nifti(path, data, affine=AFFINE, **header):
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"invdiff test"
    if "slope" in header:
        img.header.set_slope_inter(header["slope"], header["inter"])
    nib.save(img, str(path))
    return path


def _hu_volume(shape, seed=0):
    """Integer HU values, (I, J, K), int16."""
    return np.random.default_rng(seed).integers(-1024, 1800, size=shape).astype(np.int16)


def _series(folder, zs=(0.0, 5.0, 10.0), *, template="CT_small.dcm", edit=None,
            orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)):
    """A DICOM series made from one of pydicom's test files: slice k at ``zs[k]`` mm along the normal,
    pixel values offset by 40 k; file names in reverse slice order."""
    src = pydicom.dcmread(get_testdata_file(template))
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    base = src.pixel_array.astype(np.int32)
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    origin = np.array([float(v) for v in src.ImagePositionPatient])
    for k, z in enumerate(zs):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + z * normal]
        ds.PixelData = (base + 40 * k).astype(src.pixel_array.dtype).tobytes()
        if edit is not None:
            edit(k, ds)
        ds.save_as(str(folder / f"im{len(zs) - k:03d}.dcm"), enforce_file_format=True)
    return folder


# ------------------------------------------------------------------------------------ the CT rule


def test_hu_rule_and_load_dicom_rule(tmp_path):
    assert io.CT_HU_WINDOW == (-1000.0, 1000.0)
    assert [io.hu_to_unit(v) for v in (-2000, -1000, 0, 1000, 3000)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    t = io.hu_to_unit(torch.tensor([-1000.0, -800.0, 840.0]))
    assert torch.allclose(t, torch.tensor([0.0, 0.1, 0.92]))  # air, lung, bone of the CT phantoms
    a = np.array([-500.0, 250.0])
    assert np.allclose(io.unit_to_hu(io.hu_to_unit(a)), a)
    assert io.unit_to_hu(0.5) == 0.0
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    x = io.load_dicom(path, rule="hu")
    assert x.shape == (1, 128, 128) and torch.allclose(x[0], torch.from_numpy(io.hu_to_unit(hu)))
    assert torch.equal(io.load_dicom(path), io.load_dicom(path, rule="window"))  # the default is unchanged
    with pytest.raises(ValueError, match=r"MR_small\.dcm.*Modality is 'MR'"):
        io.load_dicom(get_testdata_file("MR_small.dcm"), rule="hu")
    with pytest.raises(ValueError, match="rule"):
        io.load_dicom(path, rule="gamma")
    with pytest.raises(ValueError, match="not both"):
        io.load_dicom(path, rule="hu", window=(40, 400))


# ------------------------------------------------------------------------------------ NIfTI


def test_nifti_round_trip_orientation_and_planes(tmp_path):
    data = _hu_volume((6, 7, 5))
    v, info = load_nifti(_nifti(tmp_path / "ct.nii.gz", data))
    assert v.shape == (5, 1, 7, 6) and v.dtype == torch.float32 and 0 <= v.min() and v.max() <= 1
    assert isinstance(info, NiftiInfo) and info.dtype == np.int16 and (info.lo, info.hi) == (data.min(), data.max())
    # slice d shows the voxel array with the first axis across and the second axis up
    d, h, w = 3, 1, 4
    assert v[d, 0, h, w] == pytest.approx((data[w, 7 - 1 - h, d] - info.lo) / (info.hi - info.lo), abs=1e-6)
    out = save_nifti(tmp_path / "back.nii.gz", v, info)
    back = nib.load(out)
    assert back.get_data_dtype() == np.int16 and np.array_equal(np.asarray(back.dataobj), data)
    assert np.allclose(back.affine, AFFINE) and back.header["descrip"] == b"invdiff test"
    assert back.header.get_xyzt_units()[0] == "mm"
    planes = volume_planes(v)
    assert planes["axial"] is v and planes["coronal"].shape == (7, 1, 5, 6) and planes["sagittal"].shape == (6, 1, 5, 7)
    assert planes["coronal"][h, 0, 5 - 1 - d, w] == v[d, 0, h, w] == planes["sagittal"][w, 0, 5 - 1 - d, h]
    # one more: a 3-channel load is the grey volume repeated
    v3, _ = load_nifti(tmp_path / "ct.nii.gz", channels=3)
    assert v3.shape == (5, 3, 7, 6) and torch.equal(v3[:, 2], v[:, 0])


def test_nifti_scaling_float_2d_and_rules(tmp_path):
    data = _hu_volume((5, 4, 3), seed=1)
    path = _nifti(tmp_path / "scaled.nii", data, slope=0.5, inter=3.0)
    v, info = load_nifti(path)
    assert (info.slope, info.inter) == (0.5, 3.0)
    back = nib.load(save_nifti(tmp_path / "scaled_back.nii", v, info))
    assert np.array_equal(np.asarray(back.dataobj.get_unscaled()), data)
    assert np.allclose(back.get_fdata(), nib.load(path).get_fdata())
    flat = np.random.default_rng(2).normal(size=(9, 8)).astype(np.float32)  # a 2D slice
    v, info = load_nifti(_nifti(tmp_path / "slice.nii.gz", flat))
    assert v.shape == (1, 1, 8, 9) and info.shape == (9, 8)
    back = nib.load(save_nifti(tmp_path / "slice_back.nii.gz", v, info))
    assert back.shape == (9, 8) and back.get_data_dtype() == np.float32
    assert np.allclose(back.get_fdata(), flat, atol=1e-5 * np.ptp(flat))
    v, _ = load_nifti(_nifti(tmp_path / "one.nii", flat[:, :, None, None]))  # trailing singleton axes
    assert v.shape == (1, 1, 8, 9)
    v, info = load_nifti(tmp_path / "slice.nii.gz", rule="percentile")
    assert info.lo == pytest.approx(np.percentile(flat, 0.5)) and v.min() == 0 and v.max() == 1
    v, info = load_nifti(tmp_path / "scaled.nii", rule="hu")
    assert (info.lo, info.hi) == io.CT_HU_WINDOW
    assert torch.allclose(v[:, 0], torch.from_numpy(io.hu_to_unit(nib.load(path).get_fdata())).permute(2, 1, 0).flip(1))


@pytest.mark.parametrize("make, error, pattern", [
    (lambda p: _nifti(p, np.zeros((4, 4, 3, 5), np.float32)), ValueError, r"bad\.nii.*\(4, 4, 3, 5\).*pick one"),
    (lambda p: _nifti(p, np.zeros((4, 4, 3), np.complex64)), ValueError, r"bad\.nii.*complex"),
    (lambda p: _nifti(p, np.zeros((0, 4, 4), np.float32)), ValueError, r"bad\.nii.*no voxels"),
    (lambda p: p.write_bytes(b"not a nifti file at all" * 20), ValueError, r"bad\.nii.*not a NIfTI"),
    (lambda p: _nifti(p, np.full((4, 4, 2), np.nan, np.float32)), ValueError, r"bad\.nii.*NaN"),
    (lambda p: None, FileNotFoundError, r"bad\.nii"),
])
def test_nifti_bad_inputs(tmp_path, make, error, pattern):
    path = tmp_path / "bad.nii"
    make(path)
    with pytest.raises(error, match=pattern):
        load_nifti(path)


def test_nifti_resize_keeps_world_positions(tmp_path):
    v, info = load_nifti(_nifti(tmp_path / "wide.nii", _hu_volume((90, 70, 2))))  # slices 70 rows × 90 columns
    small, new = resize_volume(v, 35, info)
    assert small.shape == (2, 1, 35, 35) and new.grid == (35, 35, 2)
    assert new.voxel_size == pytest.approx((0.8 * 70 / 35, 0.9 * 2, 2.5))
    # the centre of the centre crop stays where it was: old voxel (i, j) = (44.5, 34.5), new (17, 17)
    assert np.allclose(AFFINE @ [44.5, 34.5, 1, 1], new.affine @ [17, 17, 1, 1])
    back = nib.load(save_nifti(tmp_path / "small.nii.gz", small, new))
    assert back.shape == (35, 35, 2) and np.allclose(back.affine, new.affine)
    with pytest.raises(ValueError, match="resize_volume"):
        save_nifti(tmp_path / "x.nii", small, info)
    with pytest.raises(ValueError, match=r"\.nii or \.nii\.gz"):
        save_nifti(tmp_path / "x.png", v, info)


# ------------------------------------------------------------------------------------ DICOM series


def test_dicom_series_round_trip(tmp_path):
    folder = _series(tmp_path / "in", zs=(10.0, 0.0, 5.0, 15.0))
    v, info = load_dicom_series(folder)
    assert isinstance(info, DicomSeriesInfo) and v.shape == (4, 1, 128, 128) and info.rule == "hu"
    assert np.allclose(info.positions[:, 2], [-75.7, -70.7, -65.7, -60.7], atol=1e-3)  # sorted along the normal
    assert [int(ds.InstanceNumber) for ds in info.datasets] == [2, 3, 1, 4]
    assert info.slice_spacing == pytest.approx(5.0) and info.pixel_spacing == pytest.approx((0.661468, 0.661468))
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = src.pixel_array + 40.0 + float(src.RescaleIntercept)  # slice 0 is InstanceNumber 2: offset 40
    assert torch.allclose(v[0, 0], torch.from_numpy(io.hu_to_unit(hu)))
    out = save_dicom_series(tmp_path / "out", v, info)
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == [f"slice_{k:04d}.dcm" for k in (1, 2, 3, 4)]
    dss = [pydicom.dcmread(f) for f in files]
    assert len({ds.SeriesInstanceUID for ds in dss}) == 1 and dss[0].SeriesInstanceUID != src.SeriesInstanceUID
    uids = {ds.SOPInstanceUID for ds in dss} | {ds.file_meta.MediaStorageSOPInstanceUID for ds in dss}
    assert len(uids) == 4 and all(ds.SOPInstanceUID not in {d.SOPInstanceUID for d in info.datasets} for ds in dss)
    assert (float(dss[0].WindowCenter), float(dss[0].WindowWidth)) == (0.0, 2000.0)
    assert all(ds.FrameOfReferenceUID == src.FrameOfReferenceUID and float(ds.RescaleIntercept) == -1024 for ds in dss)
    v2, info2 = load_dicom_series(out)
    assert np.allclose(info2.positions, info.positions) and info2.pixel_spacing == info.pixel_spacing
    assert np.allclose(info2.orientation, info.orientation)
    assert torch.allclose(v2, v, atol=1 / 2000)  # HU within the window come back to the integer
    # the window rule keeps every stored value: the input itself written back is the input
    v, info = load_dicom_series(folder, rule="window")
    save_dicom_series(tmp_path / "out_window", v, info)
    for a, b in zip(info.files, sorted((tmp_path / "out_window").iterdir())):
        assert np.array_equal(pydicom.dcmread(a).pixel_array, pydicom.dcmread(b).pixel_array)
    with pytest.raises(FileExistsError, match="not empty"):
        save_dicom_series(tmp_path / "out", v, info)


def test_dicom_series_oblique_instance_number_and_resize(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    orientation = (c, s, 0.0, 0.0, 0.0, -1.0)  # oblique sagittal-ish: normal (-s, c, 0)
    v, info = load_dicom_series(_series(tmp_path / "obl", zs=(4.0, -4.0, 0.0), orientation=orientation))
    assert [int(ds.InstanceNumber) for ds in info.datasets] == [2, 3, 1]
    assert info.slice_spacing == pytest.approx(4.0, rel=1e-3)

    def no_position(k, ds):
        del ds.ImagePositionPatient

    _, info = load_dicom_series(_series(tmp_path / "nopos", zs=(0.0, 5.0, 10.0), edit=no_position))
    assert info.positions is None and [int(ds.InstanceNumber) for ds in info.datasets] == [1, 2, 3]
    # resize: pixel spacing doubles, the first pixel's centre moves half an old pixel in
    v, info = load_dicom_series(_series(tmp_path / "r", zs=(0.0, 5.0)))
    small, new = resize_volume(v, 64, info)
    assert small.shape == (2, 1, 64, 64) and new.pixel_spacing == pytest.approx((2 * 0.661468,) * 2)
    assert np.allclose(new.positions - info.positions, [0.5 * 0.661468, 0.5 * 0.661468, 0.0])
    v2, info2 = load_dicom_series(save_dicom_series(tmp_path / "r_out", small, new))
    assert v2.shape == (2, 1, 64, 64) and np.allclose(info2.positions, new.positions, atol=1e-4)


def _other_series(k, ds):
    if k == 1:
        ds.SeriesInstanceUID = generate_uid()


def _other_size(k, ds):
    if k == 1:
        crop = ds.pixel_array[:64, :64].copy()
        ds.Rows = ds.Columns = 64
        ds.PixelData = crop.tobytes()


def _other_spacing(k, ds):
    if k == 2:
        ds.PixelSpacing = ["0.7", "0.7"]


@pytest.mark.parametrize("zs, edit, error, pattern", [
    ((0.0, 5.0, 10.0), _other_series, ValueError, "2 series"),
    ((0.0, 5.0, 10.0), _other_size, ValueError, "mixes slice sizes"),
    ((0.0, 5.0, 10.0), _other_spacing, ValueError, "mixes pixel spacings"),
    ((0.0, 5.0, 10.0, 20.0, 25.0), None, ValueError, r"slices missing.*jumps by 10"),
    ((0.0, 5.0, 5.0, 10.0), None, ValueError, "duplicated slices"),
    ((0.0, 5.0, 10.0, 16.0, 21.0), None, ValueError, "non-uniform slice spacing"),
])
def test_dicom_series_bad_inputs(tmp_path, zs, edit, error, pattern):
    folder = _series(tmp_path / "bad", zs=zs, edit=edit)
    with pytest.raises(error, match=pattern):
        load_dicom_series(folder)


def test_dicom_series_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no DICOM here")
    with pytest.raises(ValueError, match="holds no DICOM image files"):
        load_dicom_series(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_dicom_series(tmp_path / "nope")
    mr = _series(tmp_path / "mr", zs=(0.0, 0.8), template="MR_small.dcm")
    with pytest.raises(ValueError, match=r"im00[12]\.dcm.*Modality is 'MR'"):
        load_dicom_series(mr)
    v, info = load_dicom_series(mr, rule="auto")
    assert info.rule == "window" and (info.lo, info.hi) == (600 - 800, 600 + 800)
    (tmp_path / "mr" / "broken.dcm").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="broken.dcm"):
        load_dicom_series(mr)


def test_atomic_write_dir_leaves_nothing_on_failure(tmp_path):
    def fail(tmp):
        (tmp_path / "seen").write_text(tmp)
        open(f"{tmp}/half.dcm", "wb").close()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write_dir(tmp_path / "series", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seen"]
    (tmp_path / "series").mkdir()  # an empty folder is fine
    io.atomic_write_dir(tmp_path / "series", lambda tmp: open(f"{tmp}/a.dcm", "wb").close())
    assert [p.name for p in (tmp_path / "series").iterdir()] == ["a.dcm"]


# ------------------------------------------------------------------------------------ invdiff solve


def test_solve_nifti_end_to_end(tmp_path, capsys):
    from invdiff.cli import main

    data = _hu_volume((80, 72, 3), seed=3)  # resized to the problem's 64 px: 72 rows, 80 columns
    path = _nifti(tmp_path / "ct.nii.gz", data)
    out = tmp_path / "out"
    assert main(["solve", "--problem", "ct-sparse-8", "--nifti", str(path), "--steps", "2", "--no-progress",
                 "--out", str(out)]) == 0
    assert "reconstruction.nii.gz" in capsys.readouterr().out
    rec = np.load(out / "reconstruction.npy")
    assert rec.shape == (3, 1, 64, 64)
    back = nib.load(out / "reconstruction.nii.gz")
    original, info = load_nifti(path)
    _, info = resize_volume(original, 64, info)
    assert back.shape == (64, 64, 3) and back.get_data_dtype() == np.int16
    assert np.allclose(back.affine, info.affine)
    assert np.allclose(back.header.get_zooms(), (0.8 * 72 / 64, 0.9 * 72 / 64, 2.5))
    assert np.allclose(back.get_fdata(), np.transpose(rec[:, 0] * (info.hi - info.lo) + info.lo, (2, 1, 0))[:, ::-1],
                       atol=0.51)
    v, _ = load_nifti(out / "reconstruction.nii.gz")  # and it reads back
    assert v.shape == (3, 1, 64, 64)


def test_solve_dicom_series_end_to_end(tmp_path, capsys):
    from invdiff.cli import main
    from invdiff.solve_cli import run_solve

    folder = _series(tmp_path / "ct", zs=(0.0, 5.0, 10.0))
    out = tmp_path / "out"
    assert main(["solve", "--problem", "ct-sparse-8", "--dicom-series", str(folder), "--steps", "2", "--no-progress",
                 "--out", str(out)]) == 0
    assert "reconstruction_dicom" in capsys.readouterr().out
    v, info = load_dicom_series(out / "reconstruction_dicom")
    _, src = load_dicom_series(folder)
    assert v.shape == (3, 1, 64, 64) and info.pixel_spacing == pytest.approx((2 * 0.661468,) * 2)
    assert np.allclose(info.positions, src.positions + [0.5 * 0.661468, 0.5 * 0.661468, 0.0], atol=1e-4)
    assert torch.allclose(v, torch.from_numpy(np.load(out / "reconstruction.npy")), atol=1 / 2000)
    # a rerun refuses to write over the series, before solving
    assert main(["solve", "--problem", "ct-sparse-8", "--dicom-series", str(folder), "--out", str(out)]) == 3
    assert "already exists" in capsys.readouterr().err
    # an MR series (window rule) on the MRI problem, through the Python entry point
    mr = _series(tmp_path / "mr", zs=(0.0, 0.8), template="MR_small.dcm")
    res = run_solve(out_dir=str(tmp_path / "mr_out"), problem="mri-4x", dicom_series=str(mr), steps=2, progress=False)
    assert len(list((tmp_path / "mr_out" / "reconstruction_dicom").iterdir())) == 2 and "psnr" in res


def test_solve_volume_flag_errors(tmp_path, capsys):
    from invdiff.cli import main

    nii = _nifti(tmp_path / "v.nii", _hu_volume((64, 64, 2)))
    small = _nifti(tmp_path / "small.nii", _hu_volume((80, 40, 2)))
    series = _series(tmp_path / "s", zs=(0.0, 5.0))
    base = ["solve", "--problem", "ct-sparse-8", "--out", str(tmp_path / "o")]
    cases = [
        (base + ["--nifti", str(nii), "--image", str(nii)], "--nifti cannot be combined with --image"),
        (base + ["--nifti", str(nii), "--dicom", str(nii)], "--nifti cannot be combined with --dicom"),
        (base + ["--nifti", str(nii), "--dicom-series", str(series)], "--nifti cannot be combined with --dicom-series"),
        (base + ["--nifti", str(nii), "--index", "1"], "--nifti cannot be combined with --index"),
        (["solve", "--measurement", "m.npy", "--nifti", str(nii), "--out", str(tmp_path / "o")],
         "--nifti cannot be combined with --measurement"),
        (base + ["--dicom-series", str(series), "--image", str(nii)], "--dicom-series cannot be combined with --image"),
        (base + ["--nifti", str(small)], "smaller than the problem's 64×64"),
        (base + ["--nifti", str(tmp_path / "none.nii")], "none.nii"),
        (["solve", "--problem", "mri3d-4x", "--nifti", str(nii), "--out", str(tmp_path / "o")], "do not fit"),
    ]
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (2, 3) and message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "o").exists()
