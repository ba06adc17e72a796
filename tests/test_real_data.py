"""Real-data corpora and the named problems on real images: offline, split by subject, held-out set untouched."""

import importlib.util

import pytest
import torch

from invdiff.data import corpora
from invdiff.data.corpora import SOURCES, corpus, corpus_images, is_held_out
from invdiff.problems import PROBLEMS

REAL = [n for n, p in PROBLEMS.items() if type(p.data).__name__ in ("RealImages", "RealVolume")]


def test_every_corpus_has_three_splits_disjoint_by_subject_and_file():
    for name in corpora.CORPORA:
        by_split = {s: corpus(name, s) for s in corpora.SPLITS}
        assert all(by_split.values()), name
        subjects = [{src.subject for src in v} for v in by_split.values()]
        files = [{(src.package, src.file) for src in v} for v in by_split.values()]
        for i in range(3):
            for j in range(i + 1, 3):
                assert not subjects[i] & subjects[j], (name, subjects)
                assert not files[i] & files[j], (name, files)


def test_no_source_is_in_the_held_out_set():
    assert is_held_out("/x/data_store/data/693_UNCI.dcm") and is_held_out("693_J2KR.dcm")
    assert is_held_out("/usr/lib/python3/dist-packages/matplotlib/mpl-data/sample_data/s1045.ima.gz")
    assert not any(is_held_out(s.file) for s in SOURCES)
    for s in SOURCES:
        assert s.license and s.package and s.version, s


def test_colin27_derivatives_are_not_used_outside_the_test_split():
    """ITK's BrainWeb slices are simulated from Colin27 (the MRI test subject): listed nowhere."""
    assert not any("BrainWeb" in s.file or "BrainProtonDensity" in s.file or "BrainT1" in s.file for s in SOURCES)
    assert [s.subject for s in corpus("mri", "test")] == ["Colin27"]


@pytest.mark.parametrize("name", REAL)
def test_real_problems_load_offline_with_real_images(name):
    spec = PROBLEMS[name]
    for split in ("validation", "test"):
        n = 1 if spec.is_volume or spec.size == 512 else 4
        x = spec.images(split, n)
        assert x.shape == ((spec.depth,) if spec.is_volume else (n,)) + (spec.channels, spec.size, spec.size)
        assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.05  # real content, not blank
    assert not torch.equal(spec.images("validation", 1)[:1], spec.images("test", 1)[:1])


def test_the_test_images_of_ct_and_photos_come_from_pip_packages():
    """The README's install line alone gives every validation and test image: pip packages or shipped files."""
    for name in ("ct", "photo"):
        for split in ("validation", "test"):
            assert all(s.package in ("pydicom", "pydicom-data", "scikit-image") for s in corpus(name, split))
    shipped = sorted(p.name for p in corpora.REAL_DIR.glob("mri-*"))
    assert len([p for p in shipped if p.startswith("mri-test-") and p.endswith(".png")]) == 5
    assert "SOURCES.md" in {p.name for p in corpora.REAL_DIR.iterdir()}


def test_missing_package_names_the_install_command(monkeypatch):
    (src,) = [s for s in corpus("mri", "train") if s.package == "insighttoolkit5-examples"]
    monkeypatch.setitem(corpora._DEBIAN, "insighttoolkit5-examples", corpora.REAL_DIR / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install insighttoolkit5-examples"):
        corpora.source_path(src)
    (sp,) = [s for s in corpus("photo", "train") if s.subject == "kodim23"]
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sporco" else real_find(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install sporco"):
        corpora.source_path(sp)
    (neck,) = [s for s in corpus("ct", "train") if s.needs]
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("sporco", "libjpeg", "gdcm") else real_find(name, *a))
    with pytest.raises(FileNotFoundError, match=r"needs a decoder .* pip install pylibjpeg pylibjpeg-libjpeg"):
        corpora.source_path(neck)


def test_bad_requests():
    with pytest.raises(ValueError, match="unknown corpus"):
        corpus("xray")
    with pytest.raises(ValueError, match="split"):
        corpus("ct", "train2")
    with pytest.raises(ValueError, match="gives 1 distinct 512-px images, 4 requested"):
        corpus_images("ct", "test", 512, 4)
    # asking for more windows than a slice holds counts the windows that do fit (not 0)
    with pytest.raises(ValueError, match="gives 5 distinct 256-px images, 8 requested"):
        corpus_images("ct", "test", 256, 8)
    with pytest.raises(ValueError, match="n must be"):
        corpus_images("ct", "test", 256, 0)


@pytest.mark.parametrize("src", SOURCES, ids=[f"{s.corpus}-{s.split}-{s.subject}" for s in SOURCES])
def test_every_source_is_where_its_package_installs_it(src):
    """Sources from the package's own dependencies must load; optional ones (train-data extra,
    Debian packages) load where installed and otherwise name their install command."""
    required = src.package in ("pydicom", "pydicom-data", "scikit-image", "PyWavelets") and not src.needs
    try:
        imgs = corpora.load_source(src)
    except FileNotFoundError as err:
        assert not required, err
        assert "install" in str(err)
        pytest.skip(f"{src.package} not installed here")
    assert imgs.ndim in (3, 4) and 0 <= imgs.min() and imgs.max() <= 1 and imgs.std() > 0.02


def test_training_images_read_the_training_split_only(monkeypatch):
    """Priors train on the training sources alone: every file touched is listed under `train`."""
    touched = []
    real_path = corpora.source_path
    monkeypatch.setattr(corpora, "source_path", lambda src: touched.append(src) or real_path(src))
    if all(importlib.util.find_spec(m) is None for m in ("libjpeg", "gdcm")):  # the neck CT's decoder is missing
        with pytest.raises(FileNotFoundError, match="pip install pylibjpeg"):
            corpora.training_images("ct")
        assert touched and all(s.split == "train" and s.corpus == "ct" for s in touched)
        return
    imgs = corpora.training_images("ct")
    assert touched and all(s.split == "train" and s.corpus == "ct" for s in touched)
    assert len(imgs) == sum(len(corpora.load_source(s)) for s in corpus("ct", "train"))
    assert all(0 <= i.min() and i.max() <= 1 for i in imgs)


def test_mri_training_volumes_are_resampled_to_the_problems_scale_in_three_orientations():
    (src,) = [s for s in corpus("mri", "train") if s.file.endswith(".nii.gz")]
    try:
        corpora.source_path(src)
    except FileNotFoundError:
        pytest.skip(f"{src.package} not installed here")
    imgs = corpora.training_images("mri")
    # KmeansTest: 128 x 128 x 62 voxels of 2 x 2 x 3 mm -> 256 x 256 x 186 at 1 mm; slices of all three axes
    shapes = {i.shape for i in imgs if i.ndim == 2}
    assert {(256, 256), (186, 256), (256, 186)} <= shapes
    vol = [i for i in imgs if i.shape != (256, 256) and i.shape != (64, 64)]
    assert len(vol) > 100 and all(float((i > 0.05).mean()) >= 0.1 for i in vol)
