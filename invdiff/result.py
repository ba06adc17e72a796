"""The :class:`Result` of :func:`invdiff.solve`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    calibration : Calibration or None
        Conformal factors for ``std`` (:mod:`invdiff.calibration`), attached by
        :meth:`calibrated`; ``None``: the std map is raw.
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
    calibration: object = None

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

    def to(self, device) -> "Result":
        """A copy of this result with its tensors (``x_hat``, ``samples``, ``std``, the trace) on
        ``device``, e.g. ``"cpu"`` to save or plot a reconstruction made on a GPU; this result is
        left as it is."""
        def move(t):
            return t.to(device) if isinstance(t, torch.Tensor) else t

        return replace(self, x_hat=move(self.x_hat), samples=move(self.samples), std=move(self.std),
                       trace={k: move(v) for k, v in self.trace.items()})

    @property
    def num_samples(self) -> int:
        """Posterior samples behind ``x_hat`` and ``std`` (1 for a point-estimate solver)."""
        return 1 if self.samples is None else int(self.samples.shape[0])

    def _require_std(self, what: str) -> torch.Tensor:
        if self.std is None:
            raise ValueError(f"{what} needs a posterior std map, and this result has none: it needs at least 2 "
                             f"samples (num_samples >= 2) from a solver that yields samples (RED-Diff and the "
                             f"classical methods give a point estimate only)")
        return self.std

    def calibrated(self, calibration) -> "Result":
        """A copy of this result carrying ``calibration`` (:class:`invdiff.calibration.Calibration`),
        fitted for the same number of samples; this result is left as it is."""
        from .calibration import Calibration

        self._require_std("calibration")
        if not isinstance(calibration, Calibration):
            raise TypeError(f"calibration must be an invdiff.calibration.Calibration, got {type(calibration).__name__}")
        if calibration.num_samples != self.num_samples:
            raise ValueError(f"the calibration was fitted for std maps of {calibration.num_samples} samples, but this "
                             f"result has {self.num_samples}; a std map's spread depends on the number of samples, so "
                             f"solve with num_samples={calibration.num_samples} or fit a calibration for "
                             f"{self.num_samples}")
        return replace(self, calibration=calibration)

    def interval(self, level: float = 0.95):
        """Per-pixel interval ``x_hat ± k std`` meant to hold the truth with probability ``level``.

        With a calibration attached (:meth:`calibrated`) ``k`` is its conformal factor and the
        interval's coverage is the calibrated, *marginal* one (over pixels and images drawn like
        the calibration set; see :mod:`invdiff.calibration`). Without, ``k`` is the exact rule for
        a Gaussian posterior sampled exactly (:func:`invdiff.metrics.std_multiplier` with this
        result's number of samples), and ``Interval.calibrated`` is False: for approximate
        samplers such intervals usually cover less than ``level``.
        """
        from .calibration import Interval
        from .metrics import std_multiplier

        std = self._require_std("an interval")
        if self.calibration is not None:
            return self.calibration.interval(self.x_hat, std, level)
        k = std_multiplier(level, self.num_samples)
        return Interval(self.x_hat - k * std, self.x_hat + k * std, float(level), False)

    @property
    def calibrated_std(self) -> torch.Tensor | None:
        """The std map rescaled by the calibration's 95 % factor, so that ``x_hat ± 1.96 ·
        calibrated_std`` is the calibrated 95 % interval (``None`` without a calibration)."""
        if self.calibration is None or self.std is None:
            return None
        from .metrics import std_multiplier

        return self.std * (self.calibration.factor(0.95) / std_multiplier(0.95))
