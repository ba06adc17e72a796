"""invdiff bench: cells, resume, n/a cells, tables, figures and its one-line errors."""

import json

import pytest

import torch

from invdiff.bench import not_applicable
from invdiff.cli import main
from invdiff.methods import METHODS, get_method
from invdiff.problems import get_problem


def test_bench_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "b"
    args = ["bench", "--problems", "mri-4x", "--solvers", "diffpir", "pinv", "ddrm", "--n-images", "2",
            "--steps", "3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    cells = data["cells"]
    assert set(cells) == {"mri-4x|diffpir", "mri-4x|pinv", "mri-4x|ddrm"}
    assert cells.pop("mri-4x|ddrm")["not_applicable"] == "needs an SVD"  # real-input MRI
    for key in cells:
        c = cells[key]
        assert len(c["psnr"]) == 2 and len(c["ssim"]) == 2
    assert cells["mri-4x|diffpir"]["nfe"] == 3 and cells["mri-4x|pinv"]["nfe"] == 0
    # the diffusion solver improves on the zero-filled reconstruction even at 3 steps
    assert sum(cells["mri-4x|diffpir"]["psnr"]) > sum(cells["mri-4x|pinv"]["psnr"])
    md = (out / "results.md").read_text()
    assert "## mri-4x" in md and "| diffpir |" in md and "best invdiff" in md
    assert (out / "figures" / "mri-4x.png").stat().st_size > 1000
    # resume: nothing new to run, the record is unchanged
    stamp = (out / "results.json").read_text()
    assert main(args) == 0
    assert (out / "results.json").read_text() == stamp
    # other settings in the same folder are refused
    assert main(args[:-5] + ["--steps", "4", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "steps" in err and "Traceback" not in err


def test_bench_marks_svd_methods_not_applicable(tmp_path):
    assert main(["bench", "--problems", "ct-sparse-8", "--solvers", "ddrm", "deepinv-ddrm", "--n-images", "1",
                 "--steps", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    cells = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert all(c["not_applicable"] == "needs an SVD" for c in cells.values())
    assert "n/a (needs an SVD)" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--problems", "ct-nope"], "unknown problem 'ct-nope'"),
    (["--solvers", "magic"], "unknown method 'magic'"),
    (["--steps", "0"], "steps must be an integer >= 1"),
    (["--n-images", "0"], "n_images must be an integer >= 1"),
])
def test_bench_bad_arguments(args, message, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["bench", "--out", str(out), "--no-progress"] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_deepinv_samplers_use_the_same_prior(inpainting_problem):
    """deepinv's samplers run through the adapter: they count network calls like ours."""
    spec = get_problem("inpaint-random-70")
    pb = spec.make("test", 1, seed=0)
    prior = spec.build_prior()
    for name in ("deepinv-dps", "deepinv-ddrm", "deepinv-diffpir"):
        assert not_applicable(name, spec) is None
        res = get_method(name).run(pb, prior, steps=4, generator=torch.Generator().manual_seed(0), params={})
        assert res.x_hat.shape == pb.x_true.shape and torch.isfinite(res.x_hat).all()
        assert res.nfe >= 4 and res.network_seconds > 0, name
    assert METHODS["deepinv-dps"].family == "deepinv" and METHODS["tv"].family == "classical"


def test_posterior_mean_of_k_samples_method():
    spec = get_problem("mri-4x")
    pb = spec.make("test", 1, seed=0)
    prior = spec.build_prior()
    res = get_method("diffpir:3").run(pb, prior, steps=2, generator=torch.Generator().manual_seed(0))
    assert res.x_hat.shape == pb.x_true.shape and res.nfe == 2
    one = get_method("diffpir").run(pb, prior, steps=2, generator=torch.Generator().manual_seed(0)).x_hat
    assert (res.x_hat - one).abs().max() > 1e-3  # an average of 3 draws, not the single sample
    for bad in ("reddiff:2", "tv:2", "diffpir:0", "diffpir:x", "diffpir:"):
        with pytest.raises(ValueError, match="SOLVER:K"):
            get_method(bad)


def test_methods_declare_what_they_need():
    spec = get_problem("ct-sparse-8")
    assert METHODS["ddrm"].applicable(spec.operator()) == "needs an SVD"
    assert METHODS["diffpir"].applicable(spec.operator()) is True
    assert not_applicable("mbir", spec) == "couples the slices of a volume (volume problems only)"
    assert not_applicable("diffpir", get_problem("ct3d-sparse-8")).startswith("volume problem")
    with pytest.raises(ValueError, match="needs a prior"):
        get_method("dps").run(spec.make("test", 1), None, steps=2)
    with pytest.raises(ValueError, match="cannot run on this problem: needs an SVD"):
        get_method("ddrm").run(spec.make("test", 1), spec.build_prior(), steps=2)
    # the tv grid is in units of sigma_y²
    pb = spec.make("validation", 1)
    assert get_method("tv").grid_points(pb)[0]["lam"] == pytest.approx(0.3 * 0.005**2)
