"""Cost of one network call of each shipped prior at 64, 256 and 512 px, and what speeds it up.

For each shipped prior (``invdiff.priors.available_priors()``) and image side, one validation
image of the prior's modality (a 256-px validation image of a real-data problem, resized to the
side) is noised at σ = 0.1 and denoised with batch 1 by each variant:

``no_grad``         ``torch.no_grad`` in the standard (contiguous) memory layout: the reference,
                    and how every prior ran before channels-last became ``EDMPrior``'s default
``inference_mode``  ``torch.inference_mode`` instead of ``no_grad``
``channels_last``   weights and input in channels-last memory format (``no_grad``): since this
                    benchmark, the default layout of every ``EDMPrior``
``bf16``            ``torch.autocast`` to bfloat16 (``no_grad``); the output is cast back
``compile``         ``torch.compile`` of the UNet (``no_grad``); its compile time is reported apart

Reported per cell: median seconds per call over ``--calls`` calls after ``--warmup`` calls,
the speed-up over ``no_grad`` (measured in the same run), and the change of denoising PSNR
against the clean image (dB) relative to ``no_grad`` — the issue's rule keeps a variant only if it
is ≥ 1.2× faster and moves PSNR by ≤ 0.1 dB. Also the peak memory of a ``no_grad`` call and of a
VJP through the network (as DPS takes) per side.

Usage::

    python benchmarks/network.py --out benchmarks/network.md
    python benchmarks/network.py --out benchmarks/network.md --memory-only     # memory columns again
    python benchmarks/network.py --sizes 64 --calls 2 --variants no_grad bf16   # quick look
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import json
import multiprocessing
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from invdiff.metrics import psnr
from invdiff.priors import available_priors, load_prior
from invdiff.problems import get_problem
from invdiff.solve import peak_rss_mb

VARIANTS = ("no_grad", "inference_mode", "channels_last", "bf16", "compile")
# The real-data problem whose validation images stand for each prior's modality.
MODALITY_PROBLEM = {"phantom64": "ct256-sparse-8", "mri-brain": "mri256-8x", "photo64": "photo256-deblur-gauss"}
SIGMA = 0.1


def _image(prior_name: str, side: int) -> torch.Tensor:
    """One validation image for ``prior_name``, resized (bilinear, antialiased) to ``side``."""
    x = get_problem(MODALITY_PROBLEM.get(prior_name, "photo256-deblur-gauss")).images("validation", 1)
    if x.shape[-1] != side:
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def _layout(prior, fmt):
    """A copy of ``prior`` whose weights and network input use memory format ``fmt``."""
    p = copy.deepcopy(prior)
    p.memory_format = fmt
    p.net = p.net.to(memory_format=fmt)
    return p


def _variant(prior, name: str):
    """``(prior_to_call, context_factory, seconds_spent_compiling)`` for variant ``name``; every
    variant but ``channels_last`` runs in the standard (contiguous) layout."""
    standard = _layout(prior, torch.contiguous_format)
    if name == "no_grad":
        return standard, torch.no_grad, 0.0
    if name == "inference_mode":
        return standard, torch.inference_mode, 0.0
    if name == "channels_last":
        return _layout(prior, torch.channels_last), torch.no_grad, 0.0
    if name == "bf16":
        def ctx():
            stack = contextlib.ExitStack()
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.autocast("cuda" if standard.net.inp.weight.is_cuda else "cpu",
                                               dtype=torch.bfloat16))
            return stack
        return standard, ctx, 0.0
    if name == "compile":
        standard.net = torch.compile(standard.net, dynamic=False)
        return standard, torch.no_grad, None  # compile time measured on the first call
    raise ValueError(f"unknown variant {name!r}; expected one of {VARIANTS}")


def time_variant(prior, name: str, x_noisy: torch.Tensor, *, warmup: int, calls: int):
    """Median seconds per call, the output of the last call and the compile seconds (or 0)."""
    p, ctx, compile_s = _variant(prior, name)
    times = []
    for i in range(warmup + calls):
        t0 = time.perf_counter()
        with ctx():
            out = p.denoise(x_noisy, SIGMA).float()  # the prior puts it in its own layout
        dt = time.perf_counter() - t0
        if compile_s is None:
            compile_s = dt
        elif i >= warmup:
            times.append(dt)
    return statistics.median(times), out.contiguous(), compile_s


def _peak_memory_child(name: str, side: int) -> dict:
    torch.set_num_threads(1)
    prior = load_prior(name)
    _, noisy = _noisy(prior, name, side)
    out = {}
    base = peak_rss_mb()
    with torch.no_grad():
        prior.denoise(noisy, SIGMA)
    out["forward_mib"] = peak_rss_mb() - base
    x = noisy.clone().requires_grad_(True)
    d = prior.denoise(x, SIGMA)
    torch.autograd.grad(d.square().sum(), x)
    out["vjp_mib"] = peak_rss_mb() - base
    return out


def peak_memory(name: str, side: int) -> dict:
    """Peak resident-memory growth (MiB) of one ``no_grad`` call and of one call plus its VJP
    (as DPS takes every step), each in a fresh process so earlier cells do not hide it."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(_peak_memory_child, name, side).result()


def _noisy(prior, name: str, side: int):
    x = _image(name, side)
    if x.shape[1] != prior.channels:
        x = x.mean(1, keepdim=True) if prior.channels == 1 else x.expand(-1, prior.channels, -1, -1)
    g = torch.Generator().manual_seed(0)
    return x, x + SIGMA * torch.randn(x.shape, generator=g)


def run(priors, sizes, variants, *, warmup: int, calls: int, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    for side in sizes:
        for name in priors:
            prior = load_prior(name)
            x, noisy = _noisy(prior, name, side)
            mem = peak_memory(name, side)
            ref_t, ref_out, _ = time_variant(prior, "no_grad", noisy, warmup=warmup, calls=calls)
            ref_psnr = float(psnr(ref_out.clamp(0, 1), x).mean())
            for v in variants:
                if v == "no_grad":
                    t, out, comp = ref_t, ref_out, 0.0
                else:
                    t, out, comp = time_variant(prior, v, noisy, warmup=warmup, calls=calls)
                row = {"prior": name, "side": side, "variant": v, "seconds": t, "speedup": ref_t / t,
                       "psnr": float(psnr(out.clamp(0, 1), x).mean()), "psnr_ref": ref_psnr,
                       "max_abs_diff": float((out - ref_out).abs().max()), "compile_seconds": comp, **mem}
                row["delta_db"] = row["psnr"] - ref_psnr
                row["keep"] = row["speedup"] >= 1.2 and abs(row["delta_db"]) <= 0.1
                rows.append(row)
                print(f"{name:10s} {side:4d} {v:15s} {t * 1e3:9.1f} ms  x{row['speedup']:.2f}  "
                      f"{row['delta_db']:+.3f} dB  compile {comp:.1f} s", flush=True)
    return rows


def to_markdown(rows: list[dict], commands: list[str], threads: int) -> str:
    lines = ["# Network cost per call (issue 17)", "", "Commands (in order):", "",
             *[f"    {c}" for c in commands], "",
             f"CPU {platform.machine()} ({platform.processor() or 'unknown'}), torch {torch.__version__}, "
             f"{threads} torch thread(s), batch 1, σ = {SIGMA}. Seconds: median per call; speed-up and "
             "Δ PSNR relative to `no_grad` in the same run (Δ: denoising PSNR against the clean "
             "validation image). *keep*: ≥ 1.2× faster and |Δ| ≤ 0.1 dB.", "",
             "| prior | side | variant | ms / call | speed-up | Δ PSNR (dB) | max abs diff | compile s | keep |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["prior"], r["side"], VARIANTS.index(r["variant"]))):
        lines.append(f"| {r['prior']} | {r['side']} | {r['variant']} | {r['seconds'] * 1e3:.1f} | "
                     f"{r['speedup']:.2f} | {r['delta_db']:+.3f} | {r['max_abs_diff']:.1e} | "
                     f"{r['compile_seconds']:.1f} | {'yes' if r['keep'] else 'no'} |")
    lines += ["", "Peak memory above the loaded model's (resident set, MiB), "
              "one call at batch 1, each measured in a fresh process; *VJP*: one call and the gradient through it back to its input, as DPS "
              "and SMC take every step:", "",
              "| prior | side | forward MiB | forward + VJP MiB |", "| --- | --- | --- | --- |"]
    seen = set()
    for r in sorted(rows, key=lambda r: (r["prior"], r["side"])):
        if (r["prior"], r["side"]) not in seen:
            seen.add((r["prior"], r["side"]))
            lines.append(f"| {r['prior']} | {r['side']} | {r['forward_mib']:.0f} | {r['vjp_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--priors", nargs="+", default=None, help="shipped prior names (default: all)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here (and a .json beside it)")
    p.add_argument("--memory-only", action="store_true",
                   help="re-measure only the memory columns of the cells in --out's .json (the priors' current "
                        "default layout), keeping their timings")
    a = p.parse_args(argv)
    cmd = ("python benchmarks/network.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    if a.memory_only:
        if a.out is None or not a.out.with_suffix(".json").exists():
            raise SystemExit("--memory-only needs --out naming a table made before (its .json beside it)")
        saved = json.loads(a.out.with_suffix(".json").read_text())
        rows, commands = saved["rows"], saved["commands"]
        for key in {(r["prior"], r["side"]) for r in rows}:
            mem = peak_memory(*key)
            for r in rows:
                if (r["prior"], r["side"]) == key:
                    r.update(mem)
    else:
        priors = a.priors or available_priors()
        rows, commands = run(priors, a.sizes, a.variants, warmup=a.warmup, calls=a.calls, threads=a.threads), []
    if a.out is not None:
        commands = commands + [cmd]
        a.out.write_text(to_markdown(rows, commands, a.threads))
        a.out.with_suffix(".json").write_text(json.dumps({"commands": commands, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
