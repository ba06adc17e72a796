"""invdiff on a GPU (issue 17): the ``gpu`` tests, network cost per call, overhead ratios, invdiff vs deepinv.

One script for an accelerator session, in four parts, each written to ``OUT/gpu.md`` (tables)
and ``OUT/gpu.json`` (every number), with the device's name, the torch version and the command:

1. **gpu tests** — ``pytest -m gpu`` (in a subprocess): passed / failed / skipped counts and
   the reasons of the skips. They compare every shipped prior, every operator family and every
   solver on the device with the CPU (``tests/test_gpu.py``).
2. **Network cost per call** — each shipped prior (``invdiff.priors.zoo.available_priors``) at
   64, 256 and 512 px, batch 1: warm-up calls, then the median (and minimum) of ``--calls``
   calls, timed by the solve loop's own counter (:class:`invdiff.solve.CountingPrior`, which
   waits for the GPU before reading the clock). The priors are 64-px networks; larger images run
   the same fully convolutional network (out of distribution: timing only).
3. **Overhead ratios** — DiffPIR, DPS, RED-Diff, DAPS and DDRM (where the operator has an SVD)
   on 256- and 512-px named problems (``ct256-sparse-8``, ``mri256-8x``,
   ``photo256-deblur-gauss``, ``ct512-sparse-32``): total solve time / time inside the network,
   both from the same run (the benchmark's cell, :func:`invdiff.bench.run_cell`, with the
   problem's tuned presets).
4. **invdiff vs deepinv** — DPS, DDRM and DiffPIR against deepinv's samplers on the same prior
   (:mod:`invdiff.methods`: ``dps`` / ``deepinv-dps`` …) at 256 px (``photo256-deblur-gauss``,
   where all three apply) and 512 px (``ct512-sparse-32``; DDRM needs an SVD, which CT lacks:
   listed as not applicable): seconds per image and PSNR of each, and their ratios.

Cells that fail (e.g. out of memory) are recorded as failed and the run goes on.
``--dry-run`` runs every part on the CPU with 64-px stand-ins of the problems (``ct-sparse-8``,
``mri-8x``, ``deblur-gauss``, ``ct-sparse-32``), 32- and 64-px timing and 2 steps, and runs only
``tests/test_gpu.py`` (its ``gpu`` tests are then skipped): the whole logic in well under a minute
(``tests/test_gpu.py`` runs it).

Run from the repository root (invdiff installed, or ``PYTHONPATH=.``)::

    python benchmarks/gpu.py --out benchmarks/gpu                 # on a machine with a GPU
    python benchmarks/gpu.py --dry-run --out /tmp/gpu-dry-run     # the logic, on the CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from invdiff.bench import not_applicable, run_cell
from invdiff.devices import device_name, resolve_device, synchronize
from invdiff.methods import get_method
from invdiff.priors import load_prior
from invdiff.priors.zoo import available_priors
from invdiff.problems import get_problem
from invdiff.solve import CountingPrior

ROOT = Path(__file__).resolve().parents[1]

#: the problems of parts 3 and 4, and their 64-px stand-ins of the dry run
OVERHEAD_PROBLEMS = ("ct256-sparse-8", "mri256-8x", "photo256-deblur-gauss", "ct512-sparse-32")
VERSUS_PROBLEMS = ("photo256-deblur-gauss", "ct512-sparse-32")
DRY_RUN_PROBLEMS = {"ct256-sparse-8": "ct-sparse-8", "mri256-8x": "mri-8x", "photo256-deblur-gauss": "deblur-gauss",
                    "ct512-sparse-32": "ct-sparse-32"}
OVERHEAD_METHODS = ("diffpir", "dps", "reddiff", "daps", "ddrm")
#: invdiff's method and deepinv's, compared on the same prior
VERSUS_PAIRS = (("dps", "deepinv-dps"), ("ddrm", "deepinv-ddrm"), ("diffpir", "deepinv-diffpir"))


def run_gpu_tests(paths, timeout: float) -> dict:
    """``pytest -m gpu PATHS`` in a subprocess: its return code, the counts of its JUnit report and
    the distinct reasons of its skips."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", *map(str, paths)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - t0
        record = {"command": "pytest -m gpu " + " ".join(map(str, paths)), "returncode": done.returncode,
                  "seconds": seconds}
        if not report.is_file() or done.returncode in (2, 3, 4):  # interrupted, internal or usage error
            return {**record, "error": (done.stdout + done.stderr).strip()[-2000:]}
        cases = list(ET.parse(report).getroot().iter("testcase"))
    outcome = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    reasons, failures = set(), []
    for case in cases:
        kinds = {child.tag for child in case}
        if "skipped" in kinds:
            outcome["skipped"] += 1
            reasons.add(case.find("skipped").get("message", ""))
        elif "failure" in kinds or "error" in kinds:
            outcome["failed" if "failure" in kinds else "errors"] += 1
            failures.append(f"{case.get('classname')}::{case.get('name')}")
        else:
            outcome["passed"] += 1
    return {**record, **outcome, "skip_reasons": sorted(reasons), "failures": failures}


def network_cost(name: str, size: int, device: torch.device, *, calls: int, warmup: int) -> dict:
    """Median and minimum time of one network call of prior ``name`` on a ``size``-px image (batch 1)."""
    prior = CountingPrior(load_prior(name, device=device))
    g = torch.Generator().manual_seed(0)
    x = (0.5 + 0.2 * torch.randn((1, prior.channels, size, size), generator=g)).to(device)
    times = []
    with torch.no_grad():
        for i in range(warmup + calls):
            before = prior.network_seconds
            prior.denoise(x, 0.5)
            if i >= warmup:
                times.append(prior.network_seconds - before)
    return {"prior": name, "size": size, "batch": 1, "calls": calls, "median_ms": 1e3 * statistics.median(times),
            "min_ms": 1e3 * min(times)}


def warm_up(problem: str, device: torch.device) -> None:
    """One network call and one ``A``/``Aᵀ`` of ``problem`` at its size, so that the first timed cell
    does not carry the device's one-off start-up (CUDA context, kernel loading)."""
    spec = get_problem(problem)
    pb = spec.make("test", 1, seed=0).to(device)
    prior = spec.build_prior().to(device)
    with torch.no_grad():
        prior.denoise(pb.physics.A_adjoint(pb.y), 0.5)
    synchronize(device)


def cell(problem: str, method: str, *, n_images: int, steps: int, device: torch.device, scratch: str) -> dict:
    """The benchmark's cell for (``problem``, ``method``): its record, or why it did not run."""
    reason = not_applicable(method, get_problem(problem))
    if reason:
        return {"problem": problem, "method": method, "not_applicable": reason}
    try:
        rec = run_cell(problem, get_method(method), n_images, 0, steps, torch.get_num_threads(), scratch, str(device))
    except Exception as err:  # noqa: BLE001 — out of memory, a diverging run: recorded, the session goes on
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"problem": problem, "method": method, "failed": f"{type(err).__name__}: {err}"}
    rec["psnr_mean"] = statistics.mean(rec["psnr"])
    rec["overhead"] = rec["seconds_per_image"] / rec["network_seconds_per_image"] if rec["network_seconds_per_image"] else None
    return rec


def versus(problem: str, ours: str, theirs: str, **kw) -> dict:
    """invdiff's ``ours`` against deepinv's ``theirs`` on ``problem``: both cells and their ratios."""
    a, b = cell(problem, ours, **kw), cell(problem, theirs, **kw)
    row = {"problem": problem, "invdiff": a, "deepinv": b}
    if "psnr_mean" in a and "psnr_mean" in b:
        row["time_ratio"] = b["seconds_per_image"] / a["seconds_per_image"]  # > 1: deepinv slower
        row["psnr_difference"] = a["psnr_mean"] - b["psnr_mean"]            # > 0: invdiff better
    return row


def _size(problem: str) -> int:
    return get_problem(problem).size


def _status(rec: dict) -> str | None:
    """Why a cell has no numbers (``None`` when it has)."""
    if "not_applicable" in rec:
        return f"n/a: {rec['not_applicable']}"
    if "failed" in rec:
        return f"failed: {rec['failed'][:200]}"
    return None


def _fmt(v, spec: str = ".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def write_markdown(data: dict, path: Path) -> None:
    """``gpu.md``: the device, the command and one table per part."""
    lines = [f"# invdiff on a GPU{' (dry run on the CPU)' if data['dry_run'] else ''}", "",
             f"Device: **{data['device']}**; torch {data['torch']} (built for CUDA {data['cuda'] or '–'}), "
             f"{data['platform']}; {data['date']}, {data['seconds']:.0f} s in all.", "",
             f"Command: `{data['command']}` (from the repository root).", "",
             "## gpu tests", ""]
    t = data["tests"]
    if "error" in t:
        lines += [f"`{t['command']}` did not report (return code {t['returncode']}):", "", "```", t["error"], "```"]
    else:
        lines += [f"`{t['command']}`: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                  f"{t['skipped']} skipped ({t['seconds']:.0f} s)."]
        lines += [""] + [f"- skipped: {r}" for r in t["skip_reasons"]] + [f"- failed: `{f}`" for f in t["failures"]]
    lines += ["", "## Network cost per call", "",
              "Batch 1, median (min) of the timed calls after warm-up, ms.", "",
              "| prior | " + " | ".join(f"{s} px" for s in data["sizes"]) + " |",
              "|---|" + "---|" * len(data["sizes"])]
    for name in data["priors"]:
        by_size = {r["size"]: r for r in data["network"] if r["prior"] == name}
        cells = [f"{_fmt(by_size[s].get('median_ms'))} ({_fmt(by_size[s].get('min_ms'))})" if "median_ms" in by_size[s]
                 else by_size[s].get("failed", "–")[:80] for s in data["sizes"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Overhead ratios", "",
              f"{data['steps']} steps, {data['n_images']} image(s) per problem; overhead = solve time / time "
              f"inside the network (forward calls and backward passes), one run.", "",
              "| problem | px | method | s / image | network s / image | overhead | NFE | VJP | peak MiB | PSNR |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["overhead"]:
        status = _status(r)
        head = f"| {r['problem']} | {_size(r['problem'])} | {r['method']} |"
        lines.append(f"{head} {status} | | | | | | |" if status else
                     f"{head} {_fmt(r['seconds_per_image'], '.3f')} | {_fmt(r['network_seconds_per_image'], '.3f')} | "
                     f"{_fmt(r['overhead'])} | {r['nfe']} | {r['vjp']} | {_fmt(r['peak_memory_mb'], '.0f')} | "
                     f"{_fmt(r['psnr_mean'])} |")
    lines += ["", "## invdiff vs deepinv", "",
              f"Same prior, {data['steps']} steps, {data['n_images']} image(s); time ratio = deepinv s / invdiff s "
              f"(> 1: invdiff faster); ΔPSNR = invdiff − deepinv, dB.", "",
              "| problem | px | method | invdiff s / image | deepinv s / image | time ratio | invdiff PSNR | "
              "deepinv PSNR | ΔPSNR |", "|---|---|---|---|---|---|---|---|---|"]
    for r in data["versus"]:
        a, b = r["invdiff"], r["deepinv"]
        head = f"| {r['problem']} | {_size(r['problem'])} | {a['method']} vs {b['method']} |"
        status = _status(a) or _status(b)
        lines.append(f"{head} {status} | | | | | |" if status else
                     f"{head} {_fmt(a['seconds_per_image'], '.3f')} | {_fmt(b['seconds_per_image'], '.3f')} | "
                     f"{_fmt(r['time_ratio'])} | {_fmt(a['psnr_mean'])} | {_fmt(b['psnr_mean'])} | "
                     f"{_fmt(r['psnr_difference'], '+.2f')} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/gpu", help="output folder for gpu.md and gpu.json (created)")
    p.add_argument("--device", default="cuda", help="torch device of the runs (the dry run uses the CPU)")
    p.add_argument("--dry-run", action="store_true", help="every part on the CPU at 64 px with 2 steps: the logic only")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps of parts 3 and 4 (default 50; dry run 2)")
    p.add_argument("--n-images", type=int, default=None, help="test images per problem (default 2; dry run 1)")
    p.add_argument("--calls", type=int, default=None, help="timed network calls per prior and size (default 20; "
                   "dry run 3)")
    p.add_argument("--tests", nargs="+", default=None, help="what pytest -m gpu runs (default: tests; dry run: "
                   "tests/test_gpu.py)")
    p.add_argument("--test-timeout", type=float, default=900.0, help="seconds before the test run is stopped")
    a = p.parse_args(argv)
    dry = a.dry_run
    device = resolve_device("cpu" if dry else a.device, name="--device")
    steps = a.steps or (2 if dry else 50)
    n_images = a.n_images or (1 if dry else 2)
    calls = a.calls or (3 if dry else 20)
    sizes = (32, 64) if dry else (64, 256, 512)
    stand_in = (lambda name: DRY_RUN_PROBLEMS[name]) if dry else (lambda name: name)
    command = "python benchmarks/gpu.py " + " ".join(shlex.quote(v) for v in (sys.argv[1:] if argv is None else argv))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = {"device": "cpu (dry run)" if dry else device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda, "platform": f"{platform.system()} {platform.machine()}, "
            f"{torch.get_num_threads()} CPU thread(s)", "date": time.strftime("%Y-%m-%d"), "command": command,
            "dry_run": dry, "steps": steps, "n_images": n_images, "sizes": list(sizes), "priors": available_priors()}
    print(f"device {data['device']}, torch {data['torch']}", flush=True)

    data["tests"] = run_gpu_tests(a.tests or (["tests/test_gpu.py"] if dry else ["tests"]), a.test_timeout)
    print(f"gpu tests: {data['tests']}", flush=True)

    data["network"] = []
    for name in data["priors"]:
        for size in sizes:
            try:
                row = network_cost(name, size, device, calls=calls, warmup=2)
            except Exception as err:  # noqa: BLE001 — e.g. out of memory at 512 px
                row = {"prior": name, "size": size, "failed": f"{type(err).__name__}: {err}"}
            data["network"].append(row)
            print(row, flush=True)

    kw = {"n_images": n_images, "steps": steps, "device": device}
    data["overhead"], data["versus"] = [], []
    with tempfile.TemporaryDirectory() as scratch:  # run_cell saves reconstructions: not kept
        for name in map(stand_in, OVERHEAD_PROBLEMS):
            warm_up(name, device)
            for method in OVERHEAD_METHODS:
                data["overhead"].append(cell(name, method, scratch=scratch, **kw))
                print({k: v for k, v in data["overhead"][-1].items() if k not in ("psnr", "ssim", "params")}, flush=True)
        for name in map(stand_in, VERSUS_PROBLEMS):
            for ours, theirs in VERSUS_PAIRS:
                data["versus"].append(versus(name, ours, theirs, scratch=scratch, **kw))
                print(f"{name} {ours} vs {theirs}: {data['versus'][-1].get('time_ratio')}", flush=True)
    data["seconds"] = time.perf_counter() - t0
    (out / "gpu.json").write_text(json.dumps(data, indent=1))
    write_markdown(data, out / "gpu.md")
    print(f"wrote {out / 'gpu.md'} and {out / 'gpu.json'}")
    return data


if __name__ == "__main__":
    main()
