"""A new solver reaches the benchmark, the tuner and the listings through one registry line.

The toy solver below lives in this one file; registering it in ``SOLVERS`` (the one line a new
solver adds) is all it takes for ``invdiff bench`` (whose cells run in separate processes), the
tuner and ``invdiff methods`` to run it.
"""

import json
from dataclasses import dataclass

import torch

from invdiff.bench import run_bench, tune_problem
from invdiff.cli import main
from invdiff.solvers import SOLVERS
from invdiff.solvers.base import Solver, State


@dataclass(frozen=True)
class ToyShrink(Solver):
    """Toy solver: the denoised estimate pulled toward A†y by a weight ``w``."""

    w: float = 0.5
    grid = {"w": [0.0, 1.0]}

    def step(self, state, sigma, sigma_next, problem, prior, generator):
        with torch.no_grad():
            x0 = prior.denoise(state.x, sigma)
            back = problem.physics.A_dagger(problem.y).expand_as(x0)
            x0 = (1 - self.w) * x0 + self.w * back
            x = x0 + sigma_next * (state.x - x0) / sigma
        return State(x=x, x0=x0), {}


def test_a_registered_toy_solver_runs_through_bench_tuner_and_listings(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(SOLVERS, "toy", ToyShrink)  # the one registry line
    data = run_bench(["ct-sparse-8"], ["toy", "toy:2", "pinv"], n_images=1, steps=2, out=str(tmp_path),
                     progress=False)
    cells = data["cells"]
    assert len(cells["ct-sparse-8|toy"]["psnr"]) == 1 and cells["ct-sparse-8|toy"]["nfe"] == 2
    assert cells["ct-sparse-8|toy:2"]["family"] == "invdiff"
    assert "| toy |" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["cells"]["ct-sparse-8|toy"]["params"] == {}
    # the tuner searches the toy's declared grid on the validation split and picks one of its points
    tuned = tune_problem("ct-sparse-8", ["toy"], images=1, steps=2)
    assert [g["params"] for g in tuned["toy"]["grid"]] == [{"w": 0.0}, {"w": 1.0}]
    assert tuned["toy"]["params"] in ({"w": 0.0}, {"w": 1.0})
    # points= replaces the grid (a point chosen elsewhere, scored here)
    scored = tune_problem("ct-sparse-8", ["toy"], images=1, steps=2, points={"toy": [{"w": 0.25}]})
    assert [g["params"] for g in scored["toy"]["grid"]] == [{"w": 0.25}] and scored["toy"]["params"] == {"w": 0.25}
    assert main(["methods"]) == 0 and "toy" in capsys.readouterr().out
    assert main(["solvers"]) == 0 and "Toy solver: the denoised estimate" in capsys.readouterr().out
