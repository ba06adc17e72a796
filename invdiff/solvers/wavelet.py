"""Wavelet-ℓ1 reconstruction: the classical compressed-sensing baseline of CT and MRI.

Solves

.. math::
    \\min_x \\; F(x) = \\tfrac12 \\|A x - y\\|_2^2 + λ \\|W_d x\\|_1 + ι_{[lo, hi]}(x)

with ``W`` an orthonormal 2D discrete wavelet transform (per image and channel, periodic
boundary) and ``W_d`` its detail coefficients (the approximation band is not penalised), by the
monotone fast iterative shrinkage-thresholding algorithm (MFISTA; Beck & Teboulle 2009,
"A fast iterative shrinkage-thresholding algorithm for linear inverse problems", SIAM J.
Imaging Sci. 2(1), and its monotone variant in Beck & Teboulle 2009, "Fast gradient-based
algorithms for constrained total variation image denoising and deblurring problems", IEEE
TIP 18(11)). The compressed-sensing reading of this problem for MRI is Lustig, Donoho & Pauly
(2007), "Sparse MRI", MRM 58(6).

The wavelet transforms are PyWavelets' ``wavedec2``/``waverec2`` with ``mode="periodization"``
(orthonormal for orthogonal wavelets when ``H`` and ``W`` are divisible by ``2**levels``;
deepinv's own :class:`deepinv.models.WaveletDenoiser` needs the ``ptwt`` package, which invdiff
does not depend on).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..operators.checks import operator_norm
from ..problem import Problem, check_finite
from ..validation import positive_int, real_number
from .baselines import SIGMA_FLOOR
from .bm3d import initial_estimate

__all__ = ["wavelet_l1", "wavelet_l1_objective", "wavelet_weight", "WAVELET_SCALE"]

WAVELET_SCALE = 0.1
"""Laplace scale ``b`` of the detail coefficients in the default weight ``λ = σ_y² / b = 10 σ_y²``.

On the named problems' validation images the best weight ranged over ``1 … 30 σ_y²`` (CT
sparse-view 10–30, limited angle 3, deblurring 3–10, inpainting, MRI and super-resolution
1–3); ``10 σ_y²`` suits the CT/MRI field this baseline stands for, and the benchmark tunes it
over ``1 … 300 σ_y²``.
"""


def wavelet_weight(sigma_y: float) -> float:
    """Default weight ``λ = max(σ_y, 1e-3)² / b`` with ``b = WAVELET_SCALE = 0.1``.

    The MAP reading of the ℓ1 term: wavelet detail coefficients Laplace-distributed with scale
    ``b`` under Gaussian noise ``σ_y`` and the ½-scaled data term (the rule of the ``tv``
    baseline, :func:`invdiff.solvers.baselines.default_weight`); the floor keeps noiseless
    problems regularised.
    """
    return max(float(sigma_y), SIGMA_FLOOR) ** 2 / WAVELET_SCALE


def _check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)):
        raise TypeError(f"levels must be an integer >= 1, got {levels!r}")
    if levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels}")
    return int(levels)


class _Orthowavelet:
    """The orthonormal 2D DWT of ``(B, C, H, W)`` tensors as a coefficient image of the same shape."""

    def __init__(self, wavelet: str, levels: int, img_shape: tuple):
        import pywt

        if not isinstance(wavelet, str):
            raise TypeError(f"wavelet must be a PyWavelets name such as 'db4', got {wavelet!r}")
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"unknown wavelet {wavelet!r}; use an orthogonal PyWavelets wavelet such as "
                             f"'haar', 'db4', 'sym8' or 'coif2'")
        if not pywt.Wavelet(wavelet).orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal (its soft-thresholding is then not the "
                             f"proximal operator of the ℓ1 term); use e.g. 'haar', 'db4', 'sym8', 'coif2'")
        levels = _check_levels(levels)
        h, w = img_shape[-2:]
        if h % 2**levels or w % 2**levels:
            raise ValueError(f"levels={levels} needs image sides divisible by 2**levels = {2**levels}, got "
                             f"({h}, {w}); use fewer levels")
        self.pywt, self.wavelet, self.levels = pywt, wavelet, levels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "level too high": periodization stays orthonormal
            coeffs = pywt.wavedec2(np.zeros((1, 1, h, w)), wavelet, mode="periodization", level=levels,
                                   axes=(-2, -1))
        _, self.slices = pywt.coeffs_to_array(coeffs, axes=(-2, -1))
        self.slices[0] = (slice(None), slice(None)) + tuple(self.slices[0][-2:])  # any batch and channels
        approx = np.zeros((h, w), dtype=bool)
        approx[self.slices[0][-2:]] = True
        self.detail = torch.from_numpy(~approx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            coeffs = self.pywt.wavedec2(x.detach().cpu().numpy(), self.wavelet, mode="periodization",
                                        level=self.levels, axes=(-2, -1))
        arr, _ = self.pywt.coeffs_to_array(coeffs, axes=(-2, -1))
        return torch.from_numpy(np.ascontiguousarray(arr)).to(device=x.device, dtype=x.dtype)

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        coeffs = self.pywt.array_to_coeffs(a.detach().cpu().numpy(), self.slices, output_format="wavedec2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            x = self.pywt.waverec2(coeffs, self.wavelet, mode="periodization", axes=(-2, -1))
        return torch.from_numpy(np.ascontiguousarray(x)).to(device=a.device, dtype=a.dtype)

    def l1(self, x: torch.Tensor) -> torch.Tensor:
        """``‖W_d x‖₁`` per batch element."""
        return (self.forward(x).abs() * self.detail.to(x.device)).flatten(1).sum(1)

    def shrink(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        """``Wᵀ soft(W x, τ)`` on the detail coefficients: the proximal map of ``τ ‖W_d ·‖₁``."""
        a = self.forward(x)
        soft = a.sign() * (a.abs() - tau).clamp_min(0)
        return self.inverse(torch.where(self.detail.to(a.device), soft, a))


def _check_box(box):
    if box is None:
        return None
    try:
        lo, hi = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be None or (lo, hi) with lo < hi, got {box!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"box must be None or finite (lo, hi) with lo < hi, got {box!r}")
    return lo, hi


def wavelet_l1_objective(problem: Problem, x: torch.Tensor, lam: float | None = None, *, wavelet: str = "db4",
                         levels: int = 3) -> torch.Tensor:
    """``F(x) = ½‖A x − y‖² + λ ‖W_d x‖₁`` per batch element (the box is not checked), shape ``(B,)``."""
    lam = wavelet_weight(problem.sigma_y) if lam is None else real_number(lam, "lam", low=0.0)
    W = _Orthowavelet(wavelet, levels, tuple(x.shape[1:]))
    with torch.no_grad():
        r = problem.physics.A(x) - problem.y
        return 0.5 * r.pow(2).flatten(1).sum(1) + lam * W.l1(x)


def wavelet_l1(problem: Problem, lam: float | None = None, *, wavelet: str = "db4", levels: int = 3,
               iters: int = 200, box: tuple | None = (0.0, 1.0), prox_iters: int = 5,
               x0: torch.Tensor | None = None) -> torch.Tensor:
    """Wavelet-ℓ1 reconstruction by monotone FISTA.

    Solves

    .. math::
        \\min_x \\tfrac12 \\|A x - y\\|_2^2 + λ \\|W_d x\\|_1 \\quad \\text{s.t. } x \\in [lo, hi]

    where ``W`` is the orthonormal wavelet transform (``wavelet``, ``levels`` scales,
    periodic boundary, per image and channel) and ``W_d`` keeps its detail coefficients (the
    approximation band is unpenalised). MFISTA (Beck & Teboulle 2009) with step ``1/L``,
    ``L = ‖A‖²`` by power iteration:

    .. math::
        z_k &= \\operatorname{prox}_{g/L}\\big(v_k - \\tfrac1L Aᵀ(A v_k - y)\\big), \\quad
        x_k = \\operatorname{argmin}_{u \\in \\{z_k, x_{k-1}\\}} F(u) \\\\
        t_{k+1} &= \\tfrac12\\big(1 + \\sqrt{1 + 4 t_k^2}\\big), \\quad
        v_{k+1} = x_k + \\tfrac{t_k}{t_{k+1}}(z_k - x_k) + \\tfrac{t_k - 1}{t_{k+1}}(x_k - x_{k-1})

    so ``F(x_k)`` never increases (per image). Without a box, ``prox_{g/L}`` is exact:
    soft-thresholding of the detail coefficients by ``λ/L`` (``W`` is orthonormal). With a box,
    ``g = λ‖W_d·‖₁ + ι_box`` has no closed-form prox; it is computed by ``prox_iters``
    iterations of the Dykstra-like proximal algorithm (Bauschke & Combettes 2008, "A
    Dykstra-like algorithm for two monotone operators", Pacific J. Optim. 4(3)), alternating the
    soft-thresholding and the projection, which converges to the exact prox as ``prox_iters``
    grows; the iterate is always in the box (the projection comes last). ``prox_iters = 0`` is
    the cheaper approximation "threshold, then project". Measured at ``λ = 100 σ_y²`` after 200
    iterations: the objective exceeds the converged one by 1–4 % with ``prox_iters = 0`` and by
    0.2–1 % with the default 5 (sparse-view CT, Gaussian deblurring); the PSNR differs by
    < 0.1 dB.

    Parameters
    ----------
    problem : Problem
        ``A`` (any linear operator with an adjoint), ``y`` and ``sigma_y``.
    lam : float, optional
        ``λ >= 0``; default :func:`wavelet_weight` ``= max(σ_y, 1e-3)² / 0.1``.
    wavelet : str
        An orthogonal PyWavelets wavelet (``"haar"``, ``"db4"``, ``"sym8"``, ``"coif2"`` …).
    levels : int
        Number of scales; ``H`` and ``W`` must be divisible by ``2**levels``.
    iters : int
        MFISTA iterations (``>= 1``).
    box : (float, float) or None
        Intensity constraint ``[lo, hi]``; ``None`` drops it.
    prox_iters : int
        Inner iterations of the prox with a box (``>= 0``, see above; each costs one wavelet
        transform pair).
    x0 : torch.Tensor, optional
        Start, projected onto the box (default
        :func:`~invdiff.solvers.bm3d.initial_estimate`: ``A†y`` — FBP for CT, zero-filled MRI —,
        ``y`` for blur, a smooth fill of inpainting holes, which FISTA fills only slowly).
        Not modified.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)``. Deterministic; batch elements are independent; inputs are not modified.
        Time: a 256×256 RGB deblurring, 200 iterations, about 7 s on one CPU core.
    """
    lam = wavelet_weight(problem.sigma_y) if lam is None else real_number(lam, "lam", low=0.0)
    iters = positive_int(iters, "iters", 1)
    prox_iters = positive_int(prox_iters, "prox_iters", 0)
    box = _check_box(box)
    A, y = problem.physics, problem.y
    shape = (y.shape[0],) + tuple(problem.img_shape)
    W = _Orthowavelet(wavelet, levels, shape)
    L = operator_norm(A, (1,) + shape[1:], iters=30, dtype=y.dtype, device=y.device,
                      generator=torch.Generator().manual_seed(0)) ** 2
    L = max(L * 1.01, 1e-12)  # a little margin on the power-iteration estimate
    tau = lam / L

    def prox(u):
        if box is None:
            return W.shrink(u, tau)
        if prox_iters == 0:
            return W.shrink(u, tau).clamp(*box)
        x, p, q = u, torch.zeros_like(u), torch.zeros_like(u)
        for _ in range(prox_iters):  # Dykstra-like: x -> prox of (τ‖W_d·‖₁ + ι_box) at u
            s = W.shrink(x + p, tau)
            p = x + p - s
            x = (s + q).clamp(*box)
            q = s + q - x
        return x

    def objective(ax, x):
        return 0.5 * (ax - y).pow(2).flatten(1).sum(1) + lam * W.l1(x)

    def per_image(mask):
        return mask.view((-1,) + (1,) * (len(shape) - 1))

    with torch.no_grad():
        if x0 is None:
            x = initial_estimate(problem)
        else:
            if tuple(x0.shape) != shape:
                raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected {shape}")
            x = check_finite(x0, "x0").detach().clone()
        if box is not None:
            x = x.clamp(*box)
        x = x.to(y.dtype)
        ax = A.A(x)
        fx = objective(ax, x)
        v, av, t = x, ax, 1.0
        for _ in range(iters):
            z = prox(v - A.A_adjoint(av - y) / L)
            az = A.A(z)
            fz = objective(az, z)
            better = fz <= fx
            x_new = torch.where(per_image(better), z, x)
            ax_new = torch.where(per_image(better).view((-1,) + (1,) * (ax.dim() - 1)), az, ax)
            fx = torch.where(better, fz, fx)
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            v = x_new + (t / t_new) * (z - x_new) + ((t - 1) / t_new) * (x_new - x)
            av = ax_new + (t / t_new) * (az - ax_new) + ((t - 1) / t_new) * (ax_new - ax)
            x, ax, t = x_new, ax_new, t_new
    return x
