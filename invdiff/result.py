"""The :class:`Result` of :func:`invdiff.solve`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Result"]


@dataclass
class Result:
    """Reconstruction and bookkeeping of one :func:`invdiff.solve` call.

    Attributes
    ----------
    x_hat : tensor (B, C, H, W)
        Point estimate: the mean over samples (or weighted particles).
    samples : tensor (num_samples, B, C, H, W) or None
        Posterior samples, where the solver produces them.
    std : tensor (B, C, H, W) or None
        Per-pixel standard deviation over ``samples`` (an uncertainty map) when there are at
        least two.
    trace : dict of str to tensor
        Per-step records named in ``record`` (e.g. ``residual`` of shape ``(steps, B)``).
    nfe : int
        Network (denoiser) calls; a batched call over particles or samples counts once.
    vjp : int
        Vector–Jacobian products through the network.
    seconds : float
        Wall time of the loop.
    peak_memory_mb : float
        Peak accelerator memory (CUDA) or growth of the process's peak resident memory (CPU).
    """

    x_hat: torch.Tensor
    samples: torch.Tensor | None = None
    std: torch.Tensor | None = None
    trace: dict = field(default_factory=dict)
    nfe: int = 0
    vjp: int = 0
    seconds: float = 0.0
    peak_memory_mb: float = 0.0

    def metrics(self, x_true: torch.Tensor) -> dict:
        """PSNR, SSIM and NRMSE of ``x_hat`` (clipped to [0, 1]) against ``x_true``, per image."""
        from .metrics import nrmse, psnr, ssim

        x = self.x_hat.clamp(0, 1)
        return {"psnr": psnr(x, x_true), "ssim": ssim(x, x_true), "nrmse": nrmse(x, x_true)}
