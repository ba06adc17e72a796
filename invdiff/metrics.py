"""Image quality metrics on batches ``(B, C, H, W)`` in [0, 1]; each returns a ``(B,)`` tensor."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["psnr", "ssim", "nrmse", "sliced_wasserstein", "plane_metrics", "METRICS"]


def _pair(x, ref):
    if x.shape != ref.shape:
        raise ValueError(f"estimate and reference shapes differ: {tuple(x.shape)} vs {tuple(ref.shape)}")
    if x.ndim == 3:
        x, ref = x[None], ref[None]
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got shape {tuple(x.shape)}")
    return x.detach().double(), ref.detach().double()


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range² / MSE)`` per image, in dB."""
    x, ref = _pair(x, ref)
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def nrmse(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Normalised root mean squared error ``‖x - ref‖ / ‖ref‖`` per image."""
    x, ref = _pair(x, ref)
    return (x - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp_min(1e-20)


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (scikit-image, Gaussian window σ = 1.5 as Wang et al. 2004) per image.

    Channels are averaged (``channel_axis``). Images smaller than the 11-pixel Gaussian window
    use a uniform window of the largest odd size that fits.
    """
    from skimage.metrics import structural_similarity

    x, ref = _pair(x, ref)
    side = min(x.shape[-2:])
    opts = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    if side < 11:
        opts = dict(win_size=side - 1 + side % 2)
    out = []
    for a, b in zip(x.cpu().numpy(), ref.cpu().numpy()):
        out.append(structural_similarity(np.moveaxis(a, 0, -1), np.moveaxis(b, 0, -1),
                                         data_range=data_range, channel_axis=-1, **opts))
    return torch.tensor(out, dtype=torch.float64)


METRICS = {"psnr": psnr, "ssim": ssim, "nrmse": nrmse}


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance between two sample sets (Rabin et al., 2011).

    .. math:: SW_2(μ, ν) = \\Big(\\mathbb E_{θ \\sim U(S^{d-1})} W_2^2(θ_\\# μ, θ_\\# ν)\\Big)^{1/2}

    estimated with ``projections`` random directions; each one-dimensional ``W_2`` compares the
    quantile functions of the projected samples on a common grid (so ``a`` and ``b`` may hold
    different numbers of samples). Samples are rows after flattening: ``(n, *event)``.
    The same ``generator`` seed gives the same directions, so distances computed with one seed
    are comparable with each other.
    """
    a = a.detach().reshape(a.shape[0], -1).double()
    b = b.detach().reshape(b.shape[0], -1).double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sample dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least 2 samples in each set")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("samples contain NaN or Inf")
    theta = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    n = max(a.shape[0], b.shape[0])
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qa = torch.quantile(a @ theta, levels, dim=0)
    qb = torch.quantile(b @ theta, levels, dim=0)
    return float(((qa - qb) ** 2).mean().sqrt())


def plane_metrics(x: torch.Tensor, ref: torch.Tensor, *, min_content: float = 0.1,
                  threshold: float = 0.05) -> dict:
    """PSNR and SSIM of a volume ``(D, C, H, W)`` on its axial, coronal and sagittal planes.

    Each plane family is scored image by image and averaged over the planes whose reference
    has at least ``min_content`` of its pixels above ``threshold`` (planes that cut only air
    would otherwise dominate the mean with near-infinite PSNR). Returns
    ``{"axial": (psnr, ssim), "coronal": …, "sagittal": …}``.
    """
    if x.shape != ref.shape or x.ndim != 4:
        raise ValueError(f"expected two (D, C, H, W) volumes of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(ref.shape)}")
    views = {"axial": lambda v: v, "coronal": lambda v: v.permute(2, 1, 0, 3), "sagittal": lambda v: v.permute(3, 1, 0, 2)}
    out = {}
    for name, view in views.items():
        a, r = view(x), view(ref)
        keep = (r > threshold).flatten(1).double().mean(1) >= min_content
        if not keep.any():
            raise ValueError(f"no {name} plane of the reference has content above {threshold}")
        out[name] = (float(psnr(a[keep], r[keep]).mean()), float(ssim(a[keep], r[keep]).mean()))
    return out
