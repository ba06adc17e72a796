"""benchmarks/tune_presets.py: its argument checks and ``--extend`` (a stored grid plus new points)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tuner(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("tune_presets", ROOT / "benchmarks" / "tune_presets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stored = {"split": "validation", "images": 2, "steps": 30, "commands": [], "settings": {}, "problems": {
        "ct256-sparse-32": {"diffpir": {"params": {"lam": 3.0}, "validation_psnr": 30.0, "prior": "ct",
                                        "grid": [{"params": {"lam": 1.0}, "psnr": 29.0},
                                                 {"params": {"lam": 3.0}, "psnr": 30.0}]}}}}
    path = tmp_path / "presets.json"
    path.write_text(json.dumps(stored))
    monkeypatch.setattr(module, "OUT_JSON", str(path))
    return module


def test_extend_adds_points_and_rechooses(tuner):
    new = {"params": {"lam": 10.0}, "validation_psnr": 30.5, "prior": "ct", "note": "a reduced grid",
           "grid": [{"params": {"lam": 10.0}, "psnr": 30.5}, {"params": {"lam": 3.0}, "psnr": 99.0}]}
    out = tuner._extended("ct256-sparse-32", "diffpir", new)
    # the stored score of a point already in the grid is kept (same seeds: a re-run gives the same number)
    assert [g["params"]["lam"] for g in out["grid"]] == [1.0, 3.0, 10.0]
    assert out["params"] == {"lam": 10.0} and out["validation_psnr"] == 30.5
    worse = {**new, "grid": [{"params": {"lam": 10.0}, "psnr": 28.0}]}
    assert tuner._extended("ct256-sparse-32", "diffpir", worse)["params"] == {"lam": 3.0}
    assert "extended" in out["note"]


def test_extend_refuses_another_prior_or_no_grid(tuner):
    new = {"params": {"lam": 10.0}, "validation_psnr": 30.5, "prior": "phantom64",
           "grid": [{"params": {"lam": 10.0}, "psnr": 30.5}]}
    with pytest.raises(SystemExit, match="prior 'ct', this run with 'phantom64'"):
        tuner._extended("ct256-sparse-32", "diffpir", new)
    with pytest.raises(SystemExit, match="no stored grid of diffpir on ct256-sparse-8"):
        tuner._extended("ct256-sparse-8", "diffpir", {**new, "prior": "ct"})


@pytest.mark.parametrize("args, message", [
    (["--points", "[{\"lam\": 1}]"], "exactly one --methods"),
    (["--methods", "diffpir", "--points", "{\"lam\": 1}"], "non-empty JSON list"),
    (["--methods", "diffpir", "--points", "[{lam: 1}]"], "not valid JSON"),
    (["--methods", "diffpir", "--extend"], "--extend needs --points"),
    (["--methods", "diffpir", "--points", "[{\"lam\": 1}]", "--from-problem", "ct256-sparse-8"], "give one"),
])
def test_bad_arguments(tuner, args, message, capsys):
    with pytest.raises(SystemExit):
        tuner.main(["--problems", "ct256-sparse-32", "--steps", "30", *args])
    assert message in capsys.readouterr().err
