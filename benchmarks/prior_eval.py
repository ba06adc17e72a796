"""Denoising evaluation of the shipped priors (the table in each model card).

Usage::

    .venv/bin/python benchmarks/prior_eval.py --prior phantom64 --out benchmarks/prior_eval_phantom64.md
    .venv/bin/python benchmarks/prior_eval.py --prior photo64 --out benchmarks/prior_eval_photo64.md

For each sigma in {0.02, 0.05, 0.1, 0.2, 0.4} ([0, 1] units) and each held-out test image,
``y = x + sigma·ε`` is denoised by

* the prior's MMSE denoiser ``D(y, sigma)`` (one network call),
* total variation (``skimage.restoration.denoise_tv_chambolle``) and
* a Gaussian filter (``scipy.ndimage.gaussian_filter``),

the last two with their weight tuned per sigma on separate tuning images (grid search on PSNR).
Images: ``phantom64`` — held-out body phantoms (seed 777, not the training pool) and tuning
phantoms (seed 555); ``photo64`` — 64×64 crops of the held-out scikit-image photographs for
testing, crops of training photographs for tuning. The phantom prior is also applied to a real
CT slice that pydicom ships (``CT_small.dcm``, windowed to [−160, 240] HU, resized to 64 px):
out of distribution, reported as information.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy import ndimage
from skimage.restoration import denoise_tv_chambolle

from invdiff.data import body_phantoms, dicom_sample, photo_crops, resize
from invdiff.metrics import psnr
from invdiff.priors import load_checkpoint, load_prior
from invdiff.data.splits import PHOTO_HELD_OUT, PHOTO_TRAIN, SPLIT_SEEDS

SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.4)
TV_GRID = np.geomspace(0.002, 8.0, 22)
GAUSS_GRID = np.geomspace(0.3, 8.0, 18)


def datasets(name, n_test, n_tune, size=64):
    if name.startswith("phantom"):
        return (body_phantoms(n_test, size, "mixed", generator=torch.Generator().manual_seed(SPLIT_SEEDS["test"])),
                body_phantoms(n_tune, size, "mixed", generator=torch.Generator().manual_seed(SPLIT_SEEDS["validation"])))
    return (photo_crops(PHOTO_HELD_OUT, n_test, size, torch.Generator().manual_seed(SPLIT_SEEDS["test"])),
            photo_crops(PHOTO_TRAIN, n_tune, size, torch.Generator().manual_seed(SPLIT_SEEDS["validation"])))


def _np(x):
    return x.detach().double().numpy()


def tv_denoise(y, weight):
    out = [denoise_tv_chambolle(np.moveaxis(_np(im), 0, -1), weight=weight, channel_axis=-1) for im in y]
    return torch.from_numpy(np.stack([np.moveaxis(o, -1, 0) for o in out]))


def gauss_denoise(y, s):
    return torch.from_numpy(ndimage.gaussian_filter(_np(y), sigma=(0, 0, s, s)))


def tune(method, grid, x, y):
    scores = [float(psnr(method(y, w).float(), x).mean()) for w in grid]
    return grid[int(np.argmax(scores))]


@torch.no_grad()
def evaluate(prior, x_test, x_tune, sigmas, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for s in sigmas:
        y_test = x_test + s * torch.randn(x_test.shape, generator=g)
        y_tune = x_tune + s * torch.randn(x_tune.shape, generator=g)
        w_tv = tune(tv_denoise, TV_GRID, x_tune, y_tune)
        w_g = tune(gauss_denoise, GAUSS_GRID, x_tune, y_tune)
        d = torch.cat([prior.denoise(y_test[i:i + 16], s) for i in range(0, len(y_test), 16)])
        row = dict(sigma=s, noisy=psnr(y_test, x_test), prior=psnr(d, x_test),
                   tv=psnr(tv_denoise(y_test, w_tv).float(), x_test),
                   gauss=psnr(gauss_denoise(y_test, w_g).float(), x_test), w_tv=w_tv, w_g=w_g)
        rows.append(row)
        print(f"sigma {s}: prior {row['prior'].mean():.2f}  tv {row['tv'].mean():.2f}  "
              f"gauss {row['gauss'].mean():.2f}", file=sys.stderr)
    return rows


def render(name, rows, n_test, n_tune, ood, command, size=64):
    f = lambda t: f"{float(t.mean()):.2f} ± {float(t.std()):.2f}"  # noqa: E731
    lines = [f"Command: `{command}`", "",
             f"Denoising PSNR (dB, mean ± std over {n_test} held-out images of {size} px; baselines tuned per "
             f"sigma on {n_tune} separate images).", "",
             "| sigma | noisy | TV (tuned) | Gaussian filter (tuned) | " + name + " | gain over TV |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        gain = float(r["prior"].mean() - r["tv"].mean())
        lines.append(f"| {r['sigma']} | {f(r['noisy'])} | {f(r['tv'])} (w={r['w_tv']:.3g}) | "
                     f"{f(r['gauss'])} (s={r['w_g']:.2g}) | **{f(r['prior'])}** | {gain:+.2f} |")
    if ood:
        lines += ["", "Out of distribution: real CT slice `CT_small.dcm` (pydicom), 64 px, "
                  "baselines with the weights tuned on phantoms.", "",
                  "| sigma | noisy | TV | Gaussian filter | " + name + " |", "|---|---|---|---|---|"]
        for r in ood:
            lines.append(f"| {r['sigma']} | {float(r['noisy']):.2f} | {float(r['tv']):.2f} | "
                         f"{float(r['gauss']):.2f} | {float(r['prior']):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", required=True, help="shipped prior name, or a .safetensors path")
    p.add_argument("--n-test", type=int, default=32)
    p.add_argument("--n-tune", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="image size (the priors were trained at 64)")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.prior.endswith(".safetensors"):
        prior = load_checkpoint(args.prior)
        name = "phantom64" if prior.channels == 1 else "photo64"
    else:
        prior, name = load_prior(args.prior), args.prior
    x_test, x_tune = datasets(name, args.n_test, args.n_tune, args.size)
    rows = evaluate(prior, x_test, x_tune, args.sigmas)
    ood = None
    if name.startswith("phantom") and args.size == 64:
        ct = resize(dicom_sample("CT_small.dcm", window=(40.0, 400.0)), 64)[None]
        ood = []
        g = torch.Generator().manual_seed(1)
        for r in rows:
            s = r["sigma"]
            y = ct + s * torch.randn(ct.shape, generator=g)
            with torch.no_grad():
                d = prior.denoise(y, s)
            ood.append(dict(sigma=s, noisy=psnr(y, ct)[0], prior=psnr(d, ct)[0],
                            tv=psnr(tv_denoise(y, r["w_tv"]).float(), ct)[0],
                            gauss=psnr(gauss_denoise(y, r["w_g"]).float(), ct)[0]))
    command = "python benchmarks/prior_eval.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(name, rows, args.n_test, args.n_tune, ood, command.strip(), args.size)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
