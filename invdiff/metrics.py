"""Image quality metrics on batches ``(B, C, H, W)`` in [0, 1]; each returns a ``(B,)`` tensor."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["psnr", "ssim", "nrmse", "METRICS"]


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
