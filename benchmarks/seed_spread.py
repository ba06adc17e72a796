"""How much a sampler's PSNR moves with its random seed alone, ours next to deepinv's.

A posterior sampler's one draw inside a large unobserved region (a 128-px inpainting hole) is one
plausible image out of many, so its PSNR depends on the seed. Before reading a difference between
two samplers on four images as a difference between them, compare it with this spread: each
method runs on the same measured validation images (noise seed 0) with its tuned preset, once per
sampling seed.

Usage::

    python benchmarks/seed_spread.py --problem photo256-inpaint-box --methods diffpir deepinv-diffpir \
        --seeds 0 1 2 3 --images 2 --steps 30 --out benchmarks/seed_spread.md
"""
from __future__ import annotations

import argparse
import statistics

import torch

from invdiff.methods import get_method
from invdiff.metrics import psnr
from invdiff.problems import get_problem

from cells import append_run  # benchmarks/cells.py


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problem", default="photo256-inpaint-box")
    p.add_argument("--methods", nargs="+", default=["diffpir", "deepinv-diffpir"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--split", default="validation")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = get_problem(args.problem)
    problem = spec.make(args.split, n=args.images, seed=0)
    prior = spec.build_prior()
    rows, means = [], {}
    for key in args.methods:
        params = spec.presets.get(key, {})
        per_seed = []
        for seed in args.seeds:
            res = get_method(key).run(problem, prior, steps=args.steps, generator=torch.Generator().manual_seed(seed),
                                      params=params)
            per_image = [float(v) for v in psnr(res.x_hat.clamp(0, 1), problem.x_true)]
            per_seed.append(statistics.mean(per_image))
            rows.append(f"| {key} | {seed} | " + " | ".join(f"{v:.2f}" for v in per_image) + f" | {per_seed[-1]:.2f} |")
            print(rows[-1], flush=True)
        means[key] = per_seed
    head = " | ".join(f"image {i}" for i in range(args.images))
    lines = [f"| method | seed | {head} | mean |", "|---|---|" + "---|" * args.images + "---|", *rows, "",
             "| method | mean over seeds | std over seeds | min | max |", "|---|---|---|---|---|"]
    for key, v in means.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        lines.append(f"| {key} | {statistics.mean(v):.2f} | {sd:.2f} | {min(v):.2f} | {max(v):.2f} |")
    text = (f"{args.problem}, {args.split} split, {args.images} images (noise seed 0), {args.steps} steps, "
            f"tuned presets, one thread.\n\n" + "\n".join(lines))
    append_run(args.out, "seed_spread.py", argv, text)


if __name__ == "__main__":
    main()
