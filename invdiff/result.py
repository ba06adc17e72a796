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
    network_seconds : float
        Time spent inside the network (forward calls and backward passes through it), so that
        ``seconds / network_seconds`` is the solver's overhead over its network calls.
    params : dict
        Hyperparameters of the run (the solver's fields, or a method's tuned values).
    """

    x_hat: torch.Tensor
    samples: torch.Tensor | None = None
    std: torch.Tensor | None = None
    trace: dict = field(default_factory=dict)
    nfe: int = 0
    vjp: int = 0
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    network_seconds: float = 0.0
    params: dict = field(default_factory=dict)

    def metrics(self, x_true: torch.Tensor) -> dict:
        """PSNR, SSIM and NRMSE of ``x_hat`` (clipped to [0, 1]) against ``x_true``, per image."""
        from .metrics import nrmse, psnr, ssim

        if not isinstance(x_true, torch.Tensor):
            raise TypeError(f"x_true must be a torch.Tensor of shape {tuple(self.x_hat.shape)}, got "
                            f"{type(x_true).__name__} (a problem without a known truth has no metrics)")
        if tuple(x_true.shape) != tuple(self.x_hat.shape):
            raise ValueError(f"x_true has shape {tuple(x_true.shape)}, but x_hat has {tuple(self.x_hat.shape)}")

        x = self.x_hat.clamp(0, 1)
        return {"psnr": psnr(x, x_true), "ssim": ssim(x, x_true), "nrmse": nrmse(x, x_true)}
