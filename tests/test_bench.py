"""invdiff bench: cells, resume, n/a cells, tables, figures and its one-line errors."""

import json

import pytest

from invdiff.bench import METHODS, not_applicable, run_method
from invdiff.cli import main
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


def test_run_method_deepinv_samplers_use_the_same_prior(inpainting_problem):
    """deepinv's samplers run through the adapter: they count network calls like ours."""
    import torch

    from invdiff.priors import load_prior

    spec = get_problem("inpaint-random-70")
    pb = spec.make("test", 1, seed=0)
    prior = load_prior(spec.prior)
    for name in ("deepinv-dps", "deepinv-ddrm", "deepinv-diffpir"):
        assert not_applicable(name, spec) is None
        out = run_method(name, spec, pb, prior, steps=4, seed=0, params={})
        assert out["x_hat"].shape == pb.x_true.shape and torch.isfinite(out["x_hat"]).all()
        assert out["nfe"] >= 4, name
    assert METHODS["deepinv-dps"].family == "deepinv" and METHODS["tv"].family == "classical"


def test_posterior_mean_of_k_samples_method():
    from invdiff.priors import load_prior

    spec = get_problem("mri-4x")
    pb = spec.make("test", 1, seed=0)
    out = run_method("diffpir:3", spec, pb, load_prior(spec.prior), steps=2, seed=0)
    assert out["x_hat"].shape == pb.x_true.shape and out["nfe"] == 2
    one = run_method("diffpir", spec, pb, load_prior(spec.prior), steps=2, seed=0)["x_hat"]
    assert (out["x_hat"] - one).abs().max() > 1e-3  # an average of 3 draws, not the single sample
    for bad in ("reddiff:2", "tv:2", "diffpir:0", "diffpir:x"):
        with pytest.raises(ValueError, match="SOLVER:K"):
            run_method(bad, spec, pb, None, steps=2)
