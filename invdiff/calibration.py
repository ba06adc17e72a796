"""Split-conformal calibration of posterior standard-deviation maps.

A sampling solver's per-pixel std ``ŝ`` around its posterior mean ``m̂`` is read as "the
truth is probably within ``m̂ ± k ŝ``". For an exact Gaussian posterior that holds with the
Student-t multiplier of :func:`invdiff.metrics.std_multiplier`; for an approximate sampler and a
learned prior it usually does not (the maps are overconfident). Split-conformal prediction
(Vovk et al., *Algorithmic Learning in a Random World*, 2005; Angelopoulos & Bates, "A gentle
introduction to conformal prediction", 2021) rescales the map from a held-out calibration set:

.. math::
    s_j = |x_j − \\hat m_j| / \\hat s_j \\quad\\text{(every counted pixel } j
    \\text{ of every calibration image)},\\qquad
    q_p = s_{(\\lceil (n+1)p \\rceil)},\\qquad
    C_p(j) = [\\hat m_j − q_p \\hat s_j,\\ \\hat m_j + q_p \\hat s_j].

=================  ===========================================================
code               meaning
=================  ===========================================================
``levels``         nominal coverages ``p`` at which ``q_p`` is stored
``factors``        ``q_p``: the conformal quantiles of the scores ``s_j``
``num_samples``    ``S``, samples behind each ``ŝ`` (a factor is valid for that ``S`` only)
``images``         calibration images (the problem's validation split)
``pixels``         ``n``: scores pooled over those images
``steps``          solver steps of the calibration runs (``None``: not recorded)
=================  ===========================================================

**What it guarantees.** If a new image and its reconstruction are drawn like the calibration
images (same problem, same solver and settings, images exchangeable with the validation
split), the expected fraction of its counted pixels inside ``C_p`` is about ``p``: coverage
is *marginal* — averaged over pixels and over images — not per pixel (some regions, such as
edges, are under-covered and others over-covered) and not for every image. The pixels of an
image are not exchangeable with each other, so the finite-sample bound of split conformal
holds over images, and with few calibration images the realised coverage of one test image
scatters around ``p``. **Where it breaks:** images unlike the calibration set (another
scanner, anatomy or kind of photograph; a prior applied out of its training distribution)
carry no guarantee — ``benchmarks/uncertainty.md`` shows how far coverage moves on the
real-data problems.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .metrics import LEVELS, check_level, scores, std_multiplier

__all__ = ["Calibration", "fit_conformal", "Interval"]


@dataclass(frozen=True)
class Interval:
    """Per-pixel interval ``[lower, upper]`` at nominal coverage ``level``; ``calibrated`` says whether
    the half-width came from a conformal calibration (else from the Gaussian/Student-t rule)."""

    lower: torch.Tensor
    upper: torch.Tensor
    level: float
    calibrated: bool


@dataclass(frozen=True)
class Calibration:
    """Conformal factors ``q_p`` of one (problem, solver, number of samples); see the module docstring."""

    levels: tuple
    factors: tuple
    num_samples: int
    images: int
    pixels: int
    source: str = ""
    steps: int | None = None

    def __post_init__(self):
        if len(self.levels) != len(self.factors) or not self.levels:
            raise ValueError(f"levels and factors must be non-empty and of one length, got {len(self.levels)} "
                             f"and {len(self.factors)}")
        if list(self.levels) != sorted(self.levels) or any(not 0 < p < 1 for p in self.levels):
            raise ValueError(f"levels must increase within (0, 1), got {self.levels}")
        if any(not (f >= 0) for f in self.factors) or list(self.factors) != sorted(self.factors):
            raise ValueError(f"factors must be >= 0 and non-decreasing with the level, got {self.factors}")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 2:
            raise ValueError(f"num_samples must be an integer >= 2, got {self.num_samples!r}")

    def factor(self, level: float) -> float:
        """``q_p`` at ``level``: a stored level, or linear interpolation between the two around it."""
        level = check_level(level)
        lv, fc = self.levels, self.factors
        if not lv[0] <= level <= lv[-1]:
            raise ValueError(f"this calibration covers levels {lv[0]:g} to {lv[-1]:g}, got {level:g}")
        for i in range(len(lv) - 1):
            if lv[i] <= level <= lv[i + 1]:
                w = 0.0 if lv[i + 1] == lv[i] else (level - lv[i]) / (lv[i + 1] - lv[i])
                return fc[i] + w * (fc[i + 1] - fc[i])
        return fc[-1]

    def scale(self, level: float = 0.95) -> float:
        """How much wider the calibrated interval is than the Gaussian one for ``num_samples``:
        ``q_p / std_multiplier(p, S)`` (> 1: the raw map is overconfident)."""
        return self.factor(level) / std_multiplier(level, self.num_samples)

    def interval(self, x_hat: torch.Tensor, std: torch.Tensor, level: float = 0.95) -> Interval:
        """``x_hat ± q_p std``: the calibrated interval at ``level``."""
        q = self.factor(level)
        return Interval(x_hat - q * std, x_hat + q * std, float(level), True)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        try:
            return cls(levels=tuple(float(v) for v in d["levels"]), factors=tuple(float(v) for v in d["factors"]),
                       num_samples=int(d["num_samples"]), images=int(d["images"]), pixels=int(d["pixels"]),
                       source=str(d.get("source", "")),
                       steps=None if d.get("steps") is None else int(d["steps"]))
        except KeyError as err:
            raise ValueError(f"a stored calibration lacks the field {err}") from None


def fit_conformal(x_hat: torch.Tensor, std: torch.Tensor, truth: torch.Tensor, num_samples: int, *,
                  mask: torch.Tensor | None = None, levels=LEVELS, source: str = "",
                  steps: int | None = None) -> Calibration:
    """Fit the conformal factors on calibration images (a problem's validation split, never its test split).

    Parameters
    ----------
    x_hat, std, truth : tensor (B, C, H, W)
        Posterior mean, posterior std (from ``num_samples`` samples) and ground truth of the
        ``B`` calibration images.
    num_samples : int
        Samples behind ``std``; the factors are valid for that number only.
    mask : bool tensor, optional
        Pixels to calibrate on (e.g. inside the body); all by default.
    levels : sequence of float
        Nominal coverages at which ``q_p`` is stored.
    source : str
        Where the calibration images came from (kept with the factors).
    steps : int, optional
        Solver steps of the runs (kept with the factors).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"a std map needs num_samples >= 2 samples, got {num_samples!r}")
    levels = sorted(check_level(p) for p in levels)
    if not levels:
        raise ValueError("levels must hold at least one coverage level")
    if not isinstance(x_hat, torch.Tensor) or x_hat.ndim < 1 or x_hat.shape[0] == 0:
        raise ValueError("the calibration set holds no image")
    s = torch.sort(scores(x_hat, std, truth, mask)).values
    n = s.numel()
    if n == 0:
        raise ValueError("the calibration set holds no counted pixel")
    # split-conformal quantile: the ceil((n + 1) p)-th smallest score (infinite past the last)
    ranks = [math.ceil((n + 1) * p) for p in levels]
    factors = tuple(float(s[r - 1]) if r <= n else math.inf for r in ranks)
    return Calibration(tuple(levels), factors, num_samples, int(x_hat.shape[0]), n, source, steps)
