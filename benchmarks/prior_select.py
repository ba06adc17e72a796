"""Candidate priors side by side on the real-data problems' validation split.

Usage::

    python benchmarks/prior_select.py --problems mri256-8x mri256-4x \\
        --priors phantom64 runs/mri_patch.safetensors runs/mri_fc.safetensors \\
        --methods diffpir --images 2 --steps 30 --out benchmarks/prior_select_mri.md

Each solver's hyperparameter grid is searched on the validation images with each candidate
prior (:func:`invdiff.bench.tune.tune_problem`, the benchmark's own code path) and the best
validation PSNR is reported next to the tuned classical methods of ``presets.json`` (same
split, same images when the settings match). Validation only: this chooses a prior, it is not a
test result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from invdiff.bench.tune import tune_problem
from invdiff.methods import get_method
from invdiff.metrics import psnr
from invdiff.priors import load_checkpoint, load_prior
from invdiff.problems import get_problem

PRESETS = Path(__file__).resolve().parents[1] / "invdiff" / "problems" / "presets.json"


def _load(spec: str):
    return (Path(spec).stem, load_checkpoint(spec)) if spec.endswith(".safetensors") else (spec, load_prior(spec))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", required=True)
    p.add_argument("--priors", nargs="+", required=True, help="shipped prior names or .safetensors paths")
    p.add_argument("--methods", nargs="+", default=["diffpir"])
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--test-images", type=int, default=0, help="also run the chosen parameters on N test images")
    p.add_argument("--bench", default="benchmarks/real/results.json",
                   help="bench results whose classical cells are shown next to the test PSNR")
    p.add_argument("--points", default="", help="JSON list of parameter dicts replacing the grid of the (one) "
                   "method, e.g. '[{\"lam\": 0.1, \"zeta\": 1}]'")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    points = None
    if args.points:
        if len(args.methods) != 1:
            p.error("--points needs exactly one --methods entry")
        points = {get_method(args.methods[0]).preset_key: json.loads(args.points)}
    torch.set_num_threads(args.threads)
    presets = json.loads(PRESETS.read_text())
    command = "python benchmarks/prior_select.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Candidate priors on the validation split", "", f"Command: `{command.strip()}`", "",
             f"Best validation PSNR (dB) over each method's grid, {args.images} validation images, {args.steps} "
             "steps; classical methods as tuned in `invdiff/problems/presets.json` (validation split).", "",
             "| problem | method | prior | validation PSNR | chosen | test PSNR | s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    bench = json.loads(Path(args.bench).read_text())["cells"] if args.test_images and Path(args.bench).is_file() else {}
    for name in args.problems:
        spec = get_problem(name)
        for pname, prior in map(_load, args.priors):
            if spec.is_volume:
                from invdiff.priors import SliceStackPrior

                prior = SliceStackPrior(prior)
            t0 = time.perf_counter()
            out = tune_problem(name, args.methods, images=args.images, steps=args.steps, prior=prior, points=points)
            for key, r in out.items():
                test = ""
                if args.test_images:
                    pb = spec.make("test", args.test_images, seed=0)
                    res = get_method(key).run(pb, prior, steps=args.steps, generator=torch.Generator().manual_seed(0),
                                              params=r["params"])
                    test = f"{float(psnr(res.x_hat.clamp(0, 1), pb.x_true).mean()):.2f}"
                lines.append(f"| {name} | {key} | `{pname}` | {r['validation_psnr']:.2f} | {r['params']} | {test} | "
                             f"{time.perf_counter() - t0:.0f} |")
                print(lines[-1], flush=True)
        for key, r in presets["problems"].get(name, {}).items():
            if key in ("tv", "wavelet", "bm3d"):
                cell = bench.get(f"{name}|{key}", {})
                test = (f"{sum(cell['psnr'][:args.test_images]) / args.test_images:.2f}"
                        if args.test_images and len(cell.get("psnr", [])) >= args.test_images else "")
                lines.append(f"| {name} | {key} | — | {r['validation_psnr']:.2f} | {r['params']} | {test} | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
