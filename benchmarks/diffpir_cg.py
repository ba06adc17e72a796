"""DiffPIR's CG data step on 8-view 64-px CT: iterations and the circulant preconditioner.

DiffPIR (the problem's tuned preset) on ``ct-sparse-8``'s validation split (4 images, noise
seed 0), 100 steps, torch threads 1; each configuration ``ITERS:FLOOR`` sets ``cg_iters`` and
``precond_floor`` (``None``: plain CG). Prints validation PSNR, seconds per image, network
seconds per image and their ratio, from one run each.

Usage::

    python benchmarks/diffpir_cg.py ct-sparse-8 validation 30:None 5:None 3:0.05 10:0.05
"""
import dataclasses, sys, time, torch
torch.set_num_threads(1)
from invdiff import solve
from invdiff.metrics import psnr
from invdiff.problems import get_problem
name = sys.argv[1] if len(sys.argv) > 1 else "ct-sparse-8"
split = sys.argv[2] if len(sys.argv) > 2 else "validation"
spec = get_problem(name)
problem = spec.make(split, n=4, seed=0)
prior = spec.build_prior()
base = spec.solver("diffpir")
print(name, split, base)
configs = [(30, None), (10, None), (5, None), (2, 0.05), (3, 0.05), (5, 0.05), (3, 0.01), (5, 0.01), (3, 0.2), (5, 0.2), (3, 0.002), (5, 0.002)]
if len(sys.argv) > 3:
    configs = [tuple(None if v == "None" else (int(v) if i == 0 else float(v)) for i, v in enumerate(c.split(":"))) for c in sys.argv[3:]]
for it, fl in configs:
    s = dataclasses.replace(base, cg_iters=it, precond_floor=fl)
    t = time.perf_counter()
    r = solve(problem, prior, s, steps=100, generator=torch.Generator().manual_seed(0), progress=False)
    dt = time.perf_counter() - t
    p = psnr(r.x_hat.clamp(0, 1), problem.x_true)
    print(f"cg {it:3d} floor {fl}: PSNR {p.mean():.2f} s/img {dt/4:.2f} net {r.network_seconds/4:.2f} overhead {dt/r.network_seconds:.2f}", flush=True)
