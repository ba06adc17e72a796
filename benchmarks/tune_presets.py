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


def tune_one(name: str, images: int, steps: int, methods=None, points=None) -> dict:
    import torch

    torch.set_num_threads(1)
    from invdiff.bench import tune_problem
    from invdiff.methods import METHODS

    names = methods or [n for n, m in METHODS.items() if m.grid]
    out = tune_problem(name, names, images=images, steps=steps, points=points)
    print(name, {k: (v["params"], round(v["validation_psnr"], 2)) for k, v in out.items()}, flush=True)
    return out


def _settings(payload: dict, name: str) -> tuple[int, int]:
    """(validation images, steps) a problem was tuned with (per problem, else the file's defaults)."""
    s = payload.get("settings", {}).get(name, {})
    return s.get("images", payload["images"]), s.get("steps", payload["steps"])


def _write(payload: dict, md_path: str) -> None:
    from invdiff.data.io import atomic_write

    # atomic: a benchmark running meanwhile reads the presets of other problems from this file
    atomic_write(OUT_JSON, lambda tmp: open(tmp, "w").write(json.dumps(payload, indent=1)))
    lines = ["# Solver presets tuned on the validation split", "",
             f"{payload['images']} validation images per problem, {payload['steps']} steps, mean PSNR, unless the "
             "problem's row says otherwise (column *settings*). Commands (each adds or replaces the problems it "
             "names):", ""]
    lines += [f"- `{c}`" for c in payload["commands"]]
    lines += ["", "| problem | settings | method | chosen | validation PSNR (dB) | grid |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, r in payload["problems"].items():
        images, steps = _settings(payload, name)
        for method, c in r.items():
            grid = ("(grid scores not kept: " + c["note"] + ")") if c.get("grid") is None else ", ".join(
                f"{'/'.join(f'{v:.3g}' for v in g['params'].values())}: {g['psnr']:.2f}" for g in c["grid"])
            if c.get("grid") is not None and c.get("note"):
                grid += f" ({c['note']})"
            lines.append(f"| {name} | {images} images, {steps} steps | {method} | {c['params']} | "
                         f"{c['validation_psnr']:.2f} | {grid} |")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _merge_and_write(run: dict, md_path: str) -> None:
    """Fold this run's results into ``presets.json`` as it is on disk now, and rewrite both files.

    The file is re-read under a lock at every write, so several tuning commands may run at once
    (e.g. one per core on different problems): each adds its own problems and none drops another's.
    ``run`` holds this command's ``command``, ``images``, ``steps``, ``methods`` and ``results``.
    """
    import fcntl

    with open(OUT_JSON + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(OUT_JSON):
            with open(OUT_JSON) as f:
                payload = json.load(f)
        else:
            payload = {"split": "validation", "images": run["images"], "steps": run["steps"], "problems": {}}
        payload.setdefault("commands", [])
        payload.setdefault("settings", {})
        if run["command"] not in payload["commands"]:
            payload["commands"].append(run["command"])
        for name, result in run["results"].items():
            if (run["images"], run["steps"]) != (payload["images"], payload["steps"]):
                payload["settings"][name] = {"images": run["images"], "steps": run["steps"]}
            else:
                payload["settings"].pop(name, None)
            # --methods adds to the problem's other methods; a full retune replaces them all
            kept = payload["problems"].get(name, {}) if run["methods"] else {}
            payload["problems"][name] = {**kept, **result}
        _write(payload, md_path)


def main(argv=None):
    from invdiff.problems import PROBLEMS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", help="tune only these (merged into presets.json); default: all 2D")
    ap.add_argument("--methods", nargs="+", help="tune only these methods (merged); default: every method with a grid")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--from-problem", metavar="PROBLEM",
                    help="instead of each method's grid, score only the point chosen for PROBLEM (e.g. its 256-px "
                         "version, where a full grid at 512 px costs too much); the row says so")
    ap.add_argument("--out", default="benchmarks/tune_presets.md")
    args = ap.parse_args(argv)
    names = args.problems or [n for n, p in PROBLEMS.items() if not p.is_volume]
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        sys.exit(f"unknown problem(s) {', '.join(unknown)}; known: {', '.join(PROBLEMS)}")
    if args.methods and os.path.isfile(OUT_JSON):
        with open(OUT_JSON) as f:
            old = json.load(f)
        for name in names:  # merging methods into a problem tuned with other settings would mix them
            if name in old["problems"] and _settings(old, name) != (args.images, args.steps):
                sys.exit(f"{name} was tuned with --images {_settings(old, name)[0]} --steps {_settings(old, name)[1]}; "
                         f"add methods with the same settings, or retune the problem (no --methods)")
    command = "python benchmarks/tune_presets.py " + " ".join(sys.argv[1:] if argv is None else argv)
    points = None
    if args.from_problem:
        chosen = PROBLEMS[args.from_problem].presets if args.from_problem in PROBLEMS else {}
        missing = [m for m in (args.methods or []) if m not in chosen]
        if not args.methods or missing:
            sys.exit(f"--from-problem needs --methods, each tuned on {args.from_problem}; not tuned there: "
                     f"{', '.join(missing) or '(no --methods given)'}")
        points = {m: [chosen[m]] for m in args.methods}
    run = {"command": command, "images": args.images, "steps": args.steps, "methods": args.methods, "results": {}}
    with ProcessPoolExecutor(args.jobs) as pool:  # each problem is saved as soon as it is done
        for name, result in zip(names, pool.map(tune_one, names, [args.images] * len(names),
                                                [args.steps] * len(names), [args.methods] * len(names),
                                                [points] * len(names))):
            if points:
                for c in result.values():
                    c["note"] = f"not a grid search: the point chosen on {args.from_problem}, scored here"
            run["results"] = {name: result}
            _merge_and_write(run, args.out)


if __name__ == "__main__":
    main()
