"""Figures: labelled image grids written atomically (nothing half-written is left behind)."""

from __future__ import annotations

import torch

from .data.io import atomic_write

__all__ = ["save_image_row", "save_comparison"]


def save_image_row(images: dict, path: str, *, titles: dict | None = None, cmaps: dict | None = None,
                   ranges: dict | None = None) -> str:
    """Save ``{label: (C, H, W) or (H, W) tensor}`` side by side as one PNG at ``path``.

    Grey images use ``gray`` on [0, 1] unless ``cmaps``/``ranges`` say otherwise (e.g. an
    uncertainty map with its own range); RGB images are shown as they are, clipped to [0, 1].
    The file is written to a temporary name in the same folder and renamed, so an interrupted
    call never leaves a partial PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles, cmaps, ranges = titles or {}, cmaps or {}, ranges or {}
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 2.9), squeeze=False)
    for ax, (label, img) in zip(axes[0], images.items()):
        t = torch.as_tensor(img).detach().cpu().double()
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3:
            ax.imshow(t.permute(1, 2, 0).clamp(0, 1).numpy())
        else:
            lo, hi = ranges.get(label, (0.0, 1.0))
            im = ax.imshow(t.numpy(), cmap=cmaps.get(label, "gray"), vmin=lo, vmax=hi)
            if label in cmaps:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(titles.get(label, label), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def save_comparison(truth, recs: dict, path, title: str) -> str:
    """Truth, then each reconstruction ``{label: (C, H, W) array}`` with its PSNR, over its absolute
    error map (one shared colour scale), as one PNG at ``path`` (written atomically)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
