"""invdiff's DPS, DDRM and DiffPIR against deepinv's, at 256 px on the same prior (issue 17).

For each real-image problem at 256 px and each sampler that both libraries have, one process
runs invdiff's solver and deepinv's sampler (:data:`invdiff.methods.METHODS`, the benchmark's
own code path; deepinv's sampler sees the prior through :func:`invdiff.priors.to_deepinv`) on
the same validation image, measurement and number of steps, one after the other, and records
for each the wall time per image, the time inside the network (forward and backward calls, the
same :class:`invdiff.solve.CountingPrior` for both) and the PSNR. The table gives the ratios
taken in that run: time ours / deepinv's, and each one's overhead (total / network time).

Hyperparameters: the problem's tuned presets where they exist (``invdiff/problems/presets.json``),
each method's defaults otherwise (stated per row).

Run (resumable: finished cells are read back from the JSON file beside ``--out``)::

    python benchmarks/vs_deepinv.py --out benchmarks/vs_deepinv.md
"""

from __future__ import annotations

import argparse
import platform

import torch

from invdiff.methods import get_method
from invdiff.metrics import psnr
from invdiff.problems import get_problem

from cells import open_cells, save_cells  # benchmarks/cells.py

PROBLEMS = ("ct256-sparse-8", "mri256-8x", "photo256-deblur-gauss")
SAMPLERS = ("dps", "ddrm", "diffpir")


def run_one(spec, name: str, pb, prior, steps: int, seed: int) -> dict:
    """One method on ``pb``: its times, PSNR and the hyperparameters it ran with."""
    method = get_method(name)
    ok = method.applicable(pb.physics)
    if ok is not True:
        return {"skipped": str(ok)}
    params = spec.presets.get(method.preset_key, {})
    res = method.run(pb, prior, steps=steps, generator=torch.Generator().manual_seed(seed), params=params)
    n = pb.y.shape[0]
    return {"seconds_per_image": res.seconds / n, "network_seconds_per_image": res.network_seconds / n,
            "psnr": float(psnr(res.x_hat.clamp(0, 1), pb.x_true).mean()), "nfe": res.nfe, "vjp": res.vjp,
            "params": params or "defaults"}


def run_cell(problem: str, sampler: str, *, steps: int, images: int, seed: int) -> dict:
    spec = get_problem(problem)
    pb = spec.make("validation", images, seed=seed)
    prior = spec.build_prior()
    return {"ours": run_one(spec, sampler, pb, prior, steps, seed),
            "deepinv": run_one(spec, f"deepinv-{sampler}", pb, prior, steps, seed), "images": images, "steps": steps}


def write_markdown(path: str, cells: dict, args) -> None:
    lines = ["# invdiff against deepinv's samplers at 256 px, same prior (issue 17)", "",
             f"Validation split, {args.images} image(s), {args.steps} steps, seed {args.seed}, torch threads "
             f"{args.threads}, {platform.processor() or platform.machine()}. Both run in one process, one after "
             "the other, on the same measurement; *network s*: time inside the network (forward and backward), "
             "counted the same way for both; overhead = total / network time; ratio = invdiff's time / "
             "deepinv's.", "",
             "Commands (in order; finished cells are kept in the JSON file beside this one):", "",
             *[f"    python benchmarks/vs_deepinv.py {c}" for c in cells.get("_commands", [])], "",
             "| problem | sampler | invdiff s / image | deepinv s / image | time ratio | invdiff overhead | "
             "deepinv overhead | invdiff PSNR | deepinv PSNR | Δ PSNR | hyperparameters (invdiff; deepinv) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in PROBLEMS:
        for s in SAMPLERS:
            c = cells.get(f"{p}/{s}")
            if c is None:
                continue
            a, b = c["ours"], c["deepinv"]
            if "skipped" in a or "skipped" in b:
                lines.append(f"| {p} | {s} | n/a ({a.get('skipped') or b.get('skipped')}) | | | | | | | | |")
                continue
            over = lambda r: r["seconds_per_image"] / max(r["network_seconds_per_image"], 1e-12)  # noqa: E731
            lines.append(
                f"| {p} | {s} | {a['seconds_per_image']:.2f} | {b['seconds_per_image']:.2f} | "
                f"{a['seconds_per_image'] / b['seconds_per_image']:.2f} | {over(a):.2f} | {over(b):.2f} | "
                f"{a['psnr']:.2f} | {b['psnr']:.2f} | {a['psnr'] - b['psnr']:+.2f} | {a['params']}; {b['params']} |")
    lines.append("")
    if cells.get("_notes"):
        lines += [f"Note: {n}" for n in cells["_notes"]] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/vs_deepinv.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    store, cells = open_cells(args.out, argv)
    for p in args.problems:
        for s in args.samplers:
            key = f"{p}/{s}"
            if key in cells:
                continue
            cells[key] = c = run_cell(p, s, steps=args.steps, images=args.images, seed=args.seed)
            print(key, c, flush=True)
            save_cells(store, cells)
            write_markdown(args.out, cells, args)
    write_markdown(args.out, cells, args)


if __name__ == "__main__":
    main()
