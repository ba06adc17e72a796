"""Figures: labelled image grids written atomically (nothing half-written is left behind).

Every figure shows intensity colour bars; given the ground truth, each reconstruction carries
its PSNR/SSIM in its title and its absolute error map underneath; volumes are shown in their
three planes.
"""

from __future__ import annotations

import torch

from .data.io import atomic_write

__all__ = ["save_image_row", "save_comparison", "save_volume_planes"]


def _grey_or_rgb(img) -> torch.Tensor:
    t = torch.as_tensor(img).detach().cpu().double()
    return t[0] if t.ndim == 3 and t.shape[0] == 1 else t


def _scores(img: torch.Tensor, truth: torch.Tensor) -> str:
    from .metrics import psnr, ssim

    a = img.clamp(0, 1).float().reshape((1,) + ((1,) if img.ndim == 2 else ()) + tuple(img.shape))
    b = truth.clamp(0, 1).float().reshape(a.shape)
    return f"{float(psnr(a, b)):.2f} dB, SSIM {float(ssim(a, b)):.3f}"


def _figure(images: dict, *, truth=None, titles=None, cmaps=None, ranges=None, suptitle=None):
    """One figure: every panel with an intensity colour bar; with ``truth``, each image panel of
    its shape gets PSNR/SSIM in its title and its absolute error underneath (one shared scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles, cmaps, ranges = titles or {}, cmaps or {}, ranges or {}
    ref = None if truth is None else _grey_or_rgb(truth)
    panels = {k: _grey_or_rgb(v) for k, v in images.items()}
    scored = [k for k, t in panels.items()
              if ref is not None and k not in cmaps and tuple(t.shape) == tuple(ref.shape) and not torch.equal(t, ref)]
    errors = {k: (panels[k].clamp(0, 1) - ref).abs() for k in scored}
    errors = {k: e.mean(0) if e.ndim == 3 else e for k, e in errors.items()}
    rows = 2 if errors else 1
    fig, axes = plt.subplots(rows, len(panels), figsize=(2.9 * len(panels), 2.7 * rows + 0.4), squeeze=False)
    err_max = max((float(e.max()) for e in errors.values()), default=1.0) or 1.0
    for j, (label, t) in enumerate(panels.items()):
        ax = axes[0, j]
        if t.ndim == 3:
            im = ax.imshow(t.permute(1, 2, 0).clamp(0, 1).numpy(), vmin=0, vmax=1)
        else:
            lo, hi = ranges.get(label, (0.0, 1.0))
            im = ax.imshow(t.numpy(), cmap=cmaps.get(label, "gray"), vmin=lo, vmax=hi)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        title = titles.get(label, label)
        ax.set_title(f"{title}\n{_scores(t, ref)}" if label in errors else title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if rows == 2:
            ax = axes[1, j]
            if label in errors:
                im = ax.imshow(errors[label].numpy(), cmap="magma", vmin=0, vmax=err_max)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
                ax.set_title(f"|error| of {title}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def _save(fig, path) -> str:
    import os

    import matplotlib.pyplot as plt

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def save_image_row(images: dict, path: str, *, titles: dict | None = None, cmaps: dict | None = None,
                   ranges: dict | None = None, truth=None, suptitle: str | None = None) -> str:
    """Save ``{label: (C, H, W) or (H, W) tensor}`` side by side as one PNG at ``path``.

    Grey images use ``gray`` on [0, 1] unless ``cmaps``/``ranges`` say otherwise (e.g. an
    uncertainty map with its own range); RGB images are shown as they are, clipped to [0, 1];
    every panel has a colour bar. With ``truth`` (the ground truth, also one of the panels or
    not), every other image panel of its shape gets its PSNR and SSIM in the title and its
    absolute error map underneath. The file is written to a temporary name and renamed, so an
    interrupted call never leaves a partial PNG.
    """
    return _save(_figure(images, truth=truth, titles=titles, cmaps=cmaps, ranges=ranges, suptitle=suptitle), path)


def save_comparison(truth, recs: dict, path, title: str, *, maps: dict | None = None) -> str:
    """Truth, then each reconstruction ``{label: (C, H, W) array}`` with PSNR/SSIM, over its
    absolute error map (one shared scale), then ``maps`` (e.g. posterior standard deviations,
    ``{label: (H, W)}``, each on its own ``magma`` scale), as one PNG at ``path`` (atomically)."""
    maps = {k: torch.as_tensor(v) for k, v in (maps or {}).items()}
    return save_image_row({"truth": torch.as_tensor(truth), **{k: torch.as_tensor(v) for k, v in recs.items()}, **maps},
                          path, truth=torch.as_tensor(truth), suptitle=title, cmaps={k: "magma" for k in maps},
                          ranges={k: (0.0, max(float(v.max()), 1e-6)) for k, v in maps.items()})


def save_volume_planes(volumes: dict, path: str, *, truth=None, index=None, suptitle: str | None = None) -> str:
    """Axial, coronal and sagittal planes of volumes ``{label: (D, C, H, W)}`` through ``index``
    (default: the centre), one row per plane, panels at readable size, with PSNR/SSIM and error
    maps against ``truth`` when given (:func:`save_image_row`'s layout, one figure per plane
    stacked into one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    vols = {k: torch.as_tensor(v).detach().cpu()[:, 0] for k, v in volumes.items()}
    d, h, w = next(iter(vols.values())).shape
    z, y, x = index or (d // 2, h // 2, w // 2)
    planes = {"axial": lambda v: v[z], "coronal": lambda v: v[:, y].flip(0), "sagittal": lambda v: v[:, :, x].flip(0)}
    images = []
    for plane, cut in planes.items():
        ref = None if truth is None else cut(torch.as_tensor(truth).detach().cpu()[:, 0])
        fig = _figure({f"{k} ({plane})": cut(v) for k, v in vols.items()}, truth=ref)
        fig.canvas.draw()
        images.append(np.asarray(fig.canvas.buffer_rgba())[..., :3])
        plt.close(fig)
    width = max(im.shape[1] for im in images)
    stacked = np.concatenate([np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=255)
                              for im in images])
    fig = plt.figure(figsize=(stacked.shape[1] / 100, stacked.shape[0] / 100 + (0.3 if suptitle else 0)))
    fig.figimage(stacked, 0, 0)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save(fig, path)
