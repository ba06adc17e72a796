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
            score = "not scored" if c["validation_psnr"] is None else f"{c['validation_psnr']:.2f}"
            lines.append(f"| {name} | {images} images, {steps} steps | {method} | {c['params']} | {score} | {grid} |")
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


def _extended(name: str, key: str, new: dict) -> dict:
    """``new`` (a tuning result of ``key`` on problem ``name``) with the grid stored for it before
    added: the best of both grids is chosen. Refused where the stored grid was made with another
    prior (the settings are checked by ``main``)."""
    with open(OUT_JSON) as f:
        old = json.load(f)["problems"].get(name, {}).get(key)
    if old is None or old.get("grid") is None:
        sys.exit(f"--extend: no stored grid of {key} on {name} to extend")
    if old.get("prior") != new.get("prior"):
        sys.exit(f"--extend: the stored grid of {key} on {name} was made with prior {old.get('prior')!r}, "
                 f"this run with {new.get('prior')!r}")
    seen = {json.dumps(g["params"], sort_keys=True) for g in old["grid"]}
    grid = old["grid"] + [g for g in new["grid"] if json.dumps(g["params"], sort_keys=True) not in seen]
    best = max(grid, key=lambda g: g["psnr"])
    note = "; ".join(n for n in (old.get("note"), "grid extended by --points --extend") if n)
    return {**new, "params": best["params"], "validation_psnr": best["psnr"], "grid": grid, "note": note}


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
    ap.add_argument("--points", metavar="JSON",
                    help="a JSON list of parameter dicts replacing the grid of the (one) --methods entry, e.g. "
                         "'[{\"lam\": 1, \"zeta\": 1}, {\"lam\": 3, \"zeta\": 1}]' where the full grid costs too "
                         "much at 256 px; the row says so")
    ap.add_argument("--extend", action="store_true",
                    help="add the --points to the grid already stored for each problem (same prior, images and "
                         "steps) instead of replacing it, e.g. one more point beyond the edge a grid chose")
    ap.add_argument("--out", default="benchmarks/tune_presets.md")
    args = ap.parse_args(argv)
    if args.extend and not args.points:
        ap.error("--extend needs --points (the points to add)")
    if args.points and args.from_problem:
        ap.error("--points and --from-problem both replace the grid; give one")
    if args.points and (not args.methods or len(args.methods) != 1):
        ap.error("--points needs exactly one --methods entry")
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
    elif args.points:
        from invdiff.methods import get_method

        try:
            listed = json.loads(args.points)
        except json.JSONDecodeError as err:
            ap.error(f"--points is not valid JSON ({err})")
        if not isinstance(listed, list) or not listed or not all(isinstance(p, dict) for p in listed):
            ap.error("--points must be a non-empty JSON list of parameter dicts")
        points = {get_method(args.methods[0]).preset_key: listed}
    run = {"command": command, "images": args.images, "steps": args.steps, "methods": args.methods, "results": {}}
    with ProcessPoolExecutor(args.jobs) as pool:  # each problem is saved as soon as it is done
        for name, result in zip(names, pool.map(tune_one, names, [args.images] * len(names),
                                                [args.steps] * len(names), [args.methods] * len(names),
                                                [points] * len(names))):
            if points:
                for c in result.values():
                    c["note"] = (f"not a grid search: the point chosen on {args.from_problem}, scored here"
                                 if args.from_problem else "a reduced grid: the points given by --points")
            if args.extend:
                result = {key: _extended(name, key, c) for key, c in result.items()}
            run["results"] = {name: result}
            _merge_and_write(run, args.out)


if __name__ == "__main__":
    main()
