"""Benchmark harness: named problems × methods, side by side with deepinv and classical baselines.

``invdiff bench --problems ct-sparse-8 mri-8x --solvers diffpir dps deepinv-dps tv --n-images 8 --out DIR``
runs every *cell* (one problem, one method) on the same ``n`` test images of the problem (one
batch, measurement noise and sampler seeded by ``--seed``) and writes, in ``DIR``:

* ``results.json`` — every cell's per-image PSNR/SSIM, NFE, VJP, seconds per image, peak memory,
  the hyperparameters used and the configuration. Written after each cell (atomically), so an
  interrupted run resumes where it stopped: finished cells are skipped.
* ``results.md`` — one table per problem (PSNR and SSIM mean ± std, NFE, VJP, s/image, peak MB)
  and a summary: best invdiff diffusion solver against the best classical baseline and against
  deepinv's samplers.
* ``figures/<problem>.png`` — truth, A†y and every method on the first test image, with the
  absolute error of each underneath.

Methods (:data:`METHODS`):

=====================  ==========  =====================================================================
name                   family      what runs
=====================  ==========  =====================================================================
``diffpir`` … ``smc``  invdiff     :data:`invdiff.solvers.SOLVERS` through :func:`invdiff.solve`, with the
                                   problem's tuned preset (``ProblemSpec.solver``)
``deepinv-dps``        deepinv     ``deepinv.sampling.DPS`` (``steps + 1`` levels = ``steps`` NFE)
``deepinv-ddrm``       deepinv     ``deepinv.sampling.DDRM`` (noise levels ``linspace(1, 0, steps)``)
``deepinv-diffpir``    deepinv     ``deepinv.sampling.DiffPIR`` (``max_iter = steps``)
``pinv``               classical   A†y: FBP for CT, zero-filled for MRI, deepinv's pseudo-inverse otherwise
``tv``                 classical   :func:`invdiff.solvers.baselines.tv` with the weight tuned on validation
=====================  ==========  =====================================================================

deepinv's samplers get the problem's prior through :func:`invdiff.priors.to_deepinv` (the same
network, the same weights), and their own tuned hyperparameters (``presets.json``:
``deepinv-dps`` ``weight``, ``deepinv-diffpir`` ``lambda_``/``zeta``). SVD-only methods
(``ddrm``, ``pigdm``, ``deepinv-ddrm``) are marked *n/a* on operators without an SVD.

Each cell runs in a fresh process, so its peak memory (growth of the resident set on CPU, CUDA
peak on GPU) is its own; the timing includes everything the method does after the problem and
prior are loaded.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["METHODS", "DEFAULT_METHODS", "Method", "run_method", "run_bench", "write_markdown"]


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: ``family`` is ``"invdiff"``, ``"deepinv"`` or ``"classical"``."""

    name: str
    family: str
    description: str
    needs_svd: bool = False
    samples: int = 1  # "SOLVER:K": posterior mean of K samples

    @property
    def base(self) -> str:
        """The method's name without a ``:K`` suffix (the key of its solver and tuned preset)."""
        return self.name.partition(":")[0]

    @property
    def diffusion(self) -> bool:
        return self.family != "classical"


def _methods() -> dict:
    import sys

    from .solvers import SOLVERS

    posterior = ("diffpir", "dps", "reddiff", "ddrm", "pigdm", "daps", "smc")
    doc = lambda n: (sys.modules[SOLVERS[n].__module__].__doc__ or n).strip().splitlines()[0]  # noqa: E731
    rows = [Method(n, "invdiff", doc(n), n in ("ddrm", "pigdm")) for n in posterior]
    rows += [Method("deepinv-dps", "deepinv", "deepinv.sampling.DPS on the same prior"),
             Method("deepinv-ddrm", "deepinv", "deepinv.sampling.DDRM on the same prior", needs_svd=True),
             Method("deepinv-diffpir", "deepinv", "deepinv.sampling.DiffPIR on the same prior"),
             Method("pinv", "classical", "A†y (FBP for CT, zero-filled for MRI)"),
             Method("tv", "classical", "total variation (PDHG), weight tuned on the validation split")]
    return {m.name: m for m in rows}


METHODS: dict[str, Method] = _methods()
DEFAULT_METHODS = ("diffpir", "dps", "reddiff", "ddrm", "pigdm", "deepinv-dps", "deepinv-ddrm",
                   "deepinv-diffpir", "pinv", "tv")


def _check_method(name: str) -> Method:
    """The :class:`Method` of ``name``; ``"SOLVER:K"`` is the posterior mean of K samples of an
    invdiff sampling solver (one batch of ``K·n``; NFE unchanged, time ≈ K times)."""
    base, _, k = name.partition(":")
    if base not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)} "
                         f"(SOLVER:K averages K samples of an invdiff solver)")
    if not k:
        return METHODS[base]
    from .solvers import SOLVERS

    m = METHODS[base]
    if m.family != "invdiff" or not k.isdigit() or int(k) < 1 or not getattr(SOLVERS[base], "samples", True):
        raise ValueError(f"{name!r}: SOLVER:K needs an invdiff sampling solver and an integer K >= 1")
    return Method(name, m.family, f"{m.description} (mean of {k} samples)", m.needs_svd, int(k))


def not_applicable(method: str, spec) -> str | None:
    """Why ``method`` cannot run on problem ``spec`` (``None`` when it can)."""
    from .solvers.base import has_svd

    m = _check_method(method)
    if spec.depth is not None:
        return "volume problem (use benchmarks/mbir.py)"
    if m.needs_svd and not has_svd(spec.operator()):
        return "needs an SVD"
    return None


def _deepinv_sampler(name: str, denoiser, problem, steps: int, seed: int, params: dict):
    """A callable ``() -> x_hat`` running deepinv's sampler ``name`` (seeded)."""
    import deepinv
    import numpy as np

    if name == "deepinv-dps":
        sampler = deepinv.sampling.DPS(denoiser, num_steps=steps + 1, dtype=problem.y.dtype,
                                       rng=torch.Generator().manual_seed(seed), **params)
        shape = (problem.y.shape[0],) + tuple(problem.img_shape)
        return lambda: sampler(problem.y, problem.physics, x_init=shape)
    if name == "deepinv-ddrm":
        sampler = deepinv.sampling.DDRM(denoiser, sigmas=np.linspace(1, 0, steps), **params)
    elif name == "deepinv-diffpir":
        sampler = deepinv.sampling.DiffPIR(denoiser, deepinv.optim.data_fidelity.L2(),
                                           sigma=max(problem.sigma_y, 1e-3), max_iter=steps, **params)
    else:
        raise ValueError(f"unknown deepinv method {name!r}")

    def run():
        torch.manual_seed(seed)  # deepinv's DDRM and DiffPIR draw from the global generator
        with torch.no_grad():
            return sampler(problem.y, problem.physics)

    return run


def run_method(name: str, spec, problem, prior=None, *, steps: int = 100, seed: int = 0,
               params: dict | None = None, progress: bool = False) -> dict:
    """Run method ``name`` on ``problem`` (a batch made by ``spec.make``).

    ``params`` overrides the problem's tuned preset for this method (used by the tuning script).
    Returns ``{"x_hat", "nfe", "vjp", "seconds", "peak_memory_mb", "params"}``; ``x_hat`` is
    clipped to [0, 1].
    """
    from .solve import _peak_rss_mb, solve
    from .solvers import SOLVERS
    from .solvers import baselines

    m = _check_method(name)
    reason = not_applicable(name, spec)
    if reason:
        raise ValueError(f"{name} cannot run on {spec.name}: {reason}")
    params = dict(spec.presets.get(m.base, {}) if params is None else params)
    rss0 = _peak_rss_mb()
    if m.family == "invdiff":
        res = solve(problem, prior, SOLVERS[m.base](**params), steps=steps, num_samples=m.samples,
                    generator=torch.Generator().manual_seed(seed), progress=progress)
        x, nfe, vjp, seconds = res.x_hat, res.nfe, res.vjp, res.seconds
    elif m.family == "deepinv":
        from .priors import to_deepinv
        from .solvers.base import CountingPrior

        counted = CountingPrior(prior)
        run = _deepinv_sampler(name, to_deepinv(counted), problem, steps, seed, params)
        t0 = time.perf_counter()
        x = run().detach()
        seconds, nfe, vjp = time.perf_counter() - t0, counted.nfe, counted.vjp
    else:
        t0 = time.perf_counter()
        if name == "tv":
            x = baselines.tv(problem, params.get("lam"), iters=params.get("iters", 300))
        elif hasattr(problem.physics, "fbp"):  # CT
            x = baselines.fbp(problem)
        else:  # zero-filled for MRI (its A_dagger), deepinv's pseudo-inverse otherwise
            with torch.no_grad():
                x = problem.physics.A_dagger(problem.y)
        seconds, nfe, vjp = time.perf_counter() - t0, 0, 0
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} returned non-finite values on {spec.name}")
    return {"x_hat": x.clamp(0, 1), "nfe": int(nfe), "vjp": int(vjp), "seconds": float(seconds),
            "peak_memory_mb": max(_peak_rss_mb() - rss0, 0.0), "params": params}


def _cell_key(problem: str, method: str) -> str:
    return f"{problem}|{method}"


def _run_cell(problem: str, method: str, n_images: int, seed: int, steps: int, threads: int, out_dir: str) -> dict:
    """One cell in its own process: returns its record; saves the first reconstruction for the figure."""
    import numpy as np

    from .data.io import atomic_write
    from .metrics import psnr, ssim
    from .priors import load_prior
    from .problems import get_problem

    torch.set_num_threads(threads)
    spec = get_problem(problem)
    pb = spec.make("test", n_images, seed=seed)
    prior = load_prior(spec.prior) if _check_method(method).diffusion else None
    out = run_method(method, spec, pb, prior, steps=steps, seed=seed)
    x = out["x_hat"]
    rec_dir = Path(out_dir) / "reconstructions" / problem
    rec_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(rec_dir / f"{method}.npy", lambda tmp: np.save(tmp, x[0].numpy()))
    atomic_write(rec_dir / "truth.npy", lambda tmp: np.save(tmp, pb.x_true[0].numpy()))
    return {"problem": problem, "method": method, "family": _check_method(method).family,
            "psnr": psnr(x, pb.x_true).tolist(), "ssim": ssim(x, pb.x_true).tolist(),
            "nfe": out["nfe"], "vjp": out["vjp"], "seconds_per_image": out["seconds"] / n_images,
            "peak_memory_mb": out["peak_memory_mb"], "params": out["params"]}


def _load_results(path: Path, config: dict) -> dict:
    if not path.is_file():
        return {"config": config, "cells": {}}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a results file written by invdiff bench ({err}); "
                         f"choose another --out") from None
    old = data.get("config", {})
    diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
    if diff:
        shown = ", ".join(f"{k} {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"{path} was made with other settings ({shown}); use another --out to start afresh")
    return data


def _save_json(path: Path, data: dict) -> None:
    from .data.io import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))


def run_bench(problems, methods=DEFAULT_METHODS, *, n_images: int = 8, seed: int = 0, steps: int = 100,
              out: str = "bench-results", jobs: int = 1, threads: int = 1, progress: bool = True,
              command: str | None = None) -> dict:
    """Run every (problem, method) cell not already in ``out/results.json``; write the outputs.

    Returns the results dictionary (also in ``results.json``). See the module docstring.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    import multiprocessing

    from tqdm import tqdm

    from .problems import PROBLEMS, get_problem

    for name, value in (("n_images", n_images), ("steps", steps), ("jobs", jobs), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    specs = [get_problem(p) for p in problems]
    for m in methods:
        _check_method(m)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    config = {"n_images": n_images, "seed": seed, "steps": steps, "split": "test"}
    data = _load_results(path, config)
    todo = []
    for spec in specs:
        for m in methods:
            key = _cell_key(spec.name, m)
            if key in data["cells"]:
                continue
            reason = not_applicable(m, spec)
            if reason:
                data["cells"][key] = {"problem": spec.name, "method": m, "family": _check_method(m).family,
                                      "not_applicable": reason}
            else:
                todo.append((spec.name, m))
    _save_json(path, data)
    bar = tqdm(total=len(todo), disable=not progress, desc="bench cells")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_run_cell, p, m, n_images, seed, steps, threads, str(out_dir)): (p, m)
                   for p, m in todo}
        for fut in as_completed(futures):
            p, m = futures[fut]
            try:
                rec = fut.result()
                shown = f"{sum(rec['psnr']) / len(rec['psnr']):.2f} dB"
            except BrokenProcessPool:
                raise
            except Exception as err:  # a diverging or failing method is a result, not the end of the run
                rec = {"problem": p, "method": m, "family": _check_method(m).family,
                       "failed": f"{type(err).__name__}: {err}"}
                shown = "failed"
            data["cells"][_cell_key(p, m)] = rec
            _save_json(path, data)
            bar.set_postfix_str(f"{p} {m}: {shown}")
            bar.update(1)
    bar.close()
    if command and command not in data.setdefault("commands", []):
        data["commands"].append(command)
        _save_json(path, data)
    # the tables and figures cover every cell in the folder, from this run and earlier ones
    done = {c["problem"] for c in data["cells"].values()}
    names = [n for n in PROBLEMS if n in done]
    # one stable order whatever the runs: the default methods, then the others as first run
    present = list(dict.fromkeys(c["method"] for c in data["cells"].values()))
    everything = [m for m in DEFAULT_METHODS if m in present] + [m for m in present if m not in DEFAULT_METHODS]
    write_markdown(data, out_dir / "results.md", problems=names, methods=everything)
    for name in names:
        save_figure(out_dir, name, [m for m in everything if "psnr" in data["cells"].get(_cell_key(name, m), {})])
    return data


def _mean_std(values) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def summary(data: dict, problem: str, methods) -> dict:
    """Best diffusion (invdiff), best classical and best deepinv cell of ``problem`` by mean PSNR."""
    best = {}
    for family in ("invdiff", "classical", "deepinv"):
        cells = [data["cells"][_cell_key(problem, m)] for m in methods
                 if "psnr" in data["cells"].get(_cell_key(problem, m), {}) and _check_method(m).family == family]
        if cells:
            c = max(cells, key=lambda c: _mean_std(c["psnr"])[0])
            best[family] = (c["method"], _mean_std(c["psnr"])[0], c["seconds_per_image"])
    return best


def write_markdown(data: dict, path, *, problems, methods) -> str:
    """Tables of ``results.md`` (see the module docstring); returns the text."""
    from .data.io import atomic_write
    from .problems import get_problem

    cfg = data["config"]
    lines = ["# invdiff bench", ""]
    if data.get("commands"):
        lines += ["Made by (in this order; a later command resumes the folder and adds its cells):", ""]
        lines += [f"- `{c}`" for c in data["commands"]] + [""]
    lines += [f"{cfg['n_images']} test images per problem (split `test`), seed {cfg['seed']}, {cfg['steps']} steps "
              f"for every diffusion method; PSNR (dB) and SSIM as mean ± std over images; seconds and peak memory "
              f"per cell as measured in its own process (peak: growth of resident memory on CPU). "
              f"Hyperparameters: tuned on the validation split (`benchmarks/tune_presets.py`).", "",
              "## Summary", "",
              "| problem | best invdiff | best classical | margin (dB) | best deepinv | invdiff − deepinv (dB) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for p in problems:
        b = summary(data, p, methods)
        if "invdiff" not in b:
            continue
        ours = b["invdiff"]
        row = [p, f"{ours[0]} {ours[1]:.2f}"]
        row += [f"{b['classical'][0]} {b['classical'][1]:.2f}", f"{ours[1] - b['classical'][1]:+.2f}"] \
            if "classical" in b else ["–", "–"]
        if "deepinv" in b:
            d = b["deepinv"]
            mark = " ★" if ours[1] > d[1] and ours[2] <= d[2] else ""
            row += [f"{d[0]} {d[1]:.2f}", f"{ours[1] - d[1]:+.2f}{mark}"]
        else:
            row += ["–", "–"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "★: the best invdiff solver beats every deepinv sampler in PSNR at equal or lower time per image "
              "than the best deepinv sampler.", ""]
    for p in problems:
        spec = get_problem(p)
        lines += [f"## {p}", "", f"{spec.description}; sigma_y = {spec.sigma_y}; prior `{spec.prior}`.", "",
                  "| method | PSNR | SSIM | NFE | VJP | s / image | peak MB | hyperparameters |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for m in methods:
            c = data["cells"].get(_cell_key(p, m))
            if c is None:
                continue
            if "not_applicable" in c or "failed" in c:
                why = f"n/a ({c['not_applicable']})" if "not_applicable" in c else f"failed: {c['failed']}"
                lines.append(f"| {m} | {why} | | | | | | |")
                continue
            (pm, ps), (sm, ss) = _mean_std(c["psnr"]), _mean_std(c["ssim"])
            hp = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in c["params"].items())
            lines.append(f"| {m} | {pm:.2f} ± {ps:.2f} | {sm:.3f} ± {ss:.3f} | {c['nfe']} | {c['vjp']} | "
                         f"{c['seconds_per_image']:.2f} | {c['peak_memory_mb']:.0f} | {hp} |")
        lines.append("")
    text = "\n".join(lines)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return text


def save_figure(out_dir, problem: str, methods) -> str | None:
    """``figures/<problem>.png``: truth, then each method (first test image) over its error map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .data.io import atomic_write

    out_dir = Path(out_dir)
    rec_dir = out_dir / "reconstructions" / problem
    recs = {m: np.load(rec_dir / f"{m}.npy") for m in methods if (rec_dir / f"{m}.npy").is_file()}
    if not recs:
        return None
    truth = np.load(rec_dir / "truth.npy")

    def show(ax, img, **kw):
        img = np.moveaxis(img, 0, -1).clip(0, 1) if img.shape[0] == 3 else img[0]
        ax.imshow(img, **({"cmap": "gray", "vmin": 0, "vmax": 1} if img.ndim == 2 else {}), **kw)
        ax.set_xticks([])
        ax.set_yticks([])

    n = len(recs) + 1
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.1), squeeze=False)
    show(axes[0, 0], truth)
    axes[0, 0].set_title("truth", fontsize=8)
    axes[1, 0].axis("off")
    err_max = max(float(np.abs(r - truth).max()) for r in recs.values()) or 1.0
    for j, (m, r) in enumerate(recs.items(), start=1):
        show(axes[0, j], r)
        p = 10 * math.log10(1.0 / max(float(((r - truth) ** 2).mean()), 1e-12))
        axes[0, j].set_title(f"{m}\n{p:.2f} dB", fontsize=8)
        axes[1, j].imshow(np.abs(r - truth).mean(0), cmap="magma", vmin=0, vmax=err_max)
        axes[1, j].set_xticks([])
        axes[1, j].set_yticks([])
    axes[1, 1].set_ylabel(f"|error|, 0–{err_max:.2f}", fontsize=8)
    fig.suptitle(problem, fontsize=10)
    fig.tight_layout()
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    try:
        return atomic_write(fig_dir / f"{problem}.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
