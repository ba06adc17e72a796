"""SMC against exact Gaussian posteriors as the particle count grows (dense and image-shaped operators).

For each problem from :mod:`invdiff.reference` and K in {256, 1024, 4096}: relative error of
SMC's weighted mean against the exact posterior mean, and the mean relative error of the
per-coordinate variances of its (final, equally weighted) draws. 400 steps, SMC twisted with
the difference potential and ESS threshold 0.5, for both twist covariances: ``isotropic``
(the default, ρ_σ² I with τ = 0.25) and ``jacobian`` (Tweedie's σ² J, 5 CG iterations). A
second table repeats K = 1024 over three seeds on the image-shaped problems (the acceptance
criterion: mean within 5 %, variances within 15 %).

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
from invdiff.solvers.smc import COVARIANCES

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
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds of the K = 1024 table")
    ap.add_argument("--out", default="benchmarks/smc_particles.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# SMC vs exact Gaussian posteriors: error against the number of particles", "",
             f"Command: `python benchmarks/smc_particles.py {cmd}` ({args.steps} steps, one torch thread).", "",
             "Mean error: ‖x̂ − μ‖/‖μ‖ of the weighted particle mean; variance error: mean over pixels of",
             "|v̂ − v|/v from the final equally weighted draws. VJP: backward passes through the prior.", "",
             "## Against the number of particles (seed 1)", "",
             "| problem | twist covariance | particles | mean rel. err | var rel. err | min ESS | VJP | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    problems = {name: build() for name, build in PROBLEMS.items()}  # prior, problem, exact posterior
    runs = {}

    def run(name, cov, k, seed):
        """Errors, min ESS, VJP and seconds of one SMC run (each run once, shared by both tables)."""
        if (name, cov, k, seed) not in runs:
            prior, pb, post = problems[name]
            t = time.perf_counter()
            res = solve(pb, prior, SMC(particles=k, cov=cov), steps=args.steps,
                        generator=torch.Generator().manual_seed(seed), progress=False, record=("ess",))
            s = res.samples.reshape(res.samples.shape[0], -1)
            pv = post.var.reshape(-1)
            me = float((res.x_hat - post.mean).norm() / post.mean.norm())
            ve = float(((s.var(0) - pv).abs() / pv).mean())
            runs[name, cov, k, seed] = me, ve, float(res.trace["ess"].min()), res.vjp, time.perf_counter() - t
        return runs[name, cov, k, seed]

    for name in problems:
        for cov in COVARIANCES:
            for k in args.particles:
                me, ve, e, vjp, sec = run(name, cov, k, 1)
                lines.append(f"| {name} | {cov} | {k} | {me:.4f} | {ve:.3f} | {e:.0f} | {vjp} | {sec:.1f} |")
                print(lines[-1], flush=True)
    lines += ["", f"## 1024 particles, image-shaped problems, seeds {args.seeds}", "",
              "| problem | twist covariance | " + " | ".join(f"seed {s}: mean / var err" for s in args.seeds) + " | worst |",
              "| --- | --- | " + " | ".join("---" for _ in args.seeds) + " | --- |"]
    for name in problems:
        if not name.startswith("8×8"):
            continue
        for cov in COVARIANCES:
            errs = [run(name, cov, 1024, seed)[:2] for seed in args.seeds]
            cells = " | ".join(f"{me:.4f} / {ve:.3f}" for me, ve in errs)
            worst = f"{max(m for m, _ in errs):.4f} / {max(v for _, v in errs):.3f}"
            lines.append(f"| {name} | {cov} | {cells} | {worst} |")
            print(lines[-1], flush=True)
    lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
