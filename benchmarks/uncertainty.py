"""Calibration of posterior standard-deviation maps: measured, then fixed by split-conformal scaling.

Two parts, one results file (``benchmarks/uncertainty.json``, resumable cell by cell) and one
report (``benchmarks/uncertainty.md``, rewritten from the whole file after every run).

* ``--exact``: problems with exact posteriors (:mod:`invdiff.reference`): a Gaussian prior on
  16-vectors measured by a random 4×16 matrix, and a 20-component Gaussian mixture on
  8-vectors measured by a 2×8 matrix (multimodal posteriors); ``--signals`` independent signals
  each for a calibration set and a test set. Rows: the exact posterior sampler and every
  sampling solver (DPS, DiffPIR, DDRM, ΠGDM, DAPS, SMC with the isotropic and the Jacobian
  twist), ``S`` samples each (SMC: ``S`` particles).
* ``--problems``: named problems; every sampling solver that applies, with the problem's tuned
  preset. The conformal factors are fitted on ``--val-images`` images of the **validation**
  split (:func:`invdiff.bench.calibrate_problem`) and stored in
  ``invdiff/problems/calibration.json``; coverage is measured on ``--test-images`` images of the
  test split (seed 0, as the benchmark), counting pixels inside the body for CT and MRI.

Columns: coverage of ``x̂ ± 1 std`` and ``x̂ ± 2 std`` (raw) next to what an exact Gaussian
sampler with ``S`` samples gives (:func:`invdiff.metrics.nominal_coverage`: 0.647 and 0.899 at
``S = 8``, not 0.683 and 0.954, because the mean and std are estimated from ``S`` draws);
after calibration, the coverage of the calibrated 68.27 % and 95 % intervals, and the
calibration's scale (calibrated over Gaussian half-width at 95 %: > 1 means the raw map is
overconfident).

Run::

    python benchmarks/uncertainty.py --exact
    python benchmarks/uncertainty.py --problems ct-sparse-8 mri-8x deblur-gauss inpaint-random-70 --jobs 2
    python benchmarks/uncertainty.py --problems ct256-sparse-8 mri256-8x --solvers diffpir --samples 4 \\
        --val-images 2 --test-images 4 --steps 30
    python benchmarks/uncertainty.py --problems mri3d-4x --solvers mbir --samples 4 --val-images 1 \\
        --test-images 1 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_JSON = os.path.join(HERE, "uncertainty.json")
OUT_MD = os.path.join(HERE, "uncertainty.md")
FIGURE = os.path.join(HERE, "..", "docs", "figures", "uncertainty_calibration.png")
CAL_JSON = os.path.join(HERE, "..", "invdiff", "problems", "calibration.json")

#: sampling solvers: label -> (solver name, extra parameters, steps factor); SMC's particles are its samples
SOLVERS = {
    "dps": ("dps", {}, 1.0),
    "diffpir": ("diffpir", {}, 1.0),
    "ddrm": ("ddrm", {}, 1.0),
    "pigdm": ("pigdm", {}, 1.0),
    "daps": ("daps", {}, 0.5),  # 5 network calls and 100 Langevin steps per level: half the levels
    "smc": ("smc", {"cov": "isotropic"}, 1.0),
    "smc-jacobian": ("smc", {"cov": "jacobian"}, 1.0),
    "mbir": ("mbir", {}, 1.0),  # volumes: S independent solves of the whole volume
}


def method_of(label: str, samples: int) -> tuple[str, dict]:
    """The method name and parameters of a solver label: ``diffpir`` -> ``diffpir:S``; SMC keeps one run
    of ``S`` particles (its particles are the samples)."""
    name, extra, _ = SOLVERS[label]
    if name == "smc":
        return "smc", {**extra, "particles": samples}
    return f"{name}:{samples}", dict(extra)


def cal_key(label: str, samples: int) -> str:
    """The key of a calibration in ``calibration.json``: the method name ``invdiff solve`` looks up."""
    name, extra, _ = SOLVERS[label]
    return f"{label}(K={samples})" if name == "smc" else f"{name}:{samples}"


# -- exact posteriors -----------------------------------------------------------------------------------

def _exact_problem(kind: str, signals: int, seed: int):
    """(prior, problem of ``signals`` measured signals, exact posterior) of the Gaussian or mixture reference."""
    from invdiff import Problem
    from invdiff.reference import gaussian_dense, mixture_dense

    if kind == "gaussian":
        prior, pb, _ = gaussian_dense(d=16, m=4, sigma_y=0.05, seed=0)
    else:
        prior, pb, _ = mixture_dense(d=8, components=20, m=2, sigma_y=0.05, seed=0)
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(signals, generator=g)
    sim = Problem.simulate(x, pb.physics, pb.sigma_y, generator=g)
    return prior, sim, prior.posterior(pb.physics, sim.y, pb.sigma_y)


def _exact_run(kind: str, label: str, signals: int, samples: int, steps: int, seed: int):
    """(x_hat, std, truth) of ``label`` (``exact`` or a solver) on the reference problem drawn with ``seed``."""
    from invdiff import solve
    from invdiff.solvers import SOLVERS as ALL

    prior, pb, post = _exact_problem(kind, signals, seed)
    if label == "exact":
        draws = post.sample(samples, generator=torch.Generator().manual_seed(seed + 1))
        return draws.mean(0), draws.std(0), pb.x_true
    name, extra, factor = SOLVERS[label]
    if name == "smc":
        solver, n = ALL[name](**{**extra, "particles": samples}), 1
    else:
        solver, n = ALL[name](**extra), samples
    res = solve(pb, prior, solver, steps=max(int(steps * factor), 2), num_samples=n,
                generator=torch.Generator().manual_seed(seed + 1), progress=False, record=())
    return res.x_hat, res.std, pb.x_true


def exact_cell(kind: str, label: str, signals: int, samples: int, steps: int, threads: int) -> dict:
    from invdiff.calibration import fit_conformal
    from invdiff.metrics import LEVELS, coverage, nominal_coverage, std_multiplier

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cal = fit_conformal(*_exact_run(kind, label, signals, samples, steps, seed=1000), samples)
    x_hat, std, truth = _exact_run(kind, label, signals, samples, steps, seed=0)
    pooled = lambda k: float(coverage(x_hat, std, truth, k).mean())  # noqa: E731 — equal pixels per signal
    return {"part": "exact", "problem": kind, "solver": label, "samples": samples, "signals": signals,
            "steps": 0 if label == "exact" else max(int(steps * SOLVERS[label][2]), 2),
            "raw_1std": pooled(1.0), "raw_2std": pooled(2.0),
            "nominal_1std": nominal_coverage(1.0, samples), "nominal_2std": nominal_coverage(2.0, samples),
            "cal_68": pooled(cal.factor(0.6827)), "cal_95": pooled(cal.factor(0.95)), "scale_95": cal.scale(0.95),
            "width_2std": float(4 * std.mean()), "seconds": time.perf_counter() - t0,
            "curve": {"level": list(LEVELS), "raw": [pooled(std_multiplier(p, samples)) for p in LEVELS],
                      "calibrated": [pooled(cal.factor(p)) for p in LEVELS]}}


# -- named problems -------------------------------------------------------------------------------------

def problem_cell(problem: str, label: str, samples: int, val_images: int, test_images: int, steps: int,
                 threads: int) -> dict:
    from invdiff.bench import calibrate_problem, coverage_record, run_samples
    from invdiff.metrics import psnr
    from invdiff.problems import get_problem

    torch.set_num_threads(threads)
    method, params = method_of(label, samples)
    n_steps = max(int(steps * SOLVERS[label][2]), 2)
    t0 = time.perf_counter()
    cal, val = calibrate_problem(problem, method, images=val_images, steps=n_steps, params=params)
    res, truth, mask = run_samples(problem, method, "test", images=test_images, steps=n_steps, seed=0, params=params)
    rec = coverage_record(res, truth, mask, cal)
    return {"part": "problem", "problem": problem, "solver": label, "samples": samples, "steps": n_steps,
            "val_images": val_images, "test_images": test_images, **rec,
            "psnr": float(psnr(res.x_hat.clamp(0, 1), truth).mean()), "params": res.params,
            "calibration": cal.to_dict(), "key": cal_key(label, samples), "prior": get_problem(problem).prior,
            "seconds": time.perf_counter() - t0}


def _applicable(problem: str, label: str) -> str | None:
    from invdiff.bench import not_applicable
    from invdiff.methods import get_method
    from invdiff.problems import get_problem

    spec, name = get_problem(problem), SOLVERS[label][0]
    if spec.is_volume:  # volumes: the solvers that couple the slices
        return None if get_method(name).volumes else "2D solver (the volume problems run MBIR)"
    return not_applicable(name, spec)


# -- files ----------------------------------------------------------------------------------------------

def _stale(cell: dict) -> bool:
    """A problem cell fitted with another prior than the problem's current one (or from before cells
    named their prior): it runs again, as ``invdiff bench`` re-runs such cells, and says so."""
    from invdiff.problems import PROBLEMS

    if "not_applicable" in cell or cell.get("problem") not in PROBLEMS:
        return False
    now = PROBLEMS[cell["problem"]].prior
    if cell.get("prior") == now:
        return False
    print(f"{cell['problem']} / {cell['solver']}: fitted with prior {cell.get('prior') or '(not recorded)'}, the "
          f"problem's prior is now {now}; running it again", file=sys.stderr, flush=True)
    return True


def _load() -> dict:
    if os.path.isfile(OUT_JSON):
        with open(OUT_JSON) as f:
            return json.load(f)
    return {"cells": {}, "commands": []}


def _save(data: dict) -> None:
    """Write ``data`` merged into the file on disk (another run may have added cells meanwhile)."""
    from invdiff.data.io import atomic_write

    disk = _load()
    disk["cells"].update(data["cells"])
    disk["commands"] += [c for c in data["commands"] if c not in disk["commands"]]
    data.update(disk)
    atomic_write(OUT_JSON, lambda tmp: open(tmp, "w").write(json.dumps(disk, indent=1)))


def _store_calibration(cell: dict) -> None:
    """Merge one fitted calibration into ``invdiff/problems/calibration.json`` (atomically)."""
    from invdiff.data.io import atomic_write

    cal = {"problems": {}}
    if os.path.isfile(CAL_JSON):
        with open(CAL_JSON) as f:
            cal = json.load(f)
    # the prior's name goes with the factors: a calibration holds only for the prior it was fitted with
    cal["problems"].setdefault(cell["problem"], {})[cell["key"]] = {**cell["calibration"], "prior": cell["prior"]}
    cal["note"] = ("split-conformal factors of posterior std maps, fitted on each problem's validation split "
                   "by benchmarks/uncertainty.py (see invdiff.calibration)")
    atomic_write(CAL_JSON, lambda tmp: open(tmp, "w").write(json.dumps(cal, indent=1)))


def _pct(v) -> str:
    return f"{100 * v:.1f}"


def figure(data: dict, path: str = FIGURE) -> str | None:
    """Calibration curves, one panel per problem: observed against nominal coverage, raw (dashed, the
    exact-Gaussian half-width for S samples) and calibrated (solid), one colour per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in data["cells"].values() if "curve" in c]
    problems = list(dict.fromkeys(c["problem"] for c in cells))
    # one number of samples per panel: the one with the most rows for that problem
    counts = {}
    for c in cells:
        counts[(c["problem"], c["samples"])] = counts.get((c["problem"], c["samples"]), 0) + 1
    main_s = {p: max((n, s) for (q, s), n in counts.items() if q == p)[1] for p in problems}
    cells = [c for c in cells if c["samples"] == main_s[c["problem"]]]
    if not problems:
        return None
    solvers = list(dict.fromkeys(c["solver"] for c in cells))
    colours = {s: plt.cm.tab10(i % 10) for i, s in enumerate(solvers)}
    cols = min(4, len(problems))
    rows = -(-len(problems) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.3 * rows), squeeze=False)
    for ax, problem in zip(axes.flat, problems):
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8)
        for c in (c for c in cells if c["problem"] == problem):
            lv = c["curve"]["level"]
            ax.plot(lv, c["curve"]["raw"], "--", color=colours[c["solver"]], lw=1)
            if "calibrated" in c["curve"]:
                ax.plot(lv, c["curve"]["calibrated"], "-", color=colours[c["solver"]], lw=1.2, label=c["solver"])
        ax.set_title(f"{problem} (S = {main_s[problem]})", fontsize=9)
        ax.set_xlim(0.45, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("nominal coverage", fontsize=8)
        ax.set_ylabel("observed coverage", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.suptitle("posterior std maps: raw (dashed) and conformally calibrated (solid)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_md(data: dict) -> None:
    from invdiff.data.io import atomic_write

    cells = list(data["cells"].values())
    lines = ["# Uncertainty: coverage of posterior std maps, before and after calibration", "",
             "Made by (`benchmarks/uncertainty.py`; each command adds its cells to `benchmarks/uncertainty.json`):", ""]
    lines += [f"- `{c}`" for c in data["commands"]]
    lines += ["", "Coverage: the fraction of pixels whose truth lies in the interval around the posterior mean "
              "(in %). *Raw ±1 / ±2 std*: the std map as the solver gives it; *exact-Gaussian*: what an exact "
              "sampler of a Gaussian posterior gives with the same number of samples S (below 68.3 / 95.4 because "
              "the mean and std are estimated from S draws). *Calibrated 68 / 95*: the split-conformal intervals "
              "(`invdiff.calibration`) fitted on a separate calibration set (exact part: other signals; named "
              "problems: the validation split), measured on the test set; nominal 68.27 and 95. *Scale*: the "
              "calibrated 95 % half-width over the exact-Gaussian one (> 1: the raw map is overconfident). "
              "The guarantee is marginal over pixels and images like the calibration set; see "
              "`invdiff.calibration` for where it breaks.", "",
              "![calibration curves](../docs/figures/uncertainty_calibration.png)", ""]
    order = {name: i for i, name in enumerate(["exact"] + list(SOLVERS))}
    rank = lambda c: (c["problem"], order.get(c["solver"], 99), c.get("samples", 0))  # noqa: E731
    exact = sorted((c for c in cells if c["part"] == "exact"), key=rank)
    if exact:
        lines += ["## Exact posteriors", "",
                  "| posterior | sampler | S | steps | raw ±1 std | exact-Gaussian ±1 | raw ±2 std | exact-Gaussian ±2 "
                  "| calibrated 68 | calibrated 95 | scale | s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in exact:
            if "failed" in c:
                lines.append(f"| {c['problem']} | {c['solver']} | failed: {c['failed']} | | | | | | | | | |")
                continue
            lines.append(f"| {c['problem']} ({c['signals']} signals) | {c['solver']} | {c['samples']} | {c['steps']} | "
                         f"{_pct(c['raw_1std'])} | {_pct(c['nominal_1std'])} | {_pct(c['raw_2std'])} | "
                         f"{_pct(c['nominal_2std'])} | {_pct(c['cal_68'])} | {_pct(c['cal_95'])} | "
                         f"{c['scale_95']:.2f} | {c['seconds']:.0f} |")
        lines.append("")
    named = sorted((c for c in cells if c["part"] == "problem"), key=rank)
    if named:
        lines += ["## Named problems", "",
                  "Calibration on the validation split, coverage on the test split (pixels inside the body for CT "
                  "and MRI). A row marked † misses the 90–98 % band at the 95 % level.", "",
                  "| problem | solver | S | steps | val / test images | PSNR | raw ±1 std | raw ±2 std | exact-Gaussian ±2 "
                  "| calibrated 68 | calibrated 95 | scale | s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in named:
            if "not_applicable" in c or "failed" in c:
                why = f"n/a ({c['not_applicable']})" if "not_applicable" in c else f"failed: {c['failed']}"
                lines.append(f"| {c['problem']} | {c['solver']} | {why} | | | | | | | | | | |")
                continue
            mark = "" if 0.90 <= c["cal_95"] <= 0.98 else " †"
            prior = f" (prior `{c['prior']}`)" if c.get("prior") else ""
            lines.append(f"| {c['problem']}{prior} | {c['solver']} | {c['samples']} | {c['steps']} | {c['val_images']} / "
                         f"{c['test_images']} | {c['psnr']:.2f} | {_pct(c['raw_1std'])} | {_pct(c['raw_2std'])} | "
                         f"{_pct(c['nominal_2std'])} | {_pct(c['cal_68'])} | {_pct(c['cal_95'])}{mark} | "
                         f"{c['scale_95']:.2f} | {c['seconds']:.0f} |")
        lines.append("")
    missed = [c for c in named if "cal_95" in c and not 0.90 <= c["cal_95"] <= 0.98]
    lines += ["## Reading the tables", "",
              "- **Exact sampler.** On the Gaussian posterior the raw coverage matches the exact-Gaussian column at "
              "every S (the finite-sample rule of `invdiff.metrics.std_multiplier`), and after calibration it is "
              "nominal: the measurement and the calibration are right where the answer is known.",
              "- **Approximate samplers are overconfident**, increasingly so on harder problems (raw ±2 std far below "
              "the exact-Gaussian value on `ct-sparse-8` and `inpaint-random-70`); the conformal scale says by how "
              "much the map must be widened.",
              "- **SMC's std maps carry little information.** After the final resampling the K particles descend from "
              "few ancestors (the ESS collapses on image problems), so the std over them is near zero on most "
              "pixels: raw coverage of a few per cent, and a conformal factor of tens. One factor per problem "
              "rescales a map; it cannot give spread to pixels where all particles agree, so the calibrated coverage "
              "on new images depends on how far each image's particles collapsed."]
    shown = lambda cs: ", ".join(f"{c['problem']} / {c['solver']} ({100 * c['cal_95']:.1f} %)" for c in cs)  # noqa: E731
    smc_missed = [c for c in missed if c["solver"].startswith("smc")]
    other_missed = [c for c in missed if not c["solver"].startswith("smc")]
    if smc_missed:
        lines += [f"- **Outside 90–98 % after calibration (SMC):** {shown(smc_missed)} — the collapse above: the "
                  "validation images' particles spread differently from the test images', so the factor fitted on "
                  "them does not transfer; more particles (a larger ESS) or more calibration images are the remedies."]
    if other_missed:
        lines += [f"- **Outside 90–98 % after calibration:** {shown(other_missed)}: the calibration images differ "
                  "from the test images more than the guarantee allows (few calibration images, or a prior out of "
                  "its training distribution)."]
    real = [c for c in named if "cal_95" in c and c["problem"].startswith(("ct256", "ct512", "mri256", "photo256"))]
    shown_real = "; ".join(f"{c['problem']} / {c['solver']}: raw ±2 std {100 * c['raw_2std']:.1f} % → calibrated "
                           f"{100 * c['cal_95']:.1f} %" for c in real)
    lines += ["- **Real images** (256 px rows): the calibration set is the real problem's validation split (another "
              "subject); the coverage reached on the test subject shows how well one factor transfers across "
              "subjects for a prior trained on phantoms" + (f" ({shown_real}). The raw maps are more overconfident "
              "than the same solver's on the 64-px phantoms (the prior is out of its training distribution); "
              + ("one factor fitted on another subject still lands in the 90–98 % band."
                 if all(0.90 <= c["cal_95"] <= 0.98 for c in real) else
                 "one factor fitted on another subject does not always land in the 90–98 % band.")
              if real else "."), ""]
    text = "\n".join(lines)
    atomic_write(OUT_MD, lambda tmp: open(tmp, "w").write(text))


def main(argv=None) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exact", action="store_true", help="the exact-posterior part")
    ap.add_argument("--problems", nargs="*", default=[], help="named problems")
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--signals", type=int, default=200, help="exact part: signals per set")
    ap.add_argument("--val-images", type=int, default=4)
    ap.add_argument("--test-images", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    data = _load()
    command = "python benchmarks/uncertainty.py " + " ".join(sys.argv[1:] if argv is None else argv)
    todo = []
    if args.exact:
        for kind in ("gaussian", "mixture"):
            for label in ["exact"] + [s for s in args.solvers if s != "mbir"]:  # vectors, not volumes
                key = f"exact|{kind}|{label}|{args.samples}"
                if key not in data["cells"]:
                    todo.append((key, exact_cell, (kind, label, args.signals, args.samples, args.steps, args.threads)))
    for problem in args.problems:
        for label in args.solvers:
            key = f"problem|{problem}|{label}|{args.samples}"
            if key in data["cells"] and not _stale(data["cells"][key]):
                continue
            why = _applicable(problem, label)
            if why:
                data["cells"][key] = {"part": "problem", "problem": problem, "solver": label, "not_applicable": why}
                continue
            todo.append((key, problem_cell, (problem, label, args.samples, args.val_images, args.test_images,
                                             args.steps, args.threads)))

    def finished(key, run):
        try:
            cell = run()
        except Exception as err:  # a failing solver is a result, not the end of the run
            part, problem, label, _ = key.split("|")
            cell = {"part": part, "problem": problem, "solver": label, "failed": f"{type(err).__name__}: {err}"}
        data["cells"][key] = cell
        if "calibration" in cell:
            _store_calibration(cell)
        _save(data)
        shown = f"cal95 {cell['cal_95']:.3f} raw2 {cell['raw_2std']:.3f}" if "cal_95" in cell else \
            cell.get("failed", "")
        print(key, shown, f"{cell.get('seconds', 0):.0f} s", flush=True)

    if args.jobs == 1:  # in this process (the exact part's cells take seconds; a spawned process costs more)
        for key, fn, a in todo:
            finished(key, lambda: fn(*a))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {pool.submit(fn, *a): key for key, fn, a in todo}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result)
    if command not in data["commands"]:
        data["commands"].append(command)
    _save(data)
    write_md(data)
    figure(data)
    print(f"wrote {OUT_JSON}, {OUT_MD} and {FIGURE}")


if __name__ == "__main__":
    main()
