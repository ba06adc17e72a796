"""Noise schedules as plain descending tensors of ``sigma`` (VE form, [0, 1] units), ending in 0.

All return ``steps + 1`` values: ``steps`` positive noise levels in decreasing order, then 0.
"""

from __future__ import annotations

import math

import torch

__all__ = ["karras", "geometric", "vp_linear", "vp_cosine", "vp_sigmas", "ddpm_sigmas", "ddpm_quad_sigmas",
           "SCHEDULES", "RANGE_SCHEDULES"]


def _check(steps, sigma_min, sigma_max):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not (0 < sigma_min <= sigma_max) or not math.isfinite(sigma_max):
        raise ValueError(f"need 0 < sigma_min <= sigma_max < inf, got {sigma_min!r}, {sigma_max!r}")


def _append_zero(s: torch.Tensor) -> torch.Tensor:
    return torch.cat([s, s.new_zeros(1)])


def karras(steps: int, sigma_min: float = 0.002, sigma_max: float = 40.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: ``σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``."""
    _check(steps, sigma_min, sigma_max)
    if steps == 1:
        return _append_zero(torch.tensor([sigma_max], dtype=torch.float64))
    i = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    s = (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return _append_zero(s)


def geometric(steps: int, sigma_min: float = 0.002, sigma_max: float = 40.0) -> torch.Tensor:
    """Log-uniform (geometric) spacing from ``sigma_max`` to ``sigma_min`` (the VE-SDE grid of Song et al. 2021)."""
    _check(steps, sigma_min, sigma_max)
    if steps == 1:
        return _append_zero(torch.tensor([sigma_max], dtype=torch.float64))
    return _append_zero(torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps,
                                                 dtype=torch.float64)))


def vp_sigmas(alphas_cumprod: torch.Tensor, *, scale: float = 0.5) -> torch.Tensor:
    """VE noise levels ``σ_t = scale · sqrt((1 − ᾱ_t) / ᾱ_t)`` of a VP model, ascending in t.

    ``scale = 0.5`` converts a model trained on [−1, 1] data to invdiff's [0, 1] units.
    """
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return scale * torch.sqrt((1 - a) / a)


def _vp_from_alphas(alphas_cumprod, steps, scale):
    s = vp_sigmas(alphas_cumprod, scale=scale)
    idx = torch.linspace(len(s) - 1, 0, steps, dtype=torch.float64).round().long()
    return _append_zero(s[idx])


def vp_linear(steps: int, *, beta_min: float = 1e-4, beta_max: float = 0.02, timesteps: int = 1000,
              scale: float = 0.5) -> torch.Tensor:
    """DDPM linear β schedule (Ho et al. 2020), ``steps`` evenly spaced timesteps, as VE sigmas."""
    _check(steps, 1.0, 1.0)
    betas = torch.linspace(beta_min, beta_max, timesteps, dtype=torch.float64)
    return _vp_from_alphas(torch.cumprod(1 - betas, 0), steps, scale)


def vp_cosine(steps: int, *, s: float = 0.008, timesteps: int = 1000, scale: float = 0.5) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021), β clipped at 0.999, as VE sigmas."""
    _check(steps, 1.0, 1.0)
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return _vp_from_alphas(torch.cumprod(1 - betas, 0), steps, scale)


def _ddpm_levels(sigma_max: float, timesteps: int) -> torch.Tensor:
    """The DDPM linear-β noise levels a prior covers (``<= sigma_max``), ascending in t."""
    betas = torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
    s = vp_sigmas(torch.cumprod(1 - betas, 0))
    return s[s <= sigma_max]


def ddpm_sigmas(steps: int, sigma_min: float, sigma_max: float, *, timesteps: int = 1000) -> torch.Tensor:
    """``steps`` evenly spaced timesteps of the DDPM linear-β schedule (the grid of DPS and RED-Diff),
    keeping only the noise levels a prior covers (``<= sigma_max``, clamped below at ``sigma_min``), then 0."""
    _check(steps, sigma_min, sigma_max)
    s = _ddpm_levels(sigma_max, timesteps)
    idx = torch.linspace(len(s) - 1, 0, steps, dtype=torch.float64).round().long()
    return _append_zero(s[idx].clamp_min(sigma_min))


def ddpm_quad_sigmas(steps: int, sigma_min: float, sigma_max: float, *, timesteps: int = 1000) -> torch.Tensor:
    """``steps`` timesteps of the DDPM linear-β schedule in DiffPIR's quadratic spacing, then 0.

    Of the ``L`` timesteps whose noise level a prior covers (``<= sigma_max``), step ``i`` of
    ``N`` takes ``t_i = L − 1 − ⌊sqrt(i/(N−1)) · L⌋`` (the last one ``t = 0``): wide strides at high
    noise, dense ones near the end, where the data step and the denoiser settle the detail. This
    is the ``skip_type = 'quad'`` of DiffPIR's official scripts (Zhu et al. 2023, deblurring,
    super-resolution and inpainting alike) and of deepinv's ``DiffPIR``. Noise levels are clamped
    below at ``sigma_min``; more steps than ``L/2`` repeat levels at the low end.
    """
    _check(steps, sigma_min, sigma_max)
    s = _ddpm_levels(sigma_max, timesteps)
    n = len(s)
    j = torch.sqrt(torch.linspace(0, n**2, steps, dtype=torch.float64)).floor().long().clamp(max=n - 1)
    return _append_zero(s[(n - 1) - j].clamp_min(sigma_min))


SCHEDULES = {"karras": karras, "geometric": geometric, "vp_linear": vp_linear, "vp_cosine": vp_cosine}

#: Schedules over a prior's noise range, ``f(steps, sigma_min, sigma_max)``; a solver's
#: ``schedule`` attribute names the one it uses by default.
RANGE_SCHEDULES = {"karras": karras, "geometric": geometric, "ddpm": ddpm_sigmas, "ddpm_quad": ddpm_quad_sigmas}
