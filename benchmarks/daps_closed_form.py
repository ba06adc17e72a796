"""DAPS's closed-form Langevin draw against its step-by-step loop, PSNR over seeds (issue 17).

Where ``AᵀA`` is diagonal in a known basis (masks, circular blur, single-coil MRI) DAPS draws the
output of its ``K``-step Langevin chain in one step (:meth:`invdiff.solvers.DAPS.chain_law`): the
same law as the loop, other random numbers. A single run's PSNR therefore moves by the sampler's
own seed-to-seed spread; this script compares the two over several seeds on the validation split,
with the loop forced by disabling the closed form.

Run::

    python benchmarks/daps_closed_form.py --problems mri-4x deblur-gauss --out benchmarks/daps_closed_form.md
"""

from __future__ import annotations

import argparse
import time

import torch

import invdiff.solvers.daps as daps_module
from invdiff import solve
from invdiff.metrics import psnr
from invdiff.problems import get_problem


def run(name: str, mode: str, seeds: int, steps: int, images: int) -> tuple[list[float], float]:
    spec = get_problem(name)
    pb = spec.make("validation", images, seed=0)
    prior, solver = spec.build_prior(), spec.solver("daps")
    closed_form = daps_module.diagonal_normal
    daps_module.diagonal_normal = closed_form if mode == "closed form" else (lambda A, like: None)
    try:
        scores, t = [], time.perf_counter()
        for seed in range(seeds):
            r = solve(pb, prior, solver, steps=steps, generator=torch.Generator().manual_seed(seed), progress=False)
            scores.append(float(psnr(r.x_hat.clamp(0, 1), pb.x_true).mean()))
        return scores, (time.perf_counter() - t) / (seeds * images)
    finally:
        daps_module.diagonal_normal = closed_form


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", default=["mri-4x", "deblur-gauss"])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/daps_closed_form.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# DAPS: closed-form Langevin draw against the step-by-step loop", "",
             f"Command: `python benchmarks/daps_closed_form.py --problems {' '.join(args.problems)} "
             f"--seeds {args.seeds} --steps {args.steps} --images {args.images} --out {args.out}`", "",
             f"Validation split, {args.images} images, {args.steps} steps, tuned preset, one torch thread; PSNR "
             "(dB, mean over the images) of each seed's run, and the mean over seeds.", "",
             "| problem | Langevin | PSNR per seed | mean | s / image |", "| --- | --- | --- | --- | --- |"]
    for name in args.problems:
        for mode in ("closed form", "loop"):
            scores, secs = run(name, mode, args.seeds, args.steps, args.images)
            print(name, mode, scores, flush=True)
            lines.append(f"| {name} | {mode} | {', '.join(f'{s:.2f}' for s in scores)} | "
                         f"{sum(scores) / len(scores):.2f} | {secs:.2f} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
