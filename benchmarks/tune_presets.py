"""Tune solver presets for the named problems on their validation split.

For each 2D problem in :data:`invdiff.problems.PROBLEMS` and each method below (invdiff
solvers, deepinv's samplers on the same prior, and the TV baseline), every point of a
small grid is run through :func:`invdiff.bench.run_method` (the benchmark's own code path) on ``--images`` validation images (seed 555; never the test split) at
``--steps`` steps, and the hyperparameters with the best mean PSNR are written to
``invdiff/problems/presets.json`` (read by the registry as ``ProblemSpec.presets``) together
with the grid scores, and summarised in ``benchmarks/tune_presets.md``.

Run::

    python benchmarks/tune_presets.py --jobs 2
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
    "tv": {"lam": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0]},
}
OUT_JSON = os.path.join(os.path.dirname(__file__), "..", "invdiff", "problems", "presets.json")


def tune_one(name: str, images: int, steps: int) -> dict:
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
        if not_applicable(method, spec):
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


def main(argv=None):
    from invdiff.problems import PROBLEMS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/tune_presets.md")
    args = ap.parse_args(argv)
    names = [n for n, p in PROBLEMS.items() if p.depth is None]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = dict(zip(names, pool.map(tune_one, names, [args.images] * len(names), [args.steps] * len(names))))
    payload = {"command": "python benchmarks/tune_presets.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "split": "validation", "images": args.images, "steps": args.steps, "problems": results}
    with open(OUT_JSON, "w") as f:
        json.dump(payload, f, indent=1)
    lines = ["# Solver presets tuned on the validation split", "", f"Command: `{payload['command']}` "
             f"({args.images} validation images per problem, {args.steps} steps, mean PSNR).", "",
             "| problem | solver | chosen | validation PSNR (dB) | grid |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        for solver, c in r.items():
            grid = ", ".join(f"{'/'.join(f'{v:.3g}' for v in g['params'].values())}: {g['psnr']:.2f}" for g in c["grid"])
            lines.append(f"| {name} | {solver} | {c['params']} | {c['validation_psnr']:.2f} | {grid} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
