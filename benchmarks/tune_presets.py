"""Tune solver presets for the named problems on their validation split.

For each 2D problem in :data:`invdiff.problems.PROBLEMS` and each method below (invdiff
solvers, deepinv's samplers on the same prior, and the TV baseline), every point of a
small grid is run through :func:`invdiff.bench.run_method` (the benchmark's own code path) on ``--images`` validation images (seed 555; never the test split) at
``--steps`` steps, and the hyperparameters with the best mean PSNR are written to
``invdiff/problems/presets.json`` (read by the registry as ``ProblemSpec.presets``) together
with the grid scores, and summarised in ``benchmarks/tune_presets.md``.

Run::

    python benchmarks/tune_presets.py --jobs 2
    python benchmarks/tune_presets.py --problems mri-4x mri-8x   # add or redo some
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

# Grids per method; "tv" weights are multiples of sigma_y² (the default rule is sigma_y²/0.05).
GRIDS = {
    "diffpir": {"lam": [0.3, 1.0, 3.0, 10.0], "zeta": [0.3, 1.0]},
    "dps": {"zeta": [1.0, 3.0, 10.0, 30.0, 100.0]},
    "reddiff": {"lam": [0.05, 0.25, 1.0], "lr": [0.1, 0.3]},
    "deepinv-dps": {"weight": [30.0, 100.0, 300.0, 1000.0, 3000.0]},
    "deepinv-diffpir": {"lambda_": [0.3, 1.0, 3.0, 10.0], "zeta": [0.3, 1.0]},
    "tv": {"lam": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]},
}
OUT_JSON = os.path.join(os.path.dirname(__file__), "..", "invdiff", "problems", "presets.json")


def tune_one(name: str, images: int, steps: int, methods=None) -> dict:
    import torch

    torch.set_num_threads(1)
    from invdiff import psnr
    from invdiff.bench import not_applicable, run_method
    from invdiff.priors import load_prior
    from invdiff.problems import get_problem

    spec = get_problem(name)
    pb = spec.make("validation", images, seed=1)
    prior = load_prior(spec.prior)
    out = {}
    for method, grid in GRIDS.items():
        if not_applicable(method, spec) or (methods and method not in methods):
            continue
        scores = []
        for values in itertools.product(*grid.values()):
            params = dict(zip(grid, values))
            if method == "tv":
                params["lam"] *= max(spec.sigma_y, 1e-3) ** 2
            x = run_method(method, spec, pb, prior, steps=steps, seed=0, params=params)["x_hat"]
            scores.append((float(psnr(x, pb.x_true).mean()), params))
        best = max(scores, key=lambda t: t[0])
        out[method] = {"params": best[1], "validation_psnr": best[0],
                       "grid": [{"params": p, "psnr": s} for s, p in scores]}
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
    ap.add_argument("--methods", nargs="+", choices=sorted(GRIDS), help="tune only these methods (merged)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/tune_presets.md")
    args = ap.parse_args(argv)
    names = args.problems or [n for n, p in PROBLEMS.items() if p.depth is None]
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
