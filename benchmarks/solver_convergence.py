"""Convergence and cost of the posterior solvers with a real prior: PSNR/SSIM vs NFE on CT.

Setting: the shipped ``phantom64`` prior, 64×64 sparse-view parallel-beam CT with 16 views,
``sigma_y = 0.005``, held-out body phantoms (seed 777, the same test images as the prior's
evaluation), every solver at 25, 50, 100, 200 and 1000 network evaluations. For each run the
table gives PSNR/SSIM (mean ± std over the images), NFE and VJP (counted by the solve loop),
the wall time per image and the overhead ratio: total time / time spent inside the network
(its forward calls and, for VJP methods, the backward pass through it), measured in the same
run. DDRM and ΠGDM need an SVD, which CT does not have, so they are not in this table.

Solvers and settings (no official CT configs exist for these solvers at this scale):
``DPS(zeta=10)`` (ζ picked among 3/10/30 on a tuning phantom: our CT operator averages
along rays, which shrinks the gradient), ``REDDiff()``, ``DiffPIR()``, ``DAPS()`` (official
DAPS-1K config; ``steps / 5`` annealing levels so that NFE matches), and ``SMC(particles=4, tau=0.05)``
(one batched network call over the 4 particles per step: NFE counts calls, each on 4× the
images; the tempering τ = 0.05 picked among 0.25, 0.05, 0.03 on the tuning phantoms — the default
0.25 gives 21–23 dB here), and ``SMC(particles=4, cov="jacobian")``, whose twist covariance is
Tweedie's σ²J (5 CG iterations, one VJP each; no τ to tune; run up to 200 NFE only, for time). Classical FBP and tuned-weight TV are given for reference.

Run (resumable: finished cells are read back from the JSON file)::

    python benchmarks/solver_convergence.py --out benchmarks/solver_convergence.md

Results depend on the thread count only through the timings; the ratio is taken in one run.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from invdiff import Problem, psnr, solve, ssim
from invdiff.data import body_phantoms
from invdiff.operators import ct_sparse_view
from invdiff.priors import load_prior
from invdiff.solvers import DAPS, DPS, SMC, DiffPIR, REDDiff, fbp, tv

from cells import open_cells, save_cells  # benchmarks/cells.py

SOLVER_SETTINGS = {
    "dps": (lambda: DPS(zeta=10.0), 1),
    "reddiff": (lambda: REDDiff(), 1),
    "diffpir": (lambda: DiffPIR(), 1),
    "daps": (lambda: DAPS(), 5),        # NFE per annealing level
    "smc": (lambda: SMC(particles=4, tau=0.05), 1),
    "smc-jacobian": (lambda: SMC(particles=4, cov="jacobian"), 1),
}


def problem(n_images: int, views: int, sigma_y: float) -> Problem:
    x = body_phantoms(n_images, 64, "mixed", generator=torch.Generator().manual_seed(777))
    return Problem.simulate(x, ct_sparse_view(64, views), sigma_y, generator=torch.Generator().manual_seed(7))


def scores(x_hat: torch.Tensor, x: torch.Tensor) -> dict:
    p, s = psnr(x_hat.clamp(0, 1), x), ssim(x_hat.clamp(0, 1), x)
    return {"psnr": float(p.mean()), "psnr_std": float(p.std()) if p.numel() > 1 else 0.0,
            "ssim": float(s.mean()), "ssim_std": float(s.std()) if s.numel() > 1 else 0.0}


def run_cell(pb: Problem, prior, name: str, nfe: int, seed: int) -> dict:
    make, per_level = SOLVER_SETTINGS[name]
    solver = make()
    steps = max(1, nfe // per_level)
    res = solve(pb, prior, solver, steps=steps, generator=torch.Generator().manual_seed(seed), progress=False)
    n = pb.y.shape[0]
    return {**scores(res.x_hat, pb.x_true), "steps": steps, "nfe": res.nfe, "vjp": res.vjp,
            "seconds_per_image": res.seconds / n, "network_seconds_per_image": res.network_seconds / n,
            "overhead": res.seconds / max(res.network_seconds, 1e-12)}


def baselines(pb: Problem) -> dict:
    out = {}
    for name, fn in (("FBP", fbp), ("TV", tv)):
        t = time.perf_counter()
        x_hat = fn(pb)
        out[name] = {**scores(x_hat, pb.x_true), "seconds_per_image": (time.perf_counter() - t) / pb.y.shape[0]}
    return out


def write_markdown(path: str, cells: dict, base: dict, args) -> None:
    lines = [
        "# Solver convergence on 64×64 sparse-view CT with the `phantom64` prior",
        "",
        f"{args.views} views, sigma_y = {args.sigma_y}, {args.images} held-out phantoms (seed 777), "
        f"seed {args.seed}, torch threads {args.threads}, {platform.processor() or platform.machine()}.",
        "Overhead = total solve time / time inside the network (forward + backward through it), same run.",
        "",
        "Commands (in order; finished cells are kept in the JSON file beside this one):",
        "",
        *[f"    python benchmarks/solver_convergence.py {c}" for c in cells.get("_commands", [])],
        "",
        "| solver | steps | NFE | VJP | PSNR (dB) | SSIM | s / image | network s / image | overhead |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    nfes = sorted({int(k.split("/")[1]) for k in cells if "/" in k})
    for name in SOLVER_SETTINGS:
        for nfe in nfes:
            c = cells.get(f"{name}/{nfe}")
            if c is None:
                continue
            lines.append(f"| {name} | {c['steps']} | {c['nfe']} | {c['vjp']} | {c['psnr']:.2f} ± {c['psnr_std']:.2f} | "
                         f"{c['ssim']:.3f} ± {c['ssim_std']:.3f} | {c['seconds_per_image']:.1f} | "
                         f"{c['network_seconds_per_image']:.1f} | {c['overhead']:.2f} |")
    for name, c in base.items():
        lines.append(f"| {name} (classical) | – | 0 | 0 | {c['psnr']:.2f} ± {c['psnr_std']:.2f} | "
                     f"{c['ssim']:.3f} ± {c['ssim_std']:.3f} | {c['seconds_per_image']:.2f} | – | – |")
    lines += ["", "SMC: NFE counts batched network calls, each over 4 particles per image. smc-jacobian: VJP counts",
              "backward passes (5 CG iterations + 1 twist gradient per step, fewer where CG converges).", ""]
    if cells.get("_notes"):  # facts about how cells were measured, recorded in the JSON beside them
        lines += [f"Note: {n}" for n in cells["_notes"]] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[25, 50, 100, 200, 1000])
    ap.add_argument("--solvers", nargs="+", default=list(SOLVER_SETTINGS), choices=list(SOLVER_SETTINGS))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--sigma-y", type=float, default=0.005)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/solver_convergence.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    store, cells = open_cells(args.out, argv)
    prior = load_prior("phantom64")
    pb = problem(args.images, args.views, args.sigma_y)
    base = baselines(pb)
    for name in args.solvers:
        for nfe in args.nfe:
            key = f"{name}/{nfe}"
            if key in cells:
                continue
            cells[key] = run_cell(pb, prior, name, nfe, args.seed)
            c = cells[key]
            print(f"{key}: PSNR {c['psnr']:.2f} SSIM {c['ssim']:.3f} NFE {c['nfe']} VJP {c['vjp']} "
                  f"{c['seconds_per_image']:.1f} s/img overhead {c['overhead']:.2f}", flush=True)
            save_cells(store, cells)
            write_markdown(args.out, cells, base, args)
    write_markdown(args.out, cells, base, args)


if __name__ == "__main__":
    main()
