"""DiffusionMBIR on volumes: three-plane quality against per-slice diffusion, FBP and 3D TV; scale.

Volumes: :func:`invdiff.data.body_volume` (axial slices like the 2D body phantoms the shipped
``phantom64`` prior was trained on, deformed along z, with ellipsoidal inserts of various
heights), 64×64 slices. Problems (each slice measured with the same operator family):

* ``ct3d-sparse-8`` / ``ct3d-sparse-4``: parallel-beam CT with 8 / 4 views, ``sigma_y = 0.005``;
* ``ct3d-limited-90``: 90° limited-angle CT with 30 views, ``sigma_y = 0.005``;
* ``mri3d-4x``: Cartesian MRI at 4× with an independent mask per slice, ``sigma_y = 0.005``.

Methods, all on the same problem in one run: FBP (CT) or zero-filled (MRI); 3D TV (PDHG,
isotropic over all three axes); the same diffusion solver without z coupling
(``MBIR(lam=0)``: predictor + CG data step on each slice independently, the "2D-independent"
reconstruction); and ``MBIR`` (ADMM-TV along z). TV's λ and MBIR's (λ, ρ) are tuned on a
validation volume (seed 555, 16 slices) and evaluated on a test volume (seed 777, 32 slices).
Scores: PSNR/SSIM averaged over the axial, coronal and sagittal planes that cut the body
(:func:`invdiff.metrics.plane_metrics`).

Scale: MBIR on 8-view CT at depth 16, 32 and 64 with the same chunk size: wall time and the
growth of the resident memory during the solve (sampled every 5 ms in a fresh subprocess per
depth, after a one-step warm-up), next to the volume's own size.

Run::

    python benchmarks/mbir.py --out benchmarks/mbir.md --figure docs/figures/mbir_planes.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from invdiff import Problem, solve
from invdiff.data import body_volume
from invdiff.metrics import plane_metrics
from invdiff.operators import volume_ct, volume_mri
from invdiff.priors import SliceStackPrior, load_prior
from invdiff.solvers import MBIR, fbp, tv, zero_filled

SIGMA_Y = 0.005
PROBLEMS = {
    "ct3d-sparse-8": lambda depth: volume_ct(64, 8),
    "ct3d-sparse-4": lambda depth: volume_ct(64, 4),
    "ct3d-limited-90": lambda depth: volume_ct(64, 30, max_angle_deg=90.0),
    "mri3d-4x": lambda depth: volume_mri(depth, 64, 4.0, generator=torch.Generator().manual_seed(3)),
}
TV_GRID = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
MBIR_GRID = [(2e-4, 5e-3), (2e-3, 5e-2), (2e-2, 5e-1)]


def make_problem(name: str, seed: int, depth: int) -> Problem:
    vol = body_volume(depth, 64, "mri" if name.startswith("mri") else "ct", generator=torch.Generator().manual_seed(seed))
    return Problem.simulate(vol, PROBLEMS[name](depth), SIGMA_Y, generator=torch.Generator().manual_seed(seed + 1))


def score(x_hat, pb) -> dict:
    return {k: list(v) for k, v in plane_metrics(x_hat.clamp(0, 1), pb.x_true).items()}


def mean_psnr(s: dict) -> float:
    return sum(v[0] for v in s.values()) / 3


def run_mbir(pb, prior, solver, steps, seed=0):
    t = time.perf_counter()
    res = solve(pb, prior, solver, steps=steps, generator=torch.Generator().manual_seed(seed), progress=False)
    return res.x_hat, time.perf_counter() - t, res.nfe


def evaluate(name: str, prior, steps: int, depth: int) -> dict:
    val, test = make_problem(name, 555, 16), make_problem(name, 777, depth)
    tv_lam = max(TV_GRID, key=lambda lam: mean_psnr(score(tv(val, lam, axes="xyz"), val)))
    grid = MBIR_GRID
    if name.startswith("mri"):
        grid = [(lam * 250, rho * 2) for lam, rho in MBIR_GRID]  # around the published MRI (0.005, 0.01)
    mbir_lr = max(grid, key=lambda p: mean_psnr(score(run_mbir(val, prior, MBIR(lam=p[0], rho=p[1]), steps)[0], val)))
    rows = {}
    t = time.perf_counter()
    x_cl = zero_filled(test) if name.startswith("mri") else fbp(test)
    rows["zero-filled" if name.startswith("mri") else "FBP"] = {**score(x_cl, test), "seconds": time.perf_counter() - t}
    t = time.perf_counter()
    x_tv = tv(test, tv_lam, axes="xyz")
    rows[f"3D TV (λ={tv_lam:g})"] = {**score(x_tv, test), "seconds": time.perf_counter() - t}
    x_2d, sec, nfe = run_mbir(test, prior, MBIR(lam=0.0, rho=mbir_lr[1]), steps)
    rows["2D-independent (same solver, no z)"] = {**score(x_2d, test), "seconds": sec, "nfe": nfe}
    x_mb, sec, nfe = run_mbir(test, prior, MBIR(lam=mbir_lr[0], rho=mbir_lr[1]), steps)
    rows[f"MBIR (λ={mbir_lr[0]:g}, ρ={mbir_lr[1]:g})"] = {**score(x_mb, test), "seconds": sec, "nfe": nfe}
    print(name, json.dumps(rows), flush=True)
    images = {"truth": test.x_true, list(rows)[0]: x_cl, "2D-independent": x_2d, "MBIR": x_mb, "3D TV": x_tv}
    return {"rows": rows, "images": images}


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:  # resident pages (Linux)
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def scale_child(depth: int, steps: int, chunk: int) -> None:
    """Run in a fresh process: one MBIR solve at ``depth``; prints a JSON line.

    Memory: the resident set is sampled every 5 ms by a thread during the solve; the growth is
    its maximum minus the resident set just before the solve (after imports, the prior and the
    problem are loaded), so it is what the solve itself allocates.
    """
    import threading

    prior = SliceStackPrior(load_prior("phantom64"), chunk)
    pb = make_problem("ct3d-sparse-8", 777, depth)
    solve(pb, prior, MBIR(lam=2e-3, rho=5e-2), steps=1, progress=False)  # warm-up: allocator, caches
    before = _current_rss_mb()
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _current_rss_mb())
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t = time.perf_counter()
    solve(pb, prior, MBIR(lam=2e-3, rho=5e-2), steps=steps, generator=torch.Generator().manual_seed(0), progress=False)
    sec = time.perf_counter() - t
    stop.set()
    thread.join()
    print(json.dumps({"depth": depth, "seconds": sec, "peak_rss_mb": peak[0], "rss_before_mb": before,
                      "volume_mb": pb.x_true.numel() * 4 / 2**20}))


def figure(images: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(images)
    fig, axes = plt.subplots(3, len(names), figsize=(2.2 * len(names), 6.4))
    for j, name in enumerate(names):
        v = images[name].clamp(0, 1)[:, 0]
        d, h, w = v.shape
        planes = (v[d // 2], v[:, h // 2, :], v[:, :, w // 2])
        for i, (plane, label) in enumerate(zip(planes, ("axial", "coronal", "sagittal"))):
            axes[i, j].imshow(plane.numpy(), cmap="gray", vmin=0, vmax=1, aspect="auto")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
            if j == 0:
                axes[i, j].set_ylabel(label)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--scale-depths", type=int, nargs="*", default=[16, 32, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/mbir.md")
    ap.add_argument("--figure", default="docs/figures/mbir_planes.png")
    ap.add_argument("--scale-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.scale_child is not None:
        return scale_child(args.scale_child, args.steps, args.chunk)
    prior = SliceStackPrior(load_prior("phantom64"), args.chunk)
    store = os.path.splitext(args.out)[0] + ".json"  # finished problems are kept and skipped on a rerun
    done = json.load(open(store)) if os.path.exists(store) else {}
    results = {}
    for name in args.problems:
        if name in done:
            results[name] = {"rows": done[name]}
            continue
        results[name] = evaluate(name, prior, args.steps, args.depth)
        if name == "ct3d-sparse-8":
            figure(results[name]["images"], args.figure)
        done[name] = results[name]["rows"]
        with open(store, "w") as f:
            json.dump(done, f, indent=1)
    scale = []
    for depth in args.scale_depths:
        out = subprocess.run([sys.executable, __file__, "--scale-child", str(depth), "--steps", str(args.steps),
                              "--chunk", str(args.chunk), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        scale.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(scale[-1], flush=True)
    lines = ["# DiffusionMBIR on 64×64 body volumes", "",
             f"Command: `python benchmarks/mbir.py {' '.join(sys.argv[1:] if argv is None else argv)}` — "
             f"{args.steps} diffusion steps, chunk {args.chunk} slices, test volume {args.depth} slices (seed 777), "
             f"weights tuned on a 16-slice validation volume (seed 555), sigma_y = {SIGMA_Y}, torch threads "
             f"{args.threads}. PSNR (dB) / SSIM averaged over the planes of each orientation that cut the body.", ""]
    for name, r in results.items():
        lines += [f"## {name}", "", "| method | axial | coronal | sagittal | seconds |", "| --- | --- | --- | --- | --- |"]
        for method, s in r["rows"].items():
            cells = " | ".join(f"{s[p][0]:.2f} / {s[p][1]:.3f}" for p in ("axial", "coronal", "sagittal"))
            lines.append(f"| {method} | {cells} | {s['seconds']:.1f} |")
        lines.append("")
    if scale:
        lines += ["## Scale (8-view CT, MBIR, fresh process per depth)", "",
                  "Growth = peak resident memory during the solve minus the resident memory just before it "
                  "(sampled every 5 ms, after a one-step warm-up).", "",
                  "| depth | volume (MB) | seconds | peak RSS (MB) | RSS before solve (MB) | growth during solve (MB) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for s in scale:
            lines.append(f"| {s['depth']} | {s['volume_mb']:.2f} | {s['seconds']:.1f} | {s['peak_rss_mb']:.0f} | "
                         f"{s['rss_before_mb']:.0f} | {s['peak_rss_mb'] - s['rss_before_mb']:.0f} |")
        lines.append("")
    lines += [f"Figure: `{args.figure}` (middle axial, coronal and sagittal planes of the 8-view CT test volume).", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
