"""SMC against exact Gaussian posteriors as the particle count grows (dense and image-shaped operators).

For each problem from :mod:`invdiff.reference` and K in {256, 1024, 4096}: relative error of
SMC's weighted mean against the exact posterior mean, and the mean relative error of the
per-coordinate variances of its (final, equally weighted) draws. 400 steps, default SMC
(twisted, difference potential, ESS threshold 0.5, τ = 0.25).

Run::

    python benchmarks/smc_particles.py --out benchmarks/smc_particles.md
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from invdiff import solve
from invdiff.operators import gaussian_blur, random_inpainting
from invdiff.reference import gaussian_dense, gaussian_image
from invdiff.solvers import SMC

PROBLEMS = {
    "dense d=8, 2 meas.": lambda: gaussian_dense(8, 2),
    "dense d=16, 4 meas.": lambda: gaussian_dense(16, 4),
    "dense d=64, 16 meas.": lambda: gaussian_dense(64, 16),
    "8×8 inpainting 60 %": lambda: gaussian_image(random_inpainting((1, 8, 8), 0.6,
                                                                    generator=torch.Generator().manual_seed(0))),
    "8×8 blur": lambda: gaussian_image(gaussian_blur((1, 8, 8), 1.0, kernel_size=5)),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--particles", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--out", default="benchmarks/smc_particles.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# SMC vs exact Gaussian posteriors: error against the number of particles", "",
             f"Command: `python benchmarks/smc_particles.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
             f"({args.steps} steps, seed 1).", "",
             "| problem | particles | mean rel. err | var rel. err | min ESS | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for name, build in PROBLEMS.items():
        prior, pb, post = build()
        for k in args.particles:
            t = time.perf_counter()
            res = solve(pb, prior, SMC(particles=k), steps=args.steps, generator=torch.Generator().manual_seed(1),
                        progress=False, record=("ess",))
            s = res.samples.reshape(res.samples.shape[0], -1)
            pv = post.var.reshape(-1)
            me = float((res.x_hat - post.mean).norm() / post.mean.norm())
            ve = float(((s.var(0) - pv).abs() / pv).mean())
            lines.append(f"| {name} | {k} | {me:.4f} | {ve:.3f} | {float(res.trace['ess'].min()):.0f} | "
                         f"{time.perf_counter() - t:.1f} |")
            print(lines[-1], flush=True)
    lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
