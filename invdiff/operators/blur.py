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

from ._base import ShapeChecked, check_generator, img_size_3d, positive_int, real_number, real_tensor

__all__ = ["gaussian_blur", "motion_blur", "kernel_blur", "gaussian_kernel", "line_kernel"]


class _BlurFFT(ShapeChecked, deepinv.physics.BlurFFT):
    """deepinv operator with invdiff shape checks."""


class _BlurPadded(ShapeChecked, deepinv.physics.Blur):
    """deepinv operator with invdiff shape checks."""


def _check_kernel(kernel) -> torch.Tensor:
    k = real_tensor(kernel, "kernel")  # complex, bool, non-numeric, NaN/Inf: refused here
    if k.numel() == 0:
        raise ValueError(f"kernel is empty (shape {tuple(k.shape)})")
    if k.ndim == 2:
        k = k[None, None]
    elif k.ndim == 3:
        k = k[None]
    if k.ndim != 4 or k.shape[0] != 1:
        raise ValueError(f"kernel must have shape (h, w), (C, h, w) or (1, C, h, w), got {tuple(torch.as_tensor(kernel).shape)}")
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
    if not isinstance(boundary, str) or boundary not in ("circular", "reflect"):
        raise ValueError(f"boundary must be 'circular' or 'reflect', got {boundary!r}")
    if k.shape[1] not in (1, c):
        raise ValueError(f"kernel has {k.shape[1]} channels, image (img_size) has {c}")
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


def _sigma_pair(sigma) -> tuple[float, float]:
    """``sigma`` (a number or a pair) as two finite floats > 0."""
    if isinstance(sigma, (str, bytes)) or (isinstance(sigma, torch.Tensor) and sigma.numel() == 1):
        pair = None
    else:
        try:
            pair = list(sigma)
        except TypeError:
            pair = None
    if pair is None:
        s = real_number(sigma, "sigma", low=0.0, low_open=True)
        return s, s
    if len(pair) != 2:
        raise ValueError(f"sigma must be a number or a pair (sigma_x, sigma_y), got {len(pair)} values")
    return (real_number(pair[0], "sigma", low=0.0, low_open=True),
            real_number(pair[1], "sigma", low=0.0, low_open=True))


def _odd_size(size, name: str) -> int:
    size = positive_int(size, name)
    if size % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= 1 (the kernel's centre must fall on a pixel), "
                         f"got {size}")
    return size


def gaussian_kernel(sigma: float, *, angle: float = 0.0, size: int | None = None) -> torch.Tensor:
    """Normalised 2D Gaussian kernel ``(size, size)``.

    Parameters
    ----------
    sigma : float or (float, float)
        Standard deviation in pixels (> 0), or ``(sigma_x, sigma_y)`` rotated by ``angle``.
    angle : float
        Rotation in degrees (finite).
    size : int, optional
        Odd kernel width; default ``2 ceil(3 max(sigma)) + 1`` (``±3 sigma``).
    """
    sx, sy = _sigma_pair(sigma)
    angle = real_number(angle, "angle")
    if size is None:
        size = 2 * math.ceil(3 * max(sx, sy)) + 1
    size = _odd_size(size, "size")
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

    Parameters
    ----------
    length : float
        Length in pixels, finite and >= 1.
    angle : float
        Direction in degrees (finite).
    size : int, optional
        Odd kernel width >= ``length``; default ``2 ceil(length / 2) + 1``.
    samples : int
        Points sampled along the segment, >= 2.
    """
    length = real_number(length, "length", low=1.0)
    angle = real_number(angle, "angle")
    samples = positive_int(samples, "samples", minimum=2)
    if size is None:
        size = 2 * math.ceil(length / 2) + 1
    size = _odd_size(size, "size")
    if size < length:
        raise ValueError(f"size ({size}) must be >= length ({length:g}), or the line would be cut off")
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
    ``±3 sigma`` unless ``kernel_size`` (an odd integer >= 1) is given.
    """
    _, h, w = img_size_3d(img_size)
    sx, sy = _sigma_pair(sigma)
    if kernel_size is not None:
        kernel_size = _odd_size(kernel_size, "kernel_size")
    size = kernel_size if kernel_size is not None else 2 * math.ceil(3 * max(sx, sy)) + 1
    if size > min(h, w):
        how = "kernel_size" if kernel_size is not None else f"the ±3 sigma kernel for sigma={sigma!r}"
        raise ValueError(f"{how} ({size} px) is larger than the image ({h}, {w}); use a smaller sigma or "
                         f"an odd kernel_size <= {min(h, w)}")
    return kernel_blur(img_size, gaussian_kernel(sigma, angle=angle, size=kernel_size), boundary=boundary)


def motion_blur(img_size, length: float = 9.0, angle: float | None = None, *,
                generator: torch.Generator | None = None, boundary: str = "circular"):
    """Linear motion blur of ``length`` pixels at ``angle`` degrees (circular boundary by default).

    With ``angle=None`` the angle is drawn uniformly in [0, 180) from ``generator``.
    """
    img_size_3d(img_size)
    check_generator(generator)
    if angle is None:
        angle = float(torch.rand((), generator=generator)) * 180.0
    return kernel_blur(img_size, line_kernel(length, angle), boundary=boundary)
