"""DiffusionMBIR on volumes: three-plane quality against per-slice diffusion, FBP and 3D TV; scale.

Synthetic volumes: :func:`invdiff.data.body_volume` (axial slices like the 2D body phantoms the
shipped ``phantom64`` prior was trained on, deformed along z, with ellipsoidal inserts of various
heights), 64×64 slices. Problems (each slice measured with the same operator family):

* ``ct3d-sparse-8`` / ``ct3d-sparse-4``: parallel-beam CT with 8 / 4 views, ``sigma_y = 0.005``;
* ``ct3d-limited-90``: 90° limited-angle CT with 30 views, ``sigma_y = 0.005``;
* ``mri3d-4x``: Cartesian MRI at 4× with an independent mask per slice, ``sigma_y = 0.005``.

Real volume: ``mri3d-real-4x`` from :data:`invdiff.problems.PROBLEMS` (64 axial slices of 128²;
validation volume MNI152 2009a, test volume Colin27, each measured once with the problem's
operator and noise seed 0; ``--depth`` does not apply).

Methods, all on the same problem in one run: FBP (CT) or zero-filled (MRI); 3D TV (PDHG,
isotropic over all three axes); the same diffusion solver without z coupling
(``MBIR(lam=0)``: predictor + CG data step on each slice independently, the "2D-independent"
reconstruction); and ``MBIR`` (ADMM-TV along z). TV's λ and MBIR's (λ, ρ) are tuned on a
validation volume (synthetic: seed 555, 16 slices) and evaluated on a test volume (synthetic:
seed 777, ``--depth`` slices). Scores: PSNR/SSIM averaged over the axial, coronal and sagittal
planes that cut the body (:func:`invdiff.metrics.plane_metrics`); seconds and the growth of the
resident memory during each reconstruction (sampled every 5 ms). Figures: the three middle
planes of every method's test volume with PSNR/SSIM, error maps and colorbars
(:func:`invdiff.plot.save_volume_planes`), one PNG per problem in ``--figure-dir``.

Scale: MBIR on 8-view CT at depth 16, 32 and 64 with the same chunk size: wall time and the
growth of the resident memory during the solve (sampled every 5 ms in a fresh subprocess per
depth, after a one-step warm-up), next to the volume's own size.

Run::

    python benchmarks/mbir.py --out benchmarks/mbir.md
    python benchmarks/mbir.py --problems mri3d-real-4x --scale-depths --out benchmarks/real/mbir.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import torch

from invdiff import Problem, solve
from invdiff.data import body_volume
from invdiff.metrics import plane_metrics
from invdiff.operators import volume_ct, volume_mri
from invdiff.plot import save_volume_planes
from invdiff.priors import SliceStackPrior, load_prior
from invdiff.problems import get_problem
from invdiff.solvers import MBIR, fbp, tv, zero_filled

SIGMA_Y = 0.005
PROBLEMS = {
    "ct3d-sparse-8": lambda depth: volume_ct(64, 8),
    "ct3d-sparse-4": lambda depth: volume_ct(64, 4),
    "ct3d-limited-90": lambda depth: volume_ct(64, 30, max_angle_deg=90.0),
    "mri3d-4x": lambda depth: volume_mri(depth, 64, 4.0, generator=torch.Generator().manual_seed(3)),
}
REAL = ("mri3d-real-4x",)  # named volume problems of the registry (real images)
TV_GRID = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
MBIR_GRID = [(2e-4, 5e-3), (2e-3, 5e-2), (2e-2, 5e-1)]


def make_problem(name: str, seed: int, depth: int) -> Problem:
    vol = body_volume(depth, 64, "mri" if name.startswith("mri") else "ct", generator=torch.Generator().manual_seed(seed))
    return Problem.simulate(vol, PROBLEMS[name](depth), SIGMA_Y, generator=torch.Generator().manual_seed(seed + 1))


def problem_pair(name: str, depth: int) -> tuple[Problem, Problem, str]:
    """(validation problem, test problem, prior name) of benchmark problem ``name``."""
    if name in REAL:
        spec = get_problem(name)
        return spec.make("validation"), spec.make("test"), problem_prior(name)
    return make_problem(name, 555, 16), make_problem(name, 777, depth), problem_prior(name)


def problem_prior(name: str) -> str:
    """The prior ``name`` is solved with (a stored result made with another one is stale)."""
    return get_problem(name).prior if name in REAL else "phantom64"


@contextlib.contextmanager
def rss_growth(out: dict):
    """Set ``out["peak_mb"]``: the largest growth of the resident memory over its value at entry,
    sampled every 5 ms while the block runs."""
    before = _current_rss_mb()
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _current_rss_mb())
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_mb"] = peak[0] - before


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), {"seconds", "peak_mb"})``."""
    stats = {}
    t = time.perf_counter()
    with rss_growth(stats):
        value = fn(*args, **kwargs)
    stats["seconds"] = time.perf_counter() - t
    return value, stats


def score(x_hat, pb) -> dict:
    return {k: list(v) for k, v in plane_metrics(x_hat.clamp(0, 1), pb.x_true).items()}


def mean_psnr(s: dict) -> float:
    return sum(v[0] for v in s.values()) / 3


def run_mbir(pb, prior, solver, steps, seed=0):
    res, stats = timed(solve, pb, prior, solver, steps=steps, generator=torch.Generator().manual_seed(seed),
                       progress=False)
    return res.x_hat, {**stats, "nfe": res.nfe}


def evaluate(name: str, steps: int, depth: int, chunk: int) -> dict:
    val, test, prior_name = problem_pair(name, depth)
    prior = SliceStackPrior(load_prior(prior_name), chunk)
    mri = name.startswith("mri")
    tv_lam = max(TV_GRID, key=lambda lam: mean_psnr(score(tv(val, lam, axes="xyz"), val)))
    grid = MBIR_GRID
    if mri:
        grid = [(lam * 250, rho * 2) for lam, rho in MBIR_GRID]  # around the published MRI (0.005, 0.01)
    mbir_lr = max(grid, key=lambda p: mean_psnr(score(run_mbir(val, prior, MBIR(lam=p[0], rho=p[1]), steps)[0], val)))
    rows, images = {}, {"truth": test.x_true}
    classical = "zero-filled" if mri else "FBP"
    x_cl, stats = timed(zero_filled if mri else fbp, test)
    rows[classical], images[classical] = {**score(x_cl, test), **stats}, x_cl
    x_tv, stats = timed(tv, test, tv_lam, axes="xyz")
    rows[f"3D TV (λ={tv_lam:g})"], images["3D TV"] = {**score(x_tv, test), **stats}, x_tv
    x_2d, stats = run_mbir(test, prior, MBIR(lam=0.0, rho=mbir_lr[1]), steps)
    rows["2D-independent (same solver, no z)"], images["2D-independent"] = {**score(x_2d, test), **stats}, x_2d
    x_mb, stats = run_mbir(test, prior, MBIR(lam=mbir_lr[0], rho=mbir_lr[1]), steps)
    rows[f"MBIR (λ={mbir_lr[0]:g}, ρ={mbir_lr[1]:g})"], images["MBIR"] = {**score(x_mb, test), **stats}, x_mb
    print(name, json.dumps(rows), flush=True)
    return {"rows": rows, "images": images, "prior": prior_name, "depth": test.x_true.shape[0],
            "side": test.x_true.shape[-1]}


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:  # resident pages (Linux)
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def scale_child(depth: int, steps: int, chunk: int) -> None:
    """Run in a fresh process: one MBIR solve at ``depth``; prints a JSON line.

    Memory: the growth of the resident set during the solve over its value just before it (after
    imports, the prior and the problem are loaded, and a one-step warm-up), so it is what the
    solve itself allocates (:func:`rss_growth`).
    """
    prior = SliceStackPrior(load_prior("phantom64"), chunk)
    pb = make_problem("ct3d-sparse-8", 777, depth)
    solve(pb, prior, MBIR(lam=2e-3, rho=5e-2), steps=1, progress=False)  # warm-up: allocator, caches
    before = _current_rss_mb()
    _, stats = run_mbir(pb, prior, MBIR(lam=2e-3, rho=5e-2), steps)
    print(json.dumps({"depth": depth, "seconds": stats["seconds"], "peak_rss_mb": before + stats["peak_mb"],
                      "rss_before_mb": before, "volume_mb": pb.x_true.numel() * 4 / 2**20}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--depth", type=int, default=32, help="slices of the synthetic test volumes")
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS) + list(REAL))
    ap.add_argument("--scale-depths", type=int, nargs="*", default=[16, 32, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/mbir.md")
    ap.add_argument("--figure-dir", default="docs/figures", help="writes mbir_<problem>.png here")
    ap.add_argument("--scale-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.scale_child is not None:
        return scale_child(args.scale_child, args.steps, args.chunk)
    store = os.path.splitext(args.out)[0] + ".json"  # finished problems are kept and skipped on a rerun
    done = json.load(open(store)) if os.path.exists(store) else {}
    results = {}
    for name in args.problems:
        if name in done and "rows" in done[name]:
            prior_now = problem_prior(name)
            if done[name].get("prior") == prior_now:
                results[name] = done[name]
                continue
            print(f"{name}: stored with prior {done[name].get('prior')!r}, the problem's prior is now {prior_now!r}; "
                  "running it again", flush=True)
        r = evaluate(name, args.steps, args.depth, args.chunk)
        fig_path = os.path.join(args.figure_dir, f"mbir_{name}.png")
        save_volume_planes(r["images"], fig_path, truth=r["images"]["truth"],
                           suptitle=f"{name}: {r['depth']} slices of {r['side']}², test volume")
        results[name] = done[name] = {"rows": r["rows"], "prior": r["prior"], "depth": r["depth"],
                                      "side": r["side"], "figure": fig_path}
        with open(store, "w") as f:
            json.dump(done, f, indent=1)
    scale = []
    for depth in args.scale_depths:
        out = subprocess.run([sys.executable, __file__, "--scale-child", str(depth), "--steps", str(args.steps),
                              "--chunk", str(args.chunk), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        scale.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(scale[-1], flush=True)
    lines = ["# DiffusionMBIR on volumes", "",
             f"Command: `python benchmarks/mbir.py {' '.join(sys.argv[1:] if argv is None else argv)}` — "
             f"{args.steps} diffusion steps, chunk {args.chunk} slices, torch threads {args.threads}, "
             f"sigma_y = {SIGMA_Y}. Synthetic volumes: test volume {args.depth} slices (seed 777), weights tuned on "
             "a 16-slice validation volume (seed 555). Real volumes: the problem's validation and test volumes. "
             "PSNR (dB) / SSIM averaged over the planes of each orientation that cut the body; seconds and "
             "the growth of resident memory (MB) during each reconstruction.", ""]
    for name, r in results.items():
        lines += [f"## {name}", "",
                  f"Test volume {r['depth']} slices of {r['side']}², prior `{r['prior']}` slice by slice; figure "
                  f"`{r['figure']}`.", "",
                  "| method | axial | coronal | sagittal | seconds | memory growth (MB) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for method, s in r["rows"].items():
            cells = " | ".join(f"{s[p][0]:.2f} / {s[p][1]:.3f}" for p in ("axial", "coronal", "sagittal"))
            lines.append(f"| {method} | {cells} | {s['seconds']:.1f} | {s['peak_mb']:.0f} |")
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
    with open(args.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
