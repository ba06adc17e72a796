"""Overhead of every posterior solver over its network calls, at 64 and 256 px (issue 17).

For each named problem (CT, MRI and deblurring, at 64 px and on real images at 256 px) and each
posterior solver with the problem's tuned preset (the solver's defaults where none was tuned),
one run on the problem's validation split measures the wall time per image, the time spent
inside the network (its forward calls and, for VJP solvers, the backward passes through it:
:class:`invdiff.solve.CountingPrior`) and their ratio, the *overhead*. ``diffpir@30`` is DiffPIR
with 30 CG iterations per data step (the default before this benchmark) next to ``diffpir`` with
the current default, so the PSNR cost of the change is read off the same table.

The issue's targets: non-VJP solvers ≤ 1.15, VJP solvers ≤ 2.5, DiffPIR and DAPS on CT ≤ 1.5.

Run (resumable: finished cells are read back from the JSON file beside ``--out``)::

    python benchmarks/overhead.py --out benchmarks/overhead.md
    python benchmarks/overhead.py --problems ct-sparse-8 --solvers diffpir dps --steps 5 --out /tmp/o.md  # quick
    python benchmarks/overhead.py --problems deblur-gauss --solvers diffpir --redo  # after changing DiffPIR
"""

from __future__ import annotations

import argparse
import dataclasses
import platform

import torch

from invdiff import solve
from invdiff.metrics import psnr
from invdiff.problems import get_problem

from cells import open_cells, save_cells  # benchmarks/cells.py

PROBLEMS = ("ct-sparse-8", "mri-4x", "deblur-gauss", "ct256-sparse-8", "mri256-8x", "photo256-deblur-gauss")
SOLVERS = ("diffpir", "diffpir@30", "ddrm", "reddiff", "daps", "pigdm", "dps", "smc")
VJP_SOLVERS = {"dps", "pigdm", "smc"}
TARGET = {"vjp": 2.5, "plain": 1.15, "ct-cg": 1.5}


def target(problem: str, solver: str) -> float:
    """The issue's overhead target for ``solver`` on ``problem``."""
    name = solver.split("@")[0]
    if name in VJP_SOLVERS:
        return TARGET["vjp"]
    if name in ("diffpir", "daps") and problem.startswith("ct"):
        return TARGET["ct-cg"]
    return TARGET["plain"]


def make_solver(spec, name: str):
    if "@" in name:
        base, iters = name.split("@")
        return dataclasses.replace(spec.solver(base), cg_iters=int(iters))
    return spec.solver(name)


def run_cell(problem: str, solver: str, *, steps: int, images: int, seed: int) -> dict:
    spec = get_problem(problem)
    n = images if spec.size <= 64 else max(1, images // 2)
    pb = spec.make("validation", n, seed=seed)
    try:
        s = make_solver(spec, solver)
        res = solve(pb, spec.build_prior(), s, steps=steps, generator=torch.Generator().manual_seed(seed),
                    progress=False, record=())
    except ValueError as e:  # not applicable (e.g. DDRM and ΠGDM need an SVD)
        return {"skipped": str(e).split(";")[0][:120]}
    return {"psnr": float(psnr(res.x_hat.clamp(0, 1), pb.x_true).mean()), "images": n, "steps": steps,
            "nfe": res.nfe, "vjp": res.vjp, "seconds_per_image": res.seconds / n,
            "network_seconds_per_image": res.network_seconds / n,
            "overhead": res.seconds / max(res.network_seconds, 1e-12), "solver": repr(s)}


def write_markdown(path: str, cells: dict, args) -> None:
    lines = ["# Solver overhead over the network calls, 64 and 256 px (issue 17)", "",
             f"Validation split of each problem, tuned presets, {args.steps} steps, seed {args.seed}, "
             f"torch threads {args.threads}, {platform.processor() or platform.machine()}. "
             "Overhead = total solve time / time inside the network (forward + backward through it), same run. "
             "Target: non-VJP ≤ 1.15, VJP (DPS, ΠGDM, SMC) ≤ 2.5, DiffPIR and DAPS on CT ≤ 1.5.", "",
             "Commands (in order; finished cells are kept in the JSON file beside this one):", "",
             *[f"    python benchmarks/overhead.py {c}" for c in cells.get("_commands", [])], "",
             "| problem | solver | images | NFE | VJP | PSNR (dB) | s / image | network s / image | overhead | target | met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in PROBLEMS:
        for s in SOLVERS:
            c = cells.get(f"{p}/{s}")
            if c is None:
                continue
            if "skipped" in c:
                lines.append(f"| {p} | {s} | n/a ({c['skipped']}) | | | | | | | | |")
                continue
            t = target(p, s)
            lines.append(f"| {p} | {s} | {c['images']} | {c['nfe']} | {c['vjp']} | {c['psnr']:.2f} | "
                         f"{c['seconds_per_image']:.2f} | {c['network_seconds_per_image']:.2f} | "
                         f"{c['overhead']:.2f} | {t:g} | {'yes' if c['overhead'] <= t else 'no'} |")
    lines.append("")
    if cells.get("_notes"):
        lines += [f"Note: {n}" for n in cells["_notes"]] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=2, help="images at 64 px (half as many, at least 1, at 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/overhead.md")
    ap.add_argument("--redo", action="store_true",
                    help="run the named cells again (after a change to a solver), replacing the stored ones")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    store, cells = open_cells(args.out, argv)
    for p in args.problems:
        for s in args.solvers:
            key = f"{p}/{s}"
            if key in cells and not args.redo:
                continue
            cells[key] = c = run_cell(p, s, steps=args.steps, images=args.images, seed=args.seed)
            print(key, c if "skipped" in c else f"PSNR {c['psnr']:.2f} {c['seconds_per_image']:.2f} s/img "
                  f"overhead {c['overhead']:.2f}", flush=True)
            save_cells(store, cells)
            write_markdown(args.out, cells, args)
    write_markdown(args.out, cells, args)


if __name__ == "__main__":
    main()
