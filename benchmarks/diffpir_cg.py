"""DiffPIR's CG data step on 8-view 64-px CT: iterations and the circulant preconditioner.

DiffPIR (the problem's tuned preset) on a problem's validation split (``--images``, default 4;
noise seed 0), ``--steps`` (default 100), torch threads 1; each configuration ``ITERS:FLOOR`` sets ``cg_iters`` and
``precond_floor`` (``None``: plain CG). Prints validation PSNR, seconds per image, network
seconds per image and their ratio, each from one run.

Usage::

    python benchmarks/diffpir_cg.py --problem ct-sparse-8 --configs 30:None 5:None 3:0.05 10:0.05
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from invdiff import solve
from invdiff.metrics import psnr
from invdiff.problems import get_problem


def _config(text: str) -> tuple[int, float | None]:
    iters, floor = text.split(":")
    return int(iters), None if floor == "None" else float(floor)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", default="ct-sparse-8")
    p.add_argument("--split", default="validation")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--configs", type=_config, nargs="+", default=[_config(c) for c in ("30:None", "5:None", "5:0.05")])
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    spec = get_problem(a.problem)
    problem = spec.make(a.split, n=a.images, seed=0)
    prior = spec.build_prior()
    base = spec.solver("diffpir")
    print(a.problem, a.split, base)
    for iters, floor in a.configs:
        solver = dataclasses.replace(base, cg_iters=iters, precond_floor=floor)
        t0 = time.perf_counter()
        res = solve(problem, prior, solver, steps=a.steps, generator=torch.Generator().manual_seed(0), progress=False)
        dt = time.perf_counter() - t0
        score = psnr(res.x_hat.clamp(0, 1), problem.x_true).mean()
        n = a.images
        print(f"| {a.problem} | {iters} | {floor} | {score:.2f} | {dt / n:.2f} | {res.network_seconds / n:.2f} | "
              f"{dt / res.network_seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
