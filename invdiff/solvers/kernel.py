"""The reverse kernel shared by the ancestral solvers: one DDIM(η) step in the VE form.

Song, Meng, Ermon, "Denoising Diffusion Implicit Models" (ICLR 2021), written for
``x_σ = x0 + σ ε`` (Karras et al. 2022, Sec. 3; k-diffusion's ancestral step):

.. math::
    σ_{up} = \\min\\big(σ',\\ η\\,σ'\\sqrt{(σ^2 - σ'^2)/σ^2}\\big),\\qquad
    σ_{down} = \\sqrt{σ'^2 - σ_{up}^2},

    x' = b + σ_{down}\\,\\frac{x - \\hat x_0}{σ} + s + σ_{up}\\,z,\\qquad z \\sim N(0, I),

with ``b = x̂0`` (DDIM; MBIR passes its data-consistent estimate) and an optional shift ``s``
(ΠGDM's and SMC's guidance). DDIM, DPS, ΠGDM, SMC and MBIR all step with
:func:`ancestral_step`; nothing else re-inlines the formula.

==============  ======================================
code            paper
==============  ======================================
``x``           :math:`x_t / \\sqrt{\\bar α_t}`
``x0``          :math:`\\hat x_0`
``base``        :math:`b` (default :math:`\\hat x_0`)
``shift``       :math:`s`
``eta``         :math:`η`
==============  ======================================
"""

from __future__ import annotations

import math

import torch

from ..devices import randn

__all__ = ["ancestral_sigmas", "ancestral_step", "noise_like"]


def noise_like(x: torch.Tensor, generator: torch.Generator | None = None, shape=None) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (or ``shape``) in ``x``'s dtype and on its device, drawn
    from ``generator`` on the generator's own device (:func:`invdiff.devices.randn`)."""
    return randn(x.shape if shape is None else shape, generator=generator, dtype=x.dtype, device=x.device)


def ancestral_sigmas(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """``(σ_down, σ_up)`` of a DDIM(η) step from ``sigma`` to ``sigma_next``."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * sigma_next * math.sqrt(max(sigma**2 - sigma_next**2, 0.0)) / sigma)
    return math.sqrt(sigma_next**2 - up**2), up


def ancestral_step(x: torch.Tensor, x0: torch.Tensor, sigma: float, sigma_next: float, eta: float,
                   generator: torch.Generator | None = None, *, base: torch.Tensor | None = None,
                   shift: torch.Tensor | None = None, noise: bool = True) -> torch.Tensor:
    """``x' = b + σ_down (x − x̂0)/σ + s + σ_up z`` (module docstring); ``noise=False`` leaves out
    ``σ_up z`` (the kernel's mean, for importance weights or a data step before re-noising)."""
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    out = (x0 if base is None else base) + down * (x - x0) / sigma
    if shift is not None:
        out = out + shift
    if noise and up > 0:
        out = out + up * noise_like(x, generator)
    return out
