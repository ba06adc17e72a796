"""A prior's solvers on a real problem's test images, with fixed (validation-chosen) parameters.

Usage::

    python benchmarks/prior_test.py --prior runs/mri_fc.safetensors --problems mri256-8x \\
        --methods diffpir diffpir:4 --params lam=0.3 zeta=1 --steps 100 --images 4

Runs each method on the first ``--images`` test images exactly as ``invdiff bench --seed 0`` runs
a cell (``spec.make("test", n, seed=0)``, sampler generator seeded 0) and prints PSNR / SSIM per
image and seconds per image. The parameters must come from the validation split
(``benchmarks/prior_select.py``); this script only measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from invdiff.methods import get_method
from invdiff.metrics import psnr, ssim
from invdiff.priors import load_checkpoint, load_prior
from invdiff.problems import get_problem


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", required=True, help="shipped prior name or .safetensors path")
    p.add_argument("--problems", nargs="+", required=True)
    p.add_argument("--methods", nargs="+", default=["diffpir"])
    p.add_argument("--params", nargs="*", default=[], help="NAME=VALUE hyperparameters (validation-chosen)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    prior = load_checkpoint(args.prior) if args.prior.endswith(".safetensors") else load_prior(args.prior)
    params = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.params)}
    command = "python benchmarks/prior_test.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"Command: `{command.strip()}`", "",
             "| problem | method | steps | PSNR | SSIM | PSNR per image | s / image |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.problems:
        pb = get_problem(name).make("test", args.images, seed=0)
        for meth in args.methods:
            t0 = time.perf_counter()
            res = get_method(meth).run(pb, prior, steps=args.steps, generator=torch.Generator().manual_seed(0),
                                       params=params)
            x = res.x_hat.clamp(0, 1)
            per = psnr(x, pb.x_true)
            lines.append(f"| {name} | {meth} | {args.steps} | {float(per.mean()):.2f} | "
                         f"{float(ssim(x, pb.x_true).mean()):.3f} | {', '.join(f'{float(v):.2f}' for v in per)} | "
                         f"{(time.perf_counter() - t0) / args.images:.1f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
