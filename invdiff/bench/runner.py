"""The benchmark's runner: (problem, method) cells on the same test images, resumable.

Each cell runs in its own spawned process (so its peak memory is its own) on the same ``n``
test images of its problem (one batch; measurement noise and sampler seeded by ``seed``).
``results.json`` is written atomically after every cell, so an interrupted run resumes where it
stopped; a folder made with other settings is refused. The method objects themselves travel to
the worker processes, so a method registered at run time (a new solver in ``SOLVERS``) runs
like a shipped one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.io import atomic_write
from ..methods import Method, default_methods, get_method
from .report import cell_key, save_figure, write_markdown
from .uncertainty import coverage_record

__all__ = ["run_bench", "not_applicable", "run_cell"]


def not_applicable(method, spec, physics=None) -> str | None:
    """Why ``method`` cannot run on problem ``spec`` in the benchmark (``None`` when it can);
    ``physics`` is the problem's operator when the caller has built it already."""
    m = get_method(method)
    if spec.is_volume:
        return "volume problem (use benchmarks/mbir.py)"
    if m.volumes:
        return "couples the slices of a volume (volume problems only)"
    ok = m.applicable(spec.operator() if physics is None else physics)
    return None if ok is True else ok


def run_cell(problem: str, method: Method, n_images: int, seed: int, steps: int, threads: int, out_dir: str) -> dict:
    """One cell (in its own process): returns its record; saves the first reconstruction for the figure."""
    import numpy as np

    from ..metrics import psnr, ssim
    from ..problems import get_problem

    torch.set_num_threads(threads)
    spec = get_problem(problem)
    pb = spec.make("test", n_images, seed=seed)
    prior = spec.build_prior() if method.uses_prior else None
    res = method.run(pb, prior, steps=steps, generator=torch.Generator().manual_seed(seed),
                     params=spec.presets.get(method.preset_key, {}))
    x = res.x_hat.clamp(0, 1)
    rec_dir = Path(out_dir) / "reconstructions" / problem
    rec_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(rec_dir / f"{method.name}.npy", lambda tmp: np.save(tmp, x[0].numpy()))
    uq = {}
    if res.std is not None:  # methods with samples: coverage of the std map, calibrated where the problem can
        calibration = spec.calibration(method.name)
        if calibration is not None and calibration.steps not in (None, steps):
            calibration = None  # fitted at another number of steps: its factors do not apply
        if calibration is not None:
            res = res.calibrated(calibration)
        uq = {"coverage": coverage_record(res, pb.x_true, spec.support(pb.x_true), calibration)}
        std = res.calibrated_std if calibration is not None else res.std  # the map the figure shows
        atomic_write(rec_dir / f"{method.name}.std.npy", lambda tmp: np.save(tmp, std[0].numpy()))
    atomic_write(rec_dir / "truth.npy", lambda tmp: np.save(tmp, pb.x_true[0].numpy()))
    return {"problem": problem, "method": method.name, "family": method.family,
            "psnr": psnr(x, pb.x_true).tolist(), "ssim": ssim(x, pb.x_true).tolist(),
            "nfe": res.nfe, "vjp": res.vjp, "seconds_per_image": res.seconds / n_images,
            "peak_memory_mb": res.peak_memory_mb, "params": res.params, **uq}


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
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))


def run_bench(problems, methods=None, *, n_images: int = 8, seed: int = 0, steps: int = 100,
              out: str = "bench-results", jobs: int = 1, threads: int = 1, progress: bool = True,
              command: str | None = None) -> dict:
    """Run every (problem, method) cell not already in ``out/results.json``; write the outputs.

    ``methods`` are names (``"diffpir"``, ``"diffpir:4"``, ``"tv"``, …) or :class:`~invdiff.methods.Method`
    objects; default :func:`invdiff.methods.default_methods`. Returns the results dictionary
    (also in ``results.json``); writes ``results.md`` and ``figures/<problem>.png``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    from ..problems import PROBLEMS, get_problem

    for name, value in (("n_images", n_images), ("steps", steps), ("jobs", jobs), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    specs = [get_problem(p) for p in problems]
    chosen = [get_method(m) for m in (default_methods() if methods is None else methods)]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    config = {"n_images": n_images, "seed": seed, "steps": steps, "split": "test"}
    data = _load_results(path, config)
    todo = []
    for spec in specs:
        physics = None if spec.is_volume else spec.operator()  # built once per problem
        for m in chosen:
            key = cell_key(spec.name, m.name)
            if key in data["cells"]:
                continue
            reason = not_applicable(m, spec, physics)
            if reason:
                data["cells"][key] = {"problem": spec.name, "method": m.name, "family": m.family,
                                      "not_applicable": reason}
            else:
                todo.append((spec.name, m))
    _save_json(path, data)
    bar = tqdm(total=len(todo), disable=not progress, desc="bench cells")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_cell, p, m, n_images, seed, steps, threads, str(out_dir)): (p, m)
                   for p, m in todo}
        for fut in as_completed(futures):
            p, m = futures[fut]
            try:
                rec = fut.result()
                shown = f"{sum(rec['psnr']) / len(rec['psnr']):.2f} dB"
            except BrokenProcessPool:
                raise
            except Exception as err:  # a diverging or failing method is a result, not the end of the run
                rec = {"problem": p, "method": m.name, "family": m.family, "failed": f"{type(err).__name__}: {err}"}
                shown = "failed"
            data["cells"][cell_key(p, m.name)] = rec
            _save_json(path, data)
            bar.set_postfix_str(f"{p} {m.name}: {shown}")
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
    defaults = default_methods()
    everything = [m for m in defaults if m in present] + [m for m in present if m not in defaults]
    write_markdown(data, out_dir / "results.md", problems=names, methods=everything)
    for name in names:
        save_figure(out_dir, name, [m for m in everything if "psnr" in data["cells"].get(cell_key(name, m), {})],
                    data=data)
    return data
