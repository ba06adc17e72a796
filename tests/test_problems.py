"""Named problems: every spec builds a consistent, seeded problem on both splits."""

import pytest
import torch

from invdiff.methods import METHODS
from invdiff.cli import main
from invdiff.priors import load_prior
from invdiff.problems import PROBLEMS, get_problem
from invdiff.solvers import SOLVERS

EXPECTED = {"ct-sparse-8", "ct-sparse-32", "ct-limited-90", "mri-4x", "mri-8x", "deblur-gauss", "deblur-motion",
            "inpaint-box", "inpaint-random-70", "sr-4x", "ct3d-sparse-8", "mri3d-4x"}


def test_registry_holds_the_named_problems():
    assert EXPECTED <= set(PROBLEMS)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_problem_matches_its_prior_and_is_seeded(name):
    spec = PROBLEMS[name]
    n = 1 if spec.is_volume or spec.size == 512 else 2  # one 512-px CT slice per split
    a, b = spec.make("test", n, seed=3), spec.make("test", n, seed=3)
    assert torch.equal(a.y, b.y) and torch.equal(a.x_true, b.x_true)
    assert a.x_true.shape == (spec.depth or n, spec.channels, spec.size, spec.size)
    assert 0 <= float(a.x_true.min()) and float(a.x_true.max()) <= 1
    val = spec.images("validation", n)
    assert not torch.equal(val, a.x_true)  # disjoint splits
    prior = load_prior(spec.prior)
    prior.check_input(a.x_true)  # the prior accepts the problem's images


def test_bad_names_and_splits(capsys):
    with pytest.raises(ValueError, match="known problems: ct-sparse-8"):
        get_problem("ct-sparse-9")
    with pytest.raises(ValueError, match="volume problem"):
        PROBLEMS["ct3d-sparse-8"].make("test", 2)
    with pytest.raises(ValueError, match="split"):
        PROBLEMS["sr-4x"].images("train", 1)
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPECTED)


def test_presets_come_from_the_validation_tuning():
    import json
    from pathlib import Path

    import invdiff.problems as problems

    path = Path(problems.__file__).with_name("presets.json")
    if not path.is_file():
        pytest.skip("no tuned presets committed")
    payload = json.loads(path.read_text())
    assert payload["split"] == "validation"
    for name, per_solver in payload["problems"].items():
        spec = PROBLEMS[name]
        for solver, c in per_solver.items():
            assert spec.presets[solver] == c["params"]
            if c.get("grid") is not None:  # grids lost in one crashed run are marked with a note
                best = max(g["psnr"] for g in c["grid"])
                assert c["validation_psnr"] == best  # the chosen point is the grid's best
            else:
                assert c["note"]
            if solver in SOLVERS:  # deepinv samplers and TV are bench methods, not invdiff solvers
                configured = spec.solver(solver)
                assert all(getattr(configured, k) == v for k, v in c["params"].items())
            else:
                assert solver in METHODS


def test_presets_and_calibrations_were_fitted_with_the_problems_prior():
    """A preset or conformal calibration fitted with one prior says nothing about another: when a
    problem's prior changes, everything tuned with the old one must be refitted (or removed)."""
    import json
    from pathlib import Path

    import invdiff.problems as problems

    folder = Path(problems.__file__).parent
    stale = []
    for file in ("presets.json", "calibration.json"):
        for name, entries in json.loads((folder / file).read_text())["problems"].items():
            uses_prior = {m.preset_key: m.uses_prior for m in METHODS.values()}
            for key, entry in entries.items():
                needs = uses_prior.get(key, True) if file == "presets.json" else True
                if needs and entry.get("prior") != PROBLEMS[name].prior:
                    stale.append(f"{file}: {name} / {key} fitted with {entry.get('prior')!r}, "
                                 f"the problem's prior is {PROBLEMS[name].prior!r}")
    assert not stale, "\n".join(stale)


def test_a_problem_whose_splits_hold_fewer_images_benchmarks_those_it_has(tmp_path):
    from invdiff.bench import run_bench

    spec = PROBLEMS["ct512-sparse-32"]
    assert spec.max_images == 1 and spec.n_images(4) == 1 and PROBLEMS["ct256-sparse-8"].n_images(4) == 4
    data = run_bench(["ct512-sparse-32"], ["pinv"], n_images=4, steps=2, out=str(tmp_path), progress=False)
    cell = data["cells"]["ct512-sparse-32|pinv"]
    assert cell["n_images"] == 1 and len(cell["psnr"]) == 1
    assert "Test images: 1 (the split holds no more at this size)" in (tmp_path / "results.md").read_text()
