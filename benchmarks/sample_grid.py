"""Unconditional sample grid of a prior (the picture in each model card).

Usage::

    .venv/bin/python benchmarks/sample_grid.py --prior phantom64 --out docs/model_cards/phantom64_samples.png

64 samples by the deterministic Heun sampler (Karras et al. 2022, Alg. 1) on 18 Karras noise
levels from the prior's sigma_max to sigma_min (35 network calls per sample), seed 0, shown
clipped to [0, 1].
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from invdiff.priors import load_checkpoint, load_prior  # noqa: E402
from invdiff.sampling import sample_heun  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", required=True, help="shipped prior name or .safetensors path")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=0, help="image side in pixels (default: the prior's training size; "
                   "priors for any size, e.g. patch priors, are shown at the size they are used at)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    prior = load_checkpoint(args.prior) if args.prior.endswith(".safetensors") else load_prior(args.prior)
    c = prior.channels
    h, w = (args.size, args.size) if args.size else prior.img_size
    t = time.perf_counter()
    x = sample_heun(prior, args.n, (c, h, w), steps=args.steps, generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - t
    x = x.clamp(0, 1)
    cols = int(args.n ** 0.5)
    rows = -(-args.n // cols)
    inch = max(1.0, h / 96)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * inch, rows * inch))
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: args.n]):
        img = x[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if c == 1 else img, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    plt.subplots_adjust(wspace=0.03, hspace=0.03, left=0, right=1, top=1, bottom=0)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}: {args.n} samples, {2 * args.steps - 1} NFE each, {seconds:.1f} s")


if __name__ == "__main__":
    main()
