"""Denoising on real images at the size the real-data problems are solved at (256 px by default).

Usage::

    python benchmarks/prior_eval_real.py --corpus mri --priors phantom64 runs/mri_patch.safetensors \\
        --split validation --out benchmarks/prior_eval_real_mri_validation.md

For each sigma and each image of the chosen split of the corpus (``invdiff.data.corpora``:
the real-data problems' validation or test images), ``y = x + sigma·ε`` is denoised by each
prior's MMSE denoiser ``D(y, sigma)`` (one network call over the whole image; patch priors
assemble it from their patches), by total variation (``denoise_tv_chambolle``), a Gaussian
filter and, for photographs, BM3D. The classical weights are tuned per sigma on the
**validation** split (on the test split too only when ``--split validation``, which is the
selection run: its numbers choose between candidate priors and are not test results).
PSNR is over the whole image, in [0, 1] units. Times are seconds per image of one
denoiser call on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_eval import GAUSS_GRID, TV_GRID, gauss_denoise, tune, tv_denoise  # noqa: E402

from invdiff.data.corpora import corpus_images  # noqa: E402
from invdiff.metrics import psnr  # noqa: E402
from invdiff.priors import load_checkpoint, load_prior  # noqa: E402

SIGMAS = (0.05, 0.1, 0.2)
BM3D_SCALE = (0.6, 0.8, 1.0, 1.25)


def bm3d_denoise(y, scale, sigma):
    import bm3d

    out = [np.moveaxis(bm3d.bm3d(np.moveaxis(im.double().numpy(), 0, -1), sigma_psd=scale * sigma), -1, 0)
           if im.shape[0] == 1 else
           np.moveaxis(bm3d.bm3d_rgb(np.moveaxis(im.double().numpy(), 0, -1), sigma_psd=scale * sigma), -1, 0)
           for im in y]
    return torch.from_numpy(np.stack(out).reshape(y.shape))


def _load(spec: str):
    if spec.endswith(".safetensors"):
        return Path(spec).stem, load_checkpoint(spec)
    return spec, load_prior(spec)


@torch.no_grad()
def evaluate(priors, x_eval, x_tune, sigmas, *, photo: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for s in sigmas:
        y_eval = x_eval + s * torch.randn(x_eval.shape, generator=g)
        y_tune = x_tune + s * torch.randn(x_tune.shape, generator=g)
        row = {"sigma": s, "noisy": psnr(y_eval, x_eval)}
        w = tune(tv_denoise, TV_GRID, x_tune, y_tune)
        row["TV"], row["TV w"] = psnr(tv_denoise(y_eval, w).float(), x_eval), w
        w = tune(gauss_denoise, GAUSS_GRID, x_tune, y_tune)
        row["Gaussian filter"], row["Gaussian filter w"] = psnr(gauss_denoise(y_eval, w).float(), x_eval), w
        if photo:
            w = tune(lambda y, k: bm3d_denoise(y, k, s), BM3D_SCALE, x_tune, y_tune)
            row["BM3D"], row["BM3D w"] = psnr(bm3d_denoise(y_eval, w, s).float(), x_eval), w
        for name, prior in priors:
            t0 = time.perf_counter()
            d = torch.cat([prior.denoise(y_eval[i:i + 1], s) for i in range(len(y_eval))])
            row[name], row[name + " s"] = psnr(d.clamp(0, 1), x_eval), (time.perf_counter() - t0) / len(y_eval)
        rows.append(row)
        print(f"sigma {s}: " + "  ".join(f"{k} {float(v.mean()):.2f}" for k, v in row.items()
                                           if isinstance(v, torch.Tensor)), file=sys.stderr, flush=True)
    return rows


def render(rows, names, classical, args, n_eval, n_tune, command):
    f = lambda t: f"{float(t.mean()):.2f}"  # noqa: E731
    best_classical = lambda r: max(float(r[c].mean()) for c in classical)  # noqa: E731
    lines = [f"# Denoising real {args.corpus} images at {args.size} px ({args.split} split)", "",
             f"Command: `{command}`", "",
             f"PSNR (dB, mean over {n_eval} {args.split} images of the `{args.corpus}` corpus); classical weights "
             f"tuned per sigma on {n_tune} validation images"
             + (" (the same images: this is the selection run)" if args.split == "validation" else "") + ". "
             "Last columns: best prior minus best classical; seconds per image of the best prior's call.", "",
             "| sigma | noisy | " + " | ".join(classical) + " | " + " | ".join(f"`{n}`" for n in names)
             + " | margin (dB) | s / image |",
             "|" + "---|" * (3 + len(classical) + len(names))]
    for r in rows:
        best = max(names, key=lambda n: float(r[n].mean()))
        lines.append(f"| {r['sigma']} | {f(r['noisy'])} | " + " | ".join(f(r[c]) for c in classical) + " | "
                     + " | ".join(f"**{f(r[n])}**" if n == best else f(r[n]) for n in names)
                     + f" | {float(r[best].mean()) - best_classical(r):+.2f} | {r[best + ' s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, choices=("ct", "mri", "photo"))
    p.add_argument("--priors", nargs="+", required=True, help="shipped prior names or .safetensors paths")
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--images", type=int, default=4, help="images of the evaluated split")
    p.add_argument("--tune-images", type=int, default=2, help="validation images for the classical weights")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    priors = [_load(s) for s in args.priors]
    x_eval = corpus_images(args.corpus, args.split, args.size, args.images)
    x_tune = corpus_images(args.corpus, "validation", args.size, args.tune_images)
    rows = evaluate(priors, x_eval, x_tune, args.sigmas, photo=args.corpus == "photo")
    classical = ["TV", "Gaussian filter"] + (["BM3D"] if args.corpus == "photo" else [])
    command = "python benchmarks/prior_eval_real.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(rows, [n for n, _ in priors], classical, args, len(x_eval), len(x_tune), command.strip())
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
