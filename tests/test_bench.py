"""invdiff bench: cells, resume, n/a cells, tables, figures and its one-line errors."""

import json
import math
import statistics

import numpy as np
import pytest
import torch

from invdiff.bench import not_applicable
from invdiff.cli import main
from invdiff.methods import METHODS, get_method
from invdiff.metrics import psnr, ssim
from invdiff.problems import get_problem


def _psnr(x, ref) -> float:
    """PSNR (peak 1) written out here, not through invdiff.metrics."""
    return float(10 * np.log10(1 / np.mean((x.astype(np.float64) - ref.astype(np.float64)) ** 2)))


def test_bench_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "b"
    args = ["bench", "--problems", "mri-4x", "--solvers", "diffpir", "pinv", "ddrm", "--n-images", "2",
            "--steps", "3", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    cells = data["cells"]
    assert set(cells) == {"mri-4x|diffpir", "mri-4x|pinv", "mri-4x|ddrm"}
    assert cells.pop("mri-4x|ddrm")["not_applicable"] == "needs an SVD"  # real-input MRI
    for key in cells:
        c = cells[key]
        assert c["device"] == "cpu", key  # each record names where it ran (its time depends on it)
        assert len(c["psnr"]) == 2 and len(c["ssim"]) == 2
        assert all(math.isfinite(v) and 10 < v < 50 for v in c["psnr"]), (key, c["psnr"])
        assert all(0 < v <= 1 for v in c["ssim"]), (key, c["ssim"])
    assert cells["mri-4x|diffpir"]["nfe"] == 3 and cells["mri-4x|pinv"]["nfe"] == 0
    # the diffusion solver improves on the zero-filled reconstruction even at 3 steps
    assert sum(cells["mri-4x|diffpir"]["psnr"]) > sum(cells["mri-4x|pinv"]["psnr"])

    # the saved first reconstructions are the ones scored, against the problem's first test image:
    # PSNR recomputed here agrees to float32 rounding of the MSE (relative 1e-6 → 5e-6 dB; 1e-4 allowed)
    rec = out / "reconstructions" / "mri-4x"
    truth = np.load(rec / "truth.npy")
    assert np.array_equal(truth, get_problem("mri-4x").make("test", 2, seed=0).x_true[0].numpy())
    saved = {m: np.load(rec / f"{m}.npy") for m in ("diffpir", "pinv")}
    for m, x in saved.items():
        assert x.shape == truth.shape and 0 <= x.min() and x.max() <= 1  # clamped as scored
        assert abs(_psnr(x, truth) - cells[f"mri-4x|{m}"]["psnr"][0]) < 1e-4, m
        assert float(ssim(torch.from_numpy(x)[None], torch.from_numpy(truth)[None])) == \
            pytest.approx(cells[f"mri-4x|{m}"]["ssim"][0], abs=1e-6), m
    assert (_psnr(saved["diffpir"], truth) > _psnr(saved["pinv"], truth)) == \
        (cells["mri-4x|diffpir"]["psnr"][0] > cells["mri-4x|pinv"]["psnr"][0])

    # the tables show these numbers: mean ± std over the images, and the summary's best per family
    md = (out / "results.md").read_text()
    assert "## mri-4x" in md and "| diffpir |" in md and "best invdiff" in md
    means = {m: statistics.mean(cells[f"mri-4x|{m}"]["psnr"]) for m in ("diffpir", "pinv")}
    for m in ("diffpir", "pinv"):
        std = statistics.stdev(cells[f"mri-4x|{m}"]["psnr"])
        assert f"| {m} | {means[m]:.2f} ± {std:.2f} |" in md, m
    assert (f"| mri-4x | diffpir {means['diffpir']:.2f} | pinv {means['pinv']:.2f} | "
            f"{means['diffpir'] - means['pinv']:+.2f} |") in md
    assert (out / "figures" / "mri-4x.png").stat().st_size > 1000
    # resume: nothing new to run, the record is unchanged
    stamp = (out / "results.json").read_text()
    assert main(args) == 0
    assert (out / "results.json").read_text() == stamp
    # resume after a lost cell: only that cell runs again, and its seeded run gives the same numbers
    partial = json.loads(stamp)
    lost = partial["cells"].pop("mri-4x|diffpir")
    (out / "results.json").write_text(json.dumps(partial))
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())["cells"]
    for k in ("psnr", "ssim", "nfe", "vjp", "params"):
        assert again["mri-4x|diffpir"][k] == lost[k], k
    assert again["mri-4x|pinv"] == partial["cells"]["mri-4x|pinv"]
    # a cell made with another prior than the problem's (its prior changed since) runs again, and
    # says so; cells of methods without a prior (pinv) name none and are kept
    assert again["mri-4x|diffpir"]["prior"] == "phantom64" and again["mri-4x|pinv"]["prior"] is None
    capsys.readouterr()
    for recorded in ("photo64", None):
        old = json.loads(stamp)
        if recorded is None:  # from before cells named their prior
            del old["cells"]["mri-4x|diffpir"]["prior"]
        else:
            old["cells"]["mri-4x|diffpir"]["prior"] = recorded
        old["cells"]["mri-4x|diffpir"]["psnr"] = [0.0, 0.0]
        (out / "results.json").write_text(json.dumps(old))
        assert main(args) == 0
        err = capsys.readouterr().err
        assert "1 cell(s) will run again: mri-4x|diffpir (made with prior " in err, err
        assert ("photo64" if recorded else "(not recorded)") in err and "prior is now phantom64" in err
        rerun = json.loads((out / "results.json").read_text())["cells"]
        assert rerun["mri-4x|diffpir"]["psnr"] == lost["psnr"] and rerun["mri-4x|diffpir"]["prior"] == "phantom64"
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
        # even at 4 steps the prior fills in the 70 % missing pixels: far better than A†y (zeros there)
        assert float(psnr(res.x_hat.clamp(0, 1), pb.x_true)) > float(psnr(pb.physics.A_dagger(pb.y), pb.x_true)), name
    assert METHODS["deepinv-dps"].family == "deepinv" and METHODS["tv"].family == "classical"


def test_posterior_mean_of_k_samples_method():
    spec = get_problem("mri-4x")
    pb = spec.make("test", 1, seed=0)
    prior = spec.build_prior()
    res = get_method("diffpir:3").run(pb, prior, steps=2, generator=torch.Generator().manual_seed(0))
    assert res.x_hat.shape == pb.x_true.shape and res.nfe == 2
    one = get_method("diffpir").run(pb, prior, steps=2, generator=torch.Generator().manual_seed(0)).x_hat
    assert (res.x_hat - one).abs().max() > 1e-3  # an average of 3 draws, not the single sample
    # the point estimate is the mean of the 3 distinct draws it reports
    assert res.samples.shape == (3,) + tuple(pb.x_true.shape) and res.samples.std(0).min() > 0
    assert torch.allclose(res.x_hat, res.samples.mean(0), atol=1e-6)
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
