"""Blur operators ``y = k * x`` (convolution with a known kernel).

Boundary conditions
-------------------
``boundary="circular"`` (default): periodic convolution via FFT, deepinv's
:class:`~deepinv.physics.BlurFFT`. It is diagonalised by the DFT, so it is a
``DecomposablePhysics`` (exact SVD for DDRM/ΠGDM, exact pseudo-inverse and proximal step).
``boundary="reflect"``: deepinv's :class:`~deepinv.physics.Blur` with reflective padding (the
output has the image's size); no SVD, pseudo-inverse by an iterative solver.
"""

from __future__ import annotations

import math

import deepinv
import torch

from ._base import ShapeChecked, img_size_3d

__all__ = ["gaussian_blur", "motion_blur", "kernel_blur", "gaussian_kernel", "line_kernel"]


class _BlurFFT(ShapeChecked, deepinv.physics.BlurFFT):
    """deepinv operator with invdiff shape checks."""


class _BlurPadded(ShapeChecked, deepinv.physics.Blur):
    """deepinv operator with invdiff shape checks."""


def _check_kernel(kernel) -> torch.Tensor:
    k = torch.as_tensor(kernel, dtype=torch.float32)
    if k.ndim == 2:
        k = k[None, None]
    elif k.ndim == 3:
        k = k[None]
    if k.ndim != 4 or k.shape[0] != 1:
        raise ValueError(f"kernel must have shape (h, w), (C, h, w) or (1, C, h, w), got {tuple(torch.as_tensor(kernel).shape)}")
    if not torch.isfinite(k).all():
        raise ValueError("kernel contains NaN or Inf values")
    if k.abs().sum() == 0:
        raise ValueError("kernel is all zeros")
    return k


def kernel_blur(img_size, kernel, *, boundary: str = "circular"):
    """Convolution with a given kernel.

    Parameters
    ----------
    img_size : int, (H, W) or (C, H, W)
    kernel : tensor (h, w), (C, h, w) or (1, C, h, w)
        Used as given (not renormalised); ``h, w`` must not exceed ``H, W``.
    boundary : {"circular", "reflect"}
        See the module docstring.
    """
    c, h, w = img_size_3d(img_size)
    k = _check_kernel(kernel)
    if k.shape[1] not in (1, c):
        raise ValueError(f"kernel has {k.shape[1]} channels, image has {c}")
    if k.shape[-2] > h or k.shape[-1] > w:
        raise ValueError(f"kernel of size {tuple(k.shape[-2:])} is larger than the image ({h}, {w})")
    if boundary == "circular":
        op = _BlurFFT(img_size=(c, h, w), filter=k)
    elif boundary == "reflect":
        op = _BlurPadded(filter=k, padding="reflect")
    else:
        raise ValueError(f"boundary must be 'circular' or 'reflect', got {boundary!r}")
    op.img_shape = (c, h, w)
    op._set_meas_shape()
    return op


def gaussian_kernel(sigma: float, *, angle: float = 0.0, size: int | None = None) -> torch.Tensor:
    """Normalised 2D Gaussian kernel ``(size, size)``; ``sigma`` a float or (sigma_x, sigma_y) in pixels."""
    sx, sy = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    if not (sx > 0 and sy > 0 and math.isfinite(sx) and math.isfinite(sy)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    if size is None:
        size = 2 * math.ceil(3 * max(sx, sy)) + 1
    r = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    t = math.radians(angle)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    k = torch.exp(-(u / sx) ** 2 / 2 - (v / sy) ** 2 / 2)
    return (k / k.sum()).float()


def line_kernel(length: float, angle: float, *, size: int | None = None, samples: int = 64) -> torch.Tensor:
    """Normalised straight-line motion kernel of ``length`` pixels at ``angle`` degrees.

    The segment is sampled at ``samples`` points and splatted bilinearly, so any real length
    and angle give a smooth, anti-aliased kernel.
    """
    if not (length >= 1 and math.isfinite(length)):
        raise ValueError(f"length must be >= 1 pixel, got {length!r}")
    if size is None:
        size = 2 * math.ceil(length / 2) + 1
    c = (size - 1) / 2
    t = torch.linspace(-0.5, 0.5, samples, dtype=torch.float64) * (length - 1)
    px = c + t * math.cos(math.radians(angle))
    py = c - t * math.sin(math.radians(angle))
    k = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = px.floor().long(), py.floor().long()
    fx, fy = px - x0, py - y0
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).clamp(0, size - 1), (y0 + dy).clamp(0, size - 1)
        k.index_put_((yi, xi), wgt, accumulate=True)
    return (k / k.sum()).float()


def gaussian_blur(img_size, sigma: float = 2.0, *, angle: float = 0.0, kernel_size: int | None = None,
                  boundary: str = "circular"):
    """Gaussian blur with standard deviation ``sigma`` pixels (circular boundary by default).

    ``sigma`` may be a pair (sigma_x, sigma_y) rotated by ``angle`` degrees; the kernel spans
    ``±3 sigma`` unless ``kernel_size`` is given.
    """
    return kernel_blur(img_size, gaussian_kernel(sigma, angle=angle, size=kernel_size), boundary=boundary)


def motion_blur(img_size, length: float = 9.0, angle: float | None = None, *,
                generator: torch.Generator | None = None, boundary: str = "circular"):
    """Linear motion blur of ``length`` pixels at ``angle`` degrees (circular boundary by default).

    With ``angle=None`` the angle is drawn uniformly in [0, 180) from ``generator``.
    """
    if angle is None:
        angle = float(torch.rand((), generator=generator)) * 180.0
    return kernel_blur(img_size, line_kernel(length, angle), boundary=boundary)
