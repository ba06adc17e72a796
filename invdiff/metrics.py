"""Image quality metrics on batches ``(B, C, H, W)`` in [0, 1]; each returns a ``(B,)`` tensor.

Also the calibration of uncertainty maps: :func:`coverage` (the fraction of pixels whose truth
lies within ``k`` standard deviations of the estimate), :func:`calibration_curve` (observed
against nominal coverage over a range of levels, with the interval widths) and
:func:`std_multiplier` (the ``k`` a Gaussian posterior calls for at a level, with or without the
finite-sample correction for a mean and a standard deviation estimated from ``S`` samples).
"""

from __future__ import annotations

import numpy as np
import torch

from .devices import randn

__all__ = ["psnr", "ssim", "nrmse", "sliced_wasserstein", "plane_metrics", "METRICS", "std_multiplier", "coverage",
           "calibration_curve", "scores", "nominal_coverage", "check_level", "LEVELS"]


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
    theta = randn((a.shape[1], projections), generator=generator, dtype=torch.float64, device=a.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    n = max(a.shape[0], b.shape[0])
    levels = (torch.arange(n, dtype=torch.float64, device=a.device) + 0.5) / n
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


#: nominal coverage levels of :func:`calibration_curve` (and of the conformal factors stored per
#: problem): 0.6827 and 0.9545 are the Gaussian ±1 and ±2 std levels
LEVELS = (0.5, 0.6, 0.6827, 0.7, 0.8, 0.9, 0.95, 0.9545, 0.975, 0.99)


def check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"a coverage level must be a number in (0, 1), got {level!r}")
    return float(level)


def std_multiplier(level: float, num_samples: int | None = None) -> float:
    """Half-width ``k``, in standard deviations, of the central interval holding ``level``.

    For a Gaussian posterior with known mean and std this is the normal quantile
    ``k = Φ⁻¹((1 + level)/2)`` (1.96 at 0.95). When the mean ``m̂`` and the std ``ŝ`` are
    themselves estimated from ``S = num_samples`` independent posterior draws and the truth is
    another independent draw, ``(x − m̂) / (ŝ √(1 + 1/S)) ~ t_{S−1}`` (Student's t), so the
    exact interval is ``m̂ ± k ŝ`` with ``k = t_{S−1}((1 + level)/2) √(1 + 1/S)`` — e.g. 2.52 at
    0.95 for ``S = 8`` instead of 1.96 (the predictive interval of a normal sample).
    """
    from scipy import stats

    level = check_level(level)
    q = (1 + level) / 2
    if num_samples is None:
        return float(stats.norm.ppf(q))
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"a standard deviation needs num_samples >= 2 samples, got {num_samples!r}")
    return float(stats.t.ppf(q, num_samples - 1) * (1 + 1 / num_samples) ** 0.5)


def nominal_coverage(k: float, num_samples: int | None = None) -> float:
    """Coverage of ``x_hat ± k std`` for an exact Gaussian posterior: the inverse of
    :func:`std_multiplier` (``2Φ(k) − 1``, or with ``S`` samples ``2 F_{t,S−1}(k / √(1 + 1/S)) − 1``);
    e.g. 0.9545 at ``k = 2``, but 0.899 when the mean and std come from 8 samples."""
    from scipy import stats

    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0:
        raise ValueError(f"k (the half-width in standard deviations) must be a positive number, got {k!r}")
    if num_samples is None:
        return float(2 * stats.norm.cdf(k) - 1)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"a standard deviation needs num_samples >= 2 samples, got {num_samples!r}")
    return float(2 * stats.t.cdf(k / (1 + 1 / num_samples) ** 0.5, num_samples - 1) - 1)


def _uq_inputs(x_hat, std, truth, mask):
    """Shapes and values of an estimate, its std map, the truth and an optional pixel mask."""
    for name, t in (("x_hat", x_hat), ("std", std), ("truth", truth)):
        if not isinstance(t, torch.Tensor):
            hint = " (a std map needs at least 2 posterior samples)" if name == "std" and t is None else ""
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}{hint}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf")
    if not (x_hat.shape == std.shape == truth.shape):
        raise ValueError(f"x_hat, std and truth must have one shape, got {tuple(x_hat.shape)}, {tuple(std.shape)} and "
                         f"{tuple(truth.shape)}")
    if (std < 0).any():
        raise ValueError("std holds negative values; a standard deviation is >= 0")
    if mask is None:
        mask = torch.ones_like(truth, dtype=torch.bool)
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
        try:
            mask = mask.expand_as(truth)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the images' "
                             f"{tuple(truth.shape)}") from None
    return x_hat.detach().double(), std.detach().double(), truth.detach().double(), mask


def scores(x_hat: torch.Tensor, std: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None
           ) -> torch.Tensor:
    """Standardised errors ``|truth − x_hat| / std`` of the pixels in ``mask`` (all by default), flat.

    A pixel with ``std = 0`` scores 0 when its error is 0 and ``inf`` otherwise (no finite
    interval around it holds the truth). These are the nonconformity scores of split-conformal
    calibration (:mod:`invdiff.calibration`).
    """
    x_hat, std, truth, mask = _uq_inputs(x_hat, std, truth, mask)
    err = (truth - x_hat).abs()
    s = torch.where(err == 0, torch.zeros_like(err), err / std)  # err > 0 and std = 0 give inf
    return s[mask]


def coverage(x_hat: torch.Tensor, std: torch.Tensor, truth: torch.Tensor, k: float,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of pixels, per image, whose truth lies in ``[x_hat − k std, x_hat + k std]``.

    Tensors are ``(B, C, H, W)`` (or any shape whose first axis is the image); ``mask``
    (boolean, broadcastable) restricts the count to some pixels, e.g. those inside the body.
    Returns a ``(B,)`` float64 tensor.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0:
        raise ValueError(f"k (the half-width in standard deviations) must be a positive number, got {k!r}")
    x_hat, std, truth, mask = _uq_inputs(x_hat, std, truth, mask)
    inside = ((truth - x_hat).abs() <= k * std) & mask
    counted = mask.flatten(1).sum(1)
    if (counted == 0).any():
        raise ValueError("the mask leaves an image with no pixel to count")
    return inside.flatten(1).sum(1).double() / counted


def calibration_curve(x_hat: torch.Tensor, std: torch.Tensor, truth: torch.Tensor, levels=LEVELS, *,
                      num_samples: int | None = None, mask: torch.Tensor | None = None) -> dict:
    """Observed against nominal coverage of the intervals ``x_hat ± k std`` over ``levels``.

    For each nominal level ``p`` the half-width is ``k = std_multiplier(p, num_samples)`` (the
    exact Gaussian interval; with ``num_samples`` its finite-sample form) and the observed
    coverage is the fraction of all counted pixels of all images inside it. A calibrated map
    gives ``observed ≈ level``; below it, the map is overconfident. Returns
    ``{"level", "k", "observed", "width"}`` (lists; ``width`` is the mean interval width
    ``2 k std`` over the counted pixels, in intensity units).
    """
    levels = [check_level(p) for p in levels]
    if not levels:
        raise ValueError("levels must hold at least one coverage level")
    x_hat, std, truth, mask = _uq_inputs(x_hat, std, truth, mask)
    if not mask.any():
        raise ValueError("the mask leaves no pixel to count")
    err, sd = (truth - x_hat).abs()[mask], std[mask]
    out = {"level": levels, "k": [], "observed": [], "width": []}
    for p in levels:
        k = std_multiplier(p, num_samples)
        out["k"].append(k)
        out["observed"].append(float((err <= k * sd).double().mean()))
        out["width"].append(float(2 * k * sd.mean()))
    return out
