"""Many processes on one machine: wall time, speed-up and memory per rank at N = 1 and 2 ranks.

Two jobs, each launched by ``torchrun --standalone --nproc-per-node N`` with one torch thread per
rank (``OMP_NUM_THREADS=1``), timed from outside (start-up, imports and writing included):

* **MBIR on a 256×256×64 volume** (:func:`invdiff.distributed.volume.solve_volume`): the real
  brain MRI validation volume (MNI152, the ``mri3d-real-4x`` problem's validation split, 64 axial
  slices of 128²) brought to 256² (bilinear), Cartesian MRI at 4× with a mask per slice,
  ``sigma_y = 0.005``, the shipped ``mri-brain`` prior slice by slice, ``MBIR()`` at its defaults.
  Each rank also reports its solve time, its network time, the growth of its peak resident memory
  during the solve (above a warm-up network call on 8 slices, so that the growth is the solver's
  state and not the network's working memory, which every rank needs whole) and the number and duration of its collectives (all-reduces of CG's inner
  products, halo exchanges of ``D_z``), from which the 8-GPU estimate is made.
* **A 64-cell benchmark sweep**: ``invdiff bench`` over 8 problems × 8 methods at 64 px
  (``--n-images 2 --steps 10``); the N = 2 ``results.json`` must hold the N = 1 numbers bit for
  bit (timings aside).

Run it on an otherwise idle machine (it checks the load and says so in the report)::

    python benchmarks/distributed.py --out benchmarks/distributed.md
    python benchmarks/distributed.py --quick --out /tmp/distributed.md     # a dry run (tiny settings)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_PROBLEMS = ["ct-sparse-8", "ct-sparse-32", "ct-limited-90", "mri-4x", "mri-8x", "deblur-gauss",
                  "inpaint-random-70", "sr-4x"]
BENCH_METHODS = ["pinv", "tv", "wavelet", "diffpir", "dps", "reddiff", "daps", "deepinv-diffpir"]
TIMINGS = ("seconds_per_image", "peak_memory_mb")


# ----------------------------------------------------------------------------- the MBIR worker
def _volume_problem(depth: int, size: int):
    import torch
    import torch.nn.functional as F

    from invdiff import Problem
    from invdiff.operators import volume_mri
    from invdiff.problems import get_problem

    vol = get_problem("mri3d-real-4x").images("validation", 1)[:depth]
    vol = F.interpolate(vol, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    physics = volume_mri(depth, size, 4.0, generator=torch.Generator().manual_seed(4))
    return Problem.simulate(vol, physics, 0.005, generator=torch.Generator().manual_seed(1))


def mbir_worker(args) -> None:
    """One rank of the MBIR job (run under torchrun): solve, then rank 0 writes the JSON record."""
    import torch

    from invdiff import distributed
    from invdiff.distributed import volume as dvol
    from invdiff.metrics import plane_metrics
    from invdiff.priors import SliceStackPrior, load_prior
    from invdiff.solve import peak_rss_mb
    from invdiff.solvers import MBIR

    torch.set_num_threads(1)
    problem = _volume_problem(args.depth, args.size)
    prior = SliceStackPrior(load_prior("mri-brain"), chunk_size=8)
    comm = {"all-reduce": [0, 0.0], "halo": [0, 0.0]}

    def timed(kind, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            comm[kind][0] += 1
            comm[kind][1] += time.perf_counter() - t0
            return out
        return wrapper

    dvol.BlockCoupling._sum = timed("all-reduce", dvol.BlockCoupling._sum)
    dvol.SliceHalo._exchange = timed("halo", dvol.SliceHalo._exchange)
    with torch.no_grad():  # warm-up: the network's working memory is in the peak before the solve
        prior.denoise(torch.zeros(8, 1, args.size, args.size), 1.0)
    with distributed.process_group():
        me, world = distributed.rank(), distributed.world_size()
        t0 = time.perf_counter()
        res = dvol.solve_volume(problem, prior, MBIR(), steps=args.steps, generator=torch.Generator().manual_seed(0),
                                progress=False, gather=False)
        solve_s = time.perf_counter() - t0
        own = {"rank": me, "slices": int(res.x_hat.shape[0]), "solve_s": solve_s, "network_s": res.network_seconds,
               "peak_growth_mb": res.peak_memory_mb, "peak_rss_mb": peak_rss_mb(),
               "all_reduce": comm["all-reduce"], "halo": comm["halo"]}
        ranks = distributed.all_gather_object(own)
        blocks = distributed.all_gather_object(res.x_hat)
        if me == 0:
            x_hat = torch.cat(blocks)
            torch.save(x_hat, args.volume_out)
            scores = plane_metrics(x_hat.clamp(0, 1), problem.x_true)
            Path(args.json_out).write_text(json.dumps({"world": world, "ranks": ranks, "nfe": res.nfe,
                                                       "psnr": scores}, default=float))


def mbir_job(nproc: int, a, tmp: Path) -> dict:
    out, vol = tmp / f"mbir-{nproc}.json", tmp / f"mbir-{nproc}.pt"
    cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), __file__, "_mbir",
           "--depth", str(a.depth), "--size", str(a.size), "--steps", str(a.steps), "--json-out", str(out),
           "--volume-out", str(vol)]
    wall = _launch(cmd, tmp)
    rec = json.loads(out.read_text())
    rec["wall_s"] = wall
    return rec


# ----------------------------------------------------------------------------- the bench sweep
def bench_job(nproc: int, a, tmp: Path) -> dict:
    out = tmp / f"bench-{nproc}"
    cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", "invdiff", "bench",
           "--problems", *a.problems, "--solvers", *a.methods, "--n-images", str(a.n_images), "--steps",
           str(a.bench_steps), "--seed", "0", "--no-progress", "--out", str(out)]
    wall = _launch(cmd, tmp)
    data = json.loads((out / "results.json").read_text())
    return {"wall_s": wall, "cells": data["cells"], "ran_by": data.get("ran_by", {})}


def _launch(args: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:8])} … failed:\n{proc.stderr[-3000:]}")
    return wall


def _per_rank(ranks: list[dict], field: str) -> str:
    return " / ".join(f"{r[field]:.0f}" for r in ranks)


def _numbers(cells: dict) -> dict:
    return {k: {f: v for f, v in c.items() if f not in TIMINGS} for k, c in cells.items()}


def _load() -> tuple[float, float]:
    with open("/proc/loadavg") as f:
        one, five = f.read().split()[:2]
    return float(one), float(five)


# ----------------------------------------------------------------------------- the 8-GPU estimate
def estimate(rec1: dict, rec2: dict, a) -> list[str]:
    """Paper estimate for 8 GPUs on a 512×512×300 volume, from the measured costs."""
    r1 = rec1["ranks"][0]
    per_slice_call = r1["network_s"] / (rec1["nfe"] * a.depth)  # one slice, one network call, at a.size px
    calls_per_step = rec1["nfe"] / a.steps
    other_per_slice_step = (r1["solve_s"] - r1["network_s"]) / (a.depth * a.steps)  # operator, CG, ADMM
    two = rec2["ranks"]
    ar_n = sum(r["all_reduce"][0] for r in two) / len(two) / a.steps
    ar_t = sum(r["all_reduce"][1] for r in two) / max(sum(r["all_reduce"][0] for r in two), 1)
    halo_n = sum(r["halo"][0] for r in two) / len(two) / a.steps
    halo_t = sum(r["halo"][1] for r in two) / max(sum(r["halo"][0] for r in two), 1)
    scale = (512 / a.size) ** 2
    depth, gpus = 300, 8
    cpu_step_1 = depth * scale * (calls_per_step * per_slice_call + other_per_slice_step)
    rows = []
    for speed in (50, 200):
        compute_1 = cpu_step_1 / speed
        compute_8 = math.ceil(depth / gpus) / depth * compute_1
        comm = ar_n * 30e-6 + halo_n * 50e-6
        rows.append(f"| {speed}× | {compute_1:.3g} | {compute_8 + comm:.3g} | {compute_1 / (compute_8 + comm):.2f}× |")
    return [
        "## Estimate: 8 GPUs, a 512×512×300 volume",
        "",
        "From this machine's N = 1 run (one thread): one network call on one slice at "
        f"{a.size}² takes {per_slice_call * 1e3:.0f} ms ({calls_per_step:g} call(s) per step), the rest of a step "
        f"(operator, CG, ADMM-TV) {other_per_slice_step * 1e3:.1f} ms per slice; both scale with the pixels "
        f"(×{scale:g} at 512²). A step over 300 slices of 512² on one CPU core: {cpu_step_1:.0f} s. From the N = 2 "
        f"run: {ar_n:.0f} all-reduces per step ({ar_t * 1e6:.0f} µs each over gloo here, waiting for the slower "
        f"rank included; CG's inner products, a few bytes each) and {halo_n:.0f} halo exchanges per step ({halo_t * 1e3:.2f} ms each here, "
        f"one {a.size}² slice). None of it is measured on a GPU (none was lent): the GPU speed over one CPU core "
        "is an assumption (two values below, 50× and 200×, the range of a mid-size UNet on one data-centre GPU "
        "against one core), and so are NCCL's costs inside one node (30 µs per small all-reduce, 50 µs per "
        "1 MiB halo exchange over NVLink). With 300 slices on 8 ranks the largest block holds 38 slices, so "
        "the compute speed-up is at most 300/38 = 7.9×.",
        "",
        "| GPU speed over one core (assumed) | s per step, 1 GPU | s per step, 8 GPUs (compute + collectives) | speed-up |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Collectives per step cost {ar_n:.0f} × 30 µs + {halo_n:.0f} × 50 µs = {(ar_n * 30e-6 + halo_n * 50e-6) * 1e3:.1f} ms "
        "under these assumptions; they matter only when a GPU takes well under a millisecond per slice.",
        f"Memory: the growth of the peak resident memory during the solve was {r1['peak_growth_mb']:.0f} MiB in "
        f"one process and {max(r['peak_growth_mb'] for r in two):.0f} MiB on the larger of 2 ranks "
        f"(×{max(r['peak_growth_mb'] for r in two) / max(r1['peak_growth_mb'], 1e-9):.2f}); on 8 GPUs each rank "
        f"holds one copy of the network, one chunk's activations and the state of at most 38 slices.",
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/distributed.md")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--depth", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=8, help="MBIR steps")
    p.add_argument("--problems", nargs="+", default=BENCH_PROBLEMS)
    p.add_argument("--methods", nargs="+", default=BENCH_METHODS)
    p.add_argument("--n-images", type=int, default=2)
    p.add_argument("--bench-steps", type=int, default=10)
    p.add_argument("--only", choices=["mbir", "bench"], nargs="+", default=["mbir", "bench"])
    p.add_argument("--quick", action="store_true", help="a dry run: 16 slices of 64², 2 steps, 2 problems × 2 methods")
    a = p.parse_args(argv)
    if a.quick:
        a.depth, a.size, a.steps, a.problems, a.methods, a.n_images, a.bench_steps = 16, 64, 2, a.problems[:2], \
            ["pinv", "tv"], 1, 2
    load0 = _load()
    lines = ["# Many processes on one machine", "",
             "Command: `python benchmarks/distributed.py --out benchmarks/distributed.md`", "",
             f"{os.cpu_count()} CPUs; `torchrun --standalone --nproc-per-node N`, one torch thread per rank; wall "
             f"seconds timed from outside the launch (start-up and imports included). Load average before: "
             f"{load0[0]:.2f} (1 min).", ""]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "mbir" in a.only:
            recs = {n: mbir_job(n, a, tmp) for n in a.ranks}
            import torch

            ref = torch.load(tmp / f"mbir-{a.ranks[0]}.pt", weights_only=True)
            lines += [f"## MBIR, a {a.size}×{a.size}×{a.depth} volume",
                      "",
                      f"Real brain MRI (MNI152 validation volume brought to {a.size}²), 4× Cartesian with a mask per "
                      f"slice, `mri-brain` prior, `MBIR()` defaults, {a.steps} steps "
                      f"({recs[a.ranks[0]]['nfe']} network calls per slice).", "",
                      "| ranks | wall s | speed-up | solve s (slowest rank) | network s | solver memory per rank (peak RSS growth), MiB "
                      "| peak RSS per rank, MiB | PSNR (mean of 3 planes) | rel. difference to N = 1 |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for n, rec in recs.items():
                x = torch.load(tmp / f"mbir-{n}.pt", weights_only=True)
                diff = float((x - ref).norm() / ref.norm())
                rk = rec["ranks"]
                lines.append(f"| {n} | {rec['wall_s']:.1f} | {recs[a.ranks[0]]['wall_s'] / rec['wall_s']:.2f}× | "
                             f"{max(r['solve_s'] for r in rk):.1f} | {max(r['network_s'] for r in rk):.1f} | "
                             f"{_per_rank(rk, 'peak_growth_mb')} | {_per_rank(rk, 'peak_rss_mb')} | "
                             f"{sum(v[0] for v in rec['psnr'].values()) / 3:.2f} dB | {diff:.1e} |")
                print(lines[-1], flush=True)
            lines.append("")
            if 1 in recs and 2 in recs:
                lines += estimate(recs[1], recs[2], a) + [""]
        if "bench" in a.only:
            recs = {n: bench_job(n, a, tmp) for n in a.ranks}
            base = recs[a.ranks[0]]
            ncells = sum("psnr" in c for c in base["cells"].values())
            lines += [f"## A {len(base['cells'])}-cell benchmark sweep", "",
                      f"`invdiff bench --problems {' '.join(a.problems)} --solvers {' '.join(a.methods)} --n-images "
                      f"{a.n_images} --steps {a.bench_steps} --seed 0` under torchrun ({ncells} cells run, the "
                      f"others not applicable; each cell in its own spawned process, as in one-process runs).", "",
                      "| ranks | wall s | speed-up | cells per rank | results equal N = 1 (bit for bit, timings aside) |",
                      "|---|---|---|---|---|"]
            for n, rec in recs.items():
                per = [sum(w.startswith(f"rank {r} of {n} ") for w in rec["ran_by"].values()) for r in range(n)] \
                    if n > 1 else [ncells]
                same = _numbers(rec["cells"]) == _numbers(base["cells"])
                lines.append(f"| {n} | {rec['wall_s']:.1f} | {base['wall_s'] / rec['wall_s']:.2f}× | "
                             f"{' / '.join(map(str, per))} | {'yes' if same else 'NO'} |")
                print(lines[-1], flush=True)
            lines.append("")
    load1 = _load()
    lines.append(f"Load average after: {load1[0]:.2f} (1 min), {load1[1]:.2f} (5 min).")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_mbir":
        w = argparse.ArgumentParser()
        for name in ("--depth", "--size", "--steps"):
            w.add_argument(name, type=int)
        w.add_argument("--json-out")
        w.add_argument("--volume-out")
        mbir_worker(w.parse_args(sys.argv[2:]))
    else:
        main()
