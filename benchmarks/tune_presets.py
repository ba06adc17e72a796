"""Tune solver presets for the named problems on their validation split.

For each 2D problem in :data:`invdiff.problems.PROBLEMS` and each method below (invdiff
solvers, deepinv's samplers on the same prior, and the TV baseline), every point of a
small grid (each method's ``grid``: :data:`invdiff.methods.METHODS`) is run through
:func:`invdiff.bench.tune_problem` (the benchmark's own code path) on ``--images`` validation
images (seed 555; never the test split) at
``--steps`` steps, and the hyperparameters with the best mean PSNR are written to
``invdiff/problems/presets.json`` (read by the registry as ``ProblemSpec.presets``) together
with the grid scores, and summarised in ``benchmarks/tune_presets.md``.

Run::

    python benchmarks/tune_presets.py --jobs 2
    python benchmarks/tune_presets.py --problems mri-4x mri-8x   # add or redo some
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

OUT_JSON = os.path.join(os.path.dirname(__file__), "..", "invdiff", "problems", "presets.json")


def tune_one(name: str, images: int, steps: int, methods=None) -> dict:
    import torch

    torch.set_num_threads(1)
    from invdiff.bench import tune_problem
    from invdiff.methods import METHODS

    names = methods or [n for n, m in METHODS.items() if m.grid]
    out = tune_problem(name, names, images=images, steps=steps)
    print(name, {k: (v["params"], round(v["validation_psnr"], 2)) for k, v in out.items()}, flush=True)
    return out


def _write(payload: dict, md_path: str) -> None:
    with open(OUT_JSON, "w") as f:
        json.dump(payload, f, indent=1)
    lines = ["# Solver presets tuned on the validation split", "",
             f"{payload['images']} validation images per problem, {payload['steps']} steps, mean PSNR. "
             "Commands (each adds or replaces the problems it names):", ""]
    lines += [f"- `{c}`" for c in payload["commands"]]
    lines += ["", "| problem | method | chosen | validation PSNR (dB) | grid |", "| --- | --- | --- | --- | --- |"]
    for name, r in payload["problems"].items():
        for method, c in r.items():
            grid = ("(grid scores not kept: " + c["note"] + ")") if c.get("grid") is None else ", ".join(
                f"{'/'.join(f'{v:.3g}' for v in g['params'].values())}: {g['psnr']:.2f}" for g in c["grid"])
            lines.append(f"| {name} | {method} | {c['params']} | {c['validation_psnr']:.2f} | {grid} |")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    from invdiff.problems import PROBLEMS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", help="tune only these (merged into presets.json); default: all 2D")
    ap.add_argument("--methods", nargs="+", help="tune only these methods (merged); default: every method with a grid")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/tune_presets.md")
    args = ap.parse_args(argv)
    names = args.problems or [n for n, p in PROBLEMS.items() if not p.is_volume]
    command = "python benchmarks/tune_presets.py " + " ".join(sys.argv[1:] if argv is None else argv)
    payload = {"split": "validation", "images": args.images, "steps": args.steps, "commands": [], "problems": {}}
    if (args.problems or args.methods) and os.path.isfile(OUT_JSON):
        with open(OUT_JSON) as f:
            old = json.load(f)
        if (old.get("images"), old.get("steps")) != (args.images, args.steps):
            sys.exit(f"{OUT_JSON} was tuned with --images {old.get('images')} --steps {old.get('steps')}; "
                     f"merge with the same settings, or retune every problem (no --problems/--methods)")
        payload["commands"] = old.get("commands", [])
        payload["problems"] = old["problems"]
    payload["commands"].append(command)
    with ProcessPoolExecutor(args.jobs) as pool:  # each problem is saved as soon as it is done
        for name, result in zip(names, pool.map(tune_one, names, [args.images] * len(names),
                                                [args.steps] * len(names), [args.methods] * len(names))):
            payload["problems"][name] = {**payload["problems"].get(name, {}), **result}
            _write(payload, args.out)


if __name__ == "__main__":
    main()
