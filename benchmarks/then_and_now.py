"""A solver's time per image before and after the speed work, measured side by side in one run.

Issue 17's bar for DiffPIR is relative: "≤ 1/3 of today's time per image at equal PSNR", today
being the code when the issue was filed. Times measured in different sessions on a shared 2-core
machine are not comparable, so this script checks the old code out of git (``--then``, a commit;
``git archive`` into a temporary folder, the repository itself is not touched) and runs the same
problem, images, seeds and step count with each version, alternately, one thread each, in fresh
processes. Each version uses its own problem preset, prior weights and solver defaults: the point
is what a user of that version got.

Usage::

    python benchmarks/then_and_now.py --then 4afb6bd --problem ct-sparse-8 --solver diffpir \
        --steps 100 --images 4 --repeats 2 --out benchmarks/then_and_now.md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cells import append_run  # benchmarks/cells.py

ROOT = Path(__file__).resolve().parents[1]

# Runs inside each version's tree (its invdiff first on sys.path): only API both versions have.
CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from invdiff import solve
from invdiff.metrics import psnr
from invdiff.problems import get_problem
problem_name, solver_name, steps, images = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
spec = get_problem(problem_name)
problem = spec.make("validation", n=images, seed=0)
prior = spec.build_prior()
solver = spec.solver(solver_name)
solve(problem, prior, solver, steps=2, generator=torch.Generator().manual_seed(0), progress=False)  # warm-up
t0 = time.perf_counter()
res = solve(problem, prior, solver, steps=steps, generator=torch.Generator().manual_seed(0), progress=False)
seconds = time.perf_counter() - t0
import invdiff
print(json.dumps({"psnr": float(psnr(res.x_hat.clamp(0, 1), problem.x_true).mean()),
                  "seconds_per_image": seconds / images,
                  "network_seconds_per_image": float(res.network_seconds) / images,
                  "solver": repr(solver), "prior": spec.prior, "file": invdiff.__file__}))
"""


def _export(commit: str, into: Path) -> Path:
    """The tree of ``commit`` (weights included) unpacked under ``into``."""
    tree = into / commit
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _run(tree: Path, steps: int, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, args.problem, args.solver, str(steps), str(args.images)],
                         cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
    cell = json.loads(out.strip().splitlines()[-1])
    if not cell["file"].startswith(str(tree)):  # the editable install must not win over PYTHONPATH
        raise RuntimeError(f"ran {cell['file']}, expected the tree {tree}")
    return cell


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--then", required=True, help="commit of the old code")
    p.add_argument("--problem", default="ct-sparse-8")
    p.add_argument("--solver", default="diffpir")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--now-steps", type=int, default=None,
                   help="steps of the current version (default --steps): time at equal PSNR, where it needs fewer")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="alternate runs per version; the median counts")
    p.add_argument("--out", default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    now = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "invdiff/*.py"], check=True,
                           capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {args.then: _export(args.then, Path(tmp)), now + ("+" if dirty else ""): ROOT}
        steps = dict(zip(trees, (args.steps, args.now_steps or args.steps)))
        runs = {label: [] for label in trees}
        for _ in range(args.repeats):
            for label, tree in trees.items():
                runs[label].append(_run(tree, steps[label], args))
                print(label, json.dumps(runs[label][-1]), flush=True)
    lines = [f"| version | solver | steps | PSNR (dB) | s / image (median of {args.repeats}) | network s / image | overhead |",
             "|---|---|---|---|---|---|---|"]
    med = {}
    for label, cells in runs.items():
        s = statistics.median(c["seconds_per_image"] for c in cells)
        n = statistics.median(c["network_seconds_per_image"] for c in cells)
        med[label] = s
        lines.append(f"| {label} | `{cells[0]['solver']}` | {steps[label]} | {cells[0]['psnr']:.2f} | {s:.2f} | {n:.2f} | {s / n:.2f} |")
    old, new = med.values()
    lines.append("")
    lines.append(f"{args.problem}, {args.solver}, {args.images} validation images, seed 0, one "
                 f"thread: now / then = {new / old:.3f}.")
    text = "\n".join(lines)
    append_run(args.out, "then_and_now.py", argv, text)


if __name__ == "__main__":
    main()
