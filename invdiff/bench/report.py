"""The benchmark's report: ``results.md`` (summary and one table per problem) and the figures.

Works on the ``results.json`` dictionary the runner writes; the figures go through
:func:`invdiff.plot.save_comparison`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.io import atomic_write
from ..methods import get_method
from ..plot import save_comparison

__all__ = ["summary", "write_markdown", "save_figure", "cell_key"]


def cell_key(problem: str, method: str) -> str:
    """The key of one (problem, method) cell in ``results.json``."""
    return f"{problem}|{method}"


def _mean_std(values) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def summary(data: dict, problem: str, methods) -> dict:
    """Best invdiff, best classical and best deepinv cell of ``problem`` by mean PSNR."""
    best = {}
    for family in ("invdiff", "classical", "deepinv"):
        cells = [data["cells"][cell_key(problem, m)] for m in methods
                 if "psnr" in data["cells"].get(cell_key(problem, m), {}) and get_method(m).family == family]
        if cells:
            c = max(cells, key=lambda c: _mean_std(c["psnr"])[0])
            best[family] = (c["method"], _mean_std(c["psnr"])[0], c["seconds_per_image"])
    return best


def write_markdown(data: dict, path, *, problems, methods) -> str:
    """Tables of ``results.md``; returns the text."""
    from ..problems import get_problem

    cfg = data["config"]
    lines = ["# invdiff bench", ""]
    if data.get("commands"):
        lines += ["Made by (in this order; a later command resumes the folder and adds its cells):", ""]
        lines += [f"- `{c}`" for c in data["commands"]] + [""]
    lines += [f"{cfg['n_images']} test images per problem (split `test`), seed {cfg['seed']}, {cfg['steps']} steps "
              f"for every diffusion method; PSNR (dB) and SSIM as mean ± std over images; seconds and peak memory "
              f"per cell as measured in its own process (peak: growth of resident memory on CPU). "
              f"Hyperparameters: tuned on the validation split (`benchmarks/tune_presets.py`). Coverage (methods "
              f"with samples): the fraction of pixels (inside the body for CT and MRI) whose truth lies within ±2 "
              f"posterior std of the mean, raw, and after the conformal calibration fitted on the validation split "
              f"at the 95 % level (`benchmarks/uncertainty.py`) where the problem has one.", "",
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
        counts = {c["n_images"] for m in methods if "n_images" in (c := data["cells"].get(cell_key(p, m)) or {})}
        fewer = (f" Test images: {', '.join(map(str, sorted(counts)))} (the split holds no more at this size)."
                 if counts and counts != {cfg["n_images"]} else "")
        lines += [f"## {p}", "", f"{spec.description}; sigma_y = {spec.sigma_y}; prior `{spec.prior}`.{fewer}", "",
                  "| method | PSNR | SSIM | NFE | VJP | s / image | peak MB | coverage ±2 std / calibrated 95 % "
                  "| hyperparameters |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for m in methods:
            c = data["cells"].get(cell_key(p, m))
            if c is None:
                continue
            if "not_applicable" in c or "failed" in c:
                why = f"n/a ({c['not_applicable']})" if "not_applicable" in c else f"failed: {c['failed']}"
                lines.append(f"| {m} | {why} | | | | | | | |")
                continue
            (pm, ps), (sm, ss) = _mean_std(c["psnr"]), _mean_std(c["ssim"])
            hp = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in c["params"].items())
            lines.append(f"| {m} | {pm:.2f} ± {ps:.2f} | {sm:.3f} ± {ss:.3f} | {c['nfe']} | {c['vjp']} | "
                         f"{c['seconds_per_image']:.2f} | {c['peak_memory_mb']:.0f} | {_coverage_text(c)} | {hp} |")
        lines.append("")
    text = "\n".join(lines)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return text


def _coverage_text(cell: dict) -> str:
    """``87.1 % / 94.6 %``: raw ±2 std coverage and calibrated 95 % coverage of a cell (blank without samples)."""
    c = cell.get("coverage")
    if not c:
        return ""
    cal = f"{100 * c['cal_95']:.1f} %" if "cal_95" in c else "not calibrated"
    return f"{100 * c['raw_2std']:.1f} % / {cal}"


def save_figure(out_dir, problem: str, methods, data: dict | None = None) -> str | None:
    """``figures/<problem>.png``: truth, then each method (first test image) with PSNR/SSIM over its
    error map, then the posterior standard deviation of the methods that draw several samples —
    the calibrated map where the problem has a calibration — titled with its coverage (from the
    cells of ``data``)."""
    import numpy as np

    out_dir = Path(out_dir)
    rec_dir = out_dir / "reconstructions" / problem
    recs = {m: np.load(rec_dir / f"{m}.npy") for m in methods if (rec_dir / f"{m}.npy").is_file()}
    if not recs:
        return None
    stds = {}
    for m in methods:
        if not (rec_dir / f"{m}.std.npy").is_file():
            continue
        cov = ((data or {}).get("cells", {}).get(cell_key(problem, m)) or {}).get("coverage", {})
        if "cal_95" in cov:
            label = f"{m} calibrated std\n95 % interval covers {100 * cov['cal_95']:.1f} %"
        elif cov:
            label = f"{m} std (raw)\n±2 std covers {100 * cov['raw_2std']:.1f} %"
        else:
            label = f"{m} std"
        stds[label] = np.load(rec_dir / f"{m}.std.npy").mean(0)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    return save_comparison(np.load(rec_dir / "truth.npy"), recs, fig_dir / f"{problem}.png", problem, maps=stds)
