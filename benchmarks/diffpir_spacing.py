"""DiffPIR's time spacing: the even DDPM grid against the official scripts' quadratic spacing.

DiffPIR's official scripts (Zhu et al. 2023) and deepinv's ``DiffPIR`` pick the timesteps of the
DDPM grid with ``skip_type = 'quad'`` (:func:`invdiff.schedules.ddpm_quad_sigmas`); invdiff's
DiffPIR used the even grid (:func:`invdiff.schedules.ddpm_sigmas`) until this comparison. Both
run here with the same λ, ζ (the problem's preset), the same measurement and the same seeds, on
the validation split only.

Run::

    python benchmarks/diffpir_spacing.py --problems mri256-4x mri256-8x ct256-sparse-8 \\
        photo256-deblur-gauss --images 2 --steps 30 --out benchmarks/diffpir_spacing.md
"""

from __future__ import annotations

import argparse
import sys

import torch

from invdiff import solve
from invdiff.metrics import psnr
from invdiff.problems import get_problem
from invdiff.schedules import ddpm_quad_sigmas, ddpm_sigmas
from invdiff.solvers import DiffPIR

SPACINGS = {"even": ddpm_sigmas, "quad": ddpm_quad_sigmas}


def score(name: str, images: int, steps: int) -> dict:
    """Mean validation PSNR of DiffPIR under each spacing, and its preset."""
    spec = get_problem(name)
    pb = spec.make("validation", spec.n_images(images), seed=1)  # the tuner's measurement (invdiff.bench.tune)
    prior = spec.build_prior()
    params = spec.presets.get("diffpir", {})
    out = {"params": params}
    for label, schedule in SPACINGS.items():
        res = solve(pb, prior, DiffPIR(**params), steps=steps, sigmas=schedule(steps, prior.sigma_min, prior.sigma_max),
                    generator=torch.Generator().manual_seed(0), progress=False)
        out[label] = float(psnr(res.x_hat.clamp(0, 1), pb.x_true).mean())
        print(name, label, round(out[label], 3), flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", required=True)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/diffpir_spacing.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = {name: score(name, args.images, args.steps) for name in args.problems}
    command = "python benchmarks/diffpir_spacing.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# DiffPIR: even against quadratic time spacing", "", f"Command: `{command}`", "",
             f"Validation split, {args.images} images per problem, {args.steps} steps, each problem's DiffPIR preset "
             "(`invdiff/problems/presets.json`), same measurement and seeds for both spacings; mean PSNR (dB).", "",
             "| problem | λ, ζ | even (`ddpm_sigmas`) | quad (`ddpm_quad_sigmas`) | quad − even |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lz = ", ".join(f"{r['params'].get(k, '–')}" for k in ("lam", "zeta"))
        lines.append(f"| {name} | {lz} | {r['even']:.2f} | {r['quad']:.2f} | {r['quad'] - r['even']:+.2f} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
