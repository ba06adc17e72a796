"""Seeded synthetic phantoms: anatomy-like 2D slices, Shepp–Logan, 3D ellipsoid volumes.

All phantoms are float32 tensors with intensities in [0, 1]. Randomness comes only from the
``generator`` argument (a :class:`torch.Generator`), so the same generator state gives the same
phantom on the same device.

The 2D "body" phantoms are built as a tissue label map (body outline with a fat layer, organs,
lungs, spine and ribs, small lesions) and then rendered with tissue-specific intensities,
smooth intensity gradients inside each tissue and band-limited texture. Flat piecewise-constant
ellipses make total variation an almost perfect prior; the gradients and texture here are what
keeps a TV baseline honest.
"""

from __future__ import annotations

import math

import torch

__all__ = ["body_phantom", "body_phantoms", "shepp_logan", "ellipsoid_volume", "body_volume"]

# Tissue intensities for the two contrasts. CT: roughly linear attenuation mapped to [0, 1]
# (air 0, lung ~0.1, fat ~0.35, soft tissue ~0.5, organs ~0.55-0.65, bone ~0.9).
# MRI (T1-like): fat bright, bone (cortical) dark, fluid-filled organs mid-grey.
_CONTRAST = {
    "ct": {"fat": 0.36, "muscle": 0.50, "organ": (0.53, 0.68), "lung": 0.10, "bone": 0.92,
           "marrow": 0.72, "lesion": 0.05},
    "mri": {"fat": 0.85, "muscle": 0.38, "organ": (0.45, 0.70), "lung": 0.04, "bone": 0.08,
            "marrow": 0.62, "lesion": 0.07},
}


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"size must be an int or (H, W) with H, W >= 8, got {size!r}")
    return size


def _uniform(generator, lo, hi, n=None):
    shape = () if n is None else (n,)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return lo + (hi - lo) * u if n is not None else float(lo + (hi - lo) * u)


def _grid(size):
    h, w = size
    # Pixel centres in [-1, 1] along the longer axis, y pointing down (image convention).
    s = max(h, w)
    ys = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) * 2 / s
    xs = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) * 2 / s
    return torch.meshgrid(ys, xs, indexing="ij"), s


def _rotated(yy, xx, cy, cx, theta):
    """Coordinates ``(u, v)`` relative to ``(cy, cx)``, rotated by ``theta`` radians."""
    c, s = math.cos(theta), math.sin(theta)
    return (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c


def _ellipse(yy, xx, cy, cx, ay, ax, theta, edge):
    """Soft indicator of an ellipse; ``edge`` is the edge width in grid units (~1 pixel)."""
    u, v = _rotated(yy, xx, cy, cx, theta)
    r = torch.sqrt((u / ax) ** 2 + (v / ay) ** 2)
    # signed distance approximation: (1 - r) * min axis
    return torch.sigmoid((1 - r) * min(ax, ay) / edge)


def _smooth_noise(size, scale_px, generator):
    """Zero-mean, unit-std Gaussian random field with correlation length ``scale_px`` pixels."""
    h, w = size
    noise = torch.randn((h, w), generator=generator, dtype=torch.float64)
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, dtype=torch.float64)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    filt = torch.exp(-2 * (math.pi * scale_px) ** 2 * f2)
    field = torch.fft.ifft2(torch.fft.fft2(noise) * filt).real
    return (field - field.mean()) / field.std().clamp_min(1e-12)


def _linear_gradient(yy, xx, generator, amplitude):
    angle = _uniform(generator, 0, 2 * math.pi)
    return amplitude * (math.cos(angle) * xx + math.sin(angle) * yy)


def body_phantom(size=64, contrast: str = "ct", *, generator: torch.Generator | None = None):
    """One anatomy-like 2D slice, shape ``(1, H, W)``, intensities in [0, 1].

    Parameters
    ----------
    size : int or (int, int)
        Image size in pixels; any size >= 8.
    contrast : {"ct", "mri"}
        Tissue intensity table: CT-like (bone bright, lungs dark) or T1-MRI-like (fat bright,
        cortical bone dark).
    generator : torch.Generator, optional
        Source of randomness. The same generator state gives the same phantom.

    Returns
    -------
    torch.Tensor
        ``(1, H, W)`` float32.

    Notes
    -----
    The slice is a body outline (an ellipse with a low-order radial perturbation) holding a
    subcutaneous fat layer, a muscle/soft-tissue background, 2–4 organs, optionally two lungs,
    a vertebra (cortical ring with marrow), 4–8 ribs near the outline and 1–3 small
    low-contrast lesions (±3–8 % contrast). Each tissue carries a smooth linear gradient and
    band-limited texture (correlation length 1–3 pixels at 64 px, scaled with the size).
    """
    if contrast not in _CONTRAST:
        raise ValueError(f"contrast must be one of {sorted(_CONTRAST)}, got {contrast!r}")
    size = _check_size(size)
    tab = _CONTRAST[contrast]
    g = generator
    (yy, xx), s = _grid(size)
    edge = 1.0 / s  # one pixel in grid units
    scale = s / 64.0

    # Body outline: ellipse with a radial perturbation (harmonics 2..4).
    ay, ax = _uniform(g, 0.62, 0.78), _uniform(g, 0.78, 0.94)
    cy, cx = _uniform(g, -0.04, 0.04), _uniform(g, -0.04, 0.04)
    phi = torch.atan2((yy - cy) / ay, (xx - cx) / ax)
    rad = torch.sqrt(((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2)
    pert = torch.zeros_like(phi)
    for k in (2, 3, 4):
        pert = pert + _uniform(g, -0.03, 0.03) * torch.cos(k * phi + _uniform(g, 0, 2 * math.pi))
    body = torch.sigmoid((1 + pert - rad) * min(ax, ay) / edge)
    fat_thick = _uniform(g, 0.06, 0.12)
    inner = torch.sigmoid((1 + pert - fat_thick - rad) * min(ax, ay) / edge)

    img = tab["fat"] * (body - inner) + tab["muscle"] * inner
    img = img + inner * _linear_gradient(yy, xx, g, 0.04)
    img = img + 0.02 * body * _smooth_noise(size, _uniform(g, 1.0, 3.0) * scale, g)

    def paint(mask, value, texture_amp, grad_amp):
        nonlocal img
        tex = _smooth_noise(size, _uniform(g, 1.0, 3.0) * scale, g)
        local = value + _linear_gradient(yy, xx, g, grad_amp) + texture_amp * tex
        img = img * (1 - mask) + local * mask

    # Lungs (present in about half the slices: thorax vs abdomen).
    if _uniform(g, 0, 1) < 0.5:
        for side in (-1, 1):
            m = _ellipse(yy, xx, cy + _uniform(g, -0.15, 0.0), cx + side * ax * _uniform(g, 0.38, 0.5),
                         ay * _uniform(g, 0.45, 0.6), ax * _uniform(g, 0.22, 0.3),
                         _uniform(g, -0.3, 0.3), edge) * inner
            paint(m, tab["lung"], 0.03, 0.03)
    # Organs.
    n_org = int(_uniform(g, 2, 5))
    for _ in range(n_org):
        ang = _uniform(g, 0, 2 * math.pi)
        r = _uniform(g, 0.0, 0.45)
        m = _ellipse(yy, xx, cy + r * ay * math.sin(ang), cx + r * ax * math.cos(ang),
                     _uniform(g, 0.12, 0.3), _uniform(g, 0.12, 0.35), _uniform(g, 0, math.pi),
                     edge) * inner
        paint(m, _uniform(g, *tab["organ"]), 0.035, 0.06)
    # Spine: cortical ring + marrow, posterior (bottom of image).
    sy, sx = cy + ay * _uniform(g, 0.55, 0.7), cx + _uniform(g, -0.04, 0.04)
    sr = _uniform(g, 0.09, 0.13)
    outer = _ellipse(yy, xx, sy, sx, sr, sr * _uniform(g, 0.9, 1.2), 0.0, edge)
    marrow = _ellipse(yy, xx, sy, sx, sr * 0.65, sr * 0.7, 0.0, edge)
    paint(outer, tab["bone"], 0.02, 0.02)
    paint(marrow, tab["marrow"], 0.04, 0.03)
    # Ribs: small bright ellipses just inside the fat layer.
    n_ribs = int(_uniform(g, 4, 9))
    for _ in range(n_ribs):
        ang = _uniform(g, 0, 2 * math.pi)
        rr = 1 - fat_thick - _uniform(g, 0.05, 0.1)
        m = _ellipse(yy, xx, cy + rr * ay * math.sin(ang), cx + rr * ax * math.cos(ang),
                     _uniform(g, 0.025, 0.04), _uniform(g, 0.035, 0.06), ang + math.pi / 2, edge)
        paint(m, tab["bone"], 0.02, 0.0)
    # Small low-contrast lesions inside the body (not in bone).
    n_les = int(_uniform(g, 1, 4))
    for _ in range(n_les):
        ang = _uniform(g, 0, 2 * math.pi)
        r = _uniform(g, 0.0, 0.55)
        m = _ellipse(yy, xx, cy + r * ay * math.sin(ang), cx + r * ax * math.cos(ang),
                     _uniform(g, 0.03, 0.07), _uniform(g, 0.03, 0.07), 0.0, edge) * inner
        sign = 1.0 if _uniform(g, 0, 1) < 0.5 else -1.0
        lesion_value = img + sign * tab["lesion"] * _uniform(g, 0.6, 1.6)
        img = img * (1 - m) + lesion_value * m

    img = img * body  # air outside
    return img.clamp(0, 1).to(torch.float32).unsqueeze(0)


def body_phantoms(n: int, size=64, contrast: str = "ct", *, generator: torch.Generator | None = None):
    """``n`` phantoms stacked as ``(n, 1, H, W)``; see :func:`body_phantom`.

    ``contrast="mixed"`` alternates CT-like and MRI-like slices.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if contrast == "mixed":
        contrasts = ["ct" if i % 2 == 0 else "mri" for i in range(n)]
    else:
        contrasts = [contrast] * n
    return torch.stack([body_phantom(size, c, generator=generator) for c in contrasts])


# Modified Shepp–Logan (Toft 1996): intensity, a, b, x0, y0, angle in degrees.
_SHEPP_LOGAN = [
    (1.0, 0.69, 0.92, 0.0, 0.0, 0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0),
]


def shepp_logan(size=256) -> torch.Tensor:
    """Modified Shepp–Logan phantom (Toft's high-contrast variant), ``(1, H, W)`` in [0, 1].

    Rendered analytically at any size (a pixel is inside an ellipse when its centre is).
    """
    size = _check_size(size)
    (yy, xx), _ = _grid(size)
    yy = -yy  # the table uses y pointing up
    img = torch.zeros(size, dtype=torch.float64)
    for value, a, b, x0, y0, deg in _SHEPP_LOGAN:
        u, v = _rotated(yy, xx, y0, x0, math.radians(deg))
        img = img + value * (((u / a) ** 2 + (v / b) ** 2) <= 1).to(img.dtype)
    return img.clamp(0, 1).to(torch.float32).unsqueeze(0)


def ellipsoid_volume(depth=32, size=64, *, n_ellipsoids: int = 10,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Seeded 3D ellipsoid phantom, shape ``(D, 1, H, W)`` with slices on the first axis.

    A large body ellipsoid spanning all slices holds ``n_ellipsoids`` random inner ellipsoids
    of various heights along z (so structures appear, grow and vanish across slices), each with
    its own intensity, plus a gentle gradient along z. Intensities in [0, 1].
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    h, w = _check_size(size)
    g = generator
    zs = (torch.arange(depth, dtype=torch.float64) - (depth - 1) / 2) * 2 / max(depth, 1)
    (yy, xx), s = _grid((h, w))
    zz = zs[:, None, None]
    yy, xx = yy[None], xx[None]
    edge = 1.0 / s

    def ellipsoid(cz, cy, cx, az, ay, ax, theta):
        u, v = _rotated(yy, xx, cy, cx, theta)
        r = torch.sqrt((u / ax) ** 2 + (v / ay) ** 2 + ((zz - cz) / az) ** 2)
        return torch.sigmoid((1 - r) * min(ax, ay) / edge)

    body = ellipsoid(0.0, 0.0, 0.0, 1.6, _uniform(g, 0.7, 0.85), _uniform(g, 0.8, 0.92), 0.0)
    vol = 0.45 * body + 0.05 * zz * body
    for _ in range(n_ellipsoids):
        e = ellipsoid(_uniform(g, -0.8, 0.8), _uniform(g, -0.45, 0.45), _uniform(g, -0.5, 0.5),
                      _uniform(g, 0.15, 0.7), _uniform(g, 0.06, 0.25), _uniform(g, 0.06, 0.25),
                      _uniform(g, 0, math.pi)) * body
        value = _uniform(g, 0.1, 1.0)
        vol = vol * (1 - e) + value * e
    return vol.clamp(0, 1).to(torch.float32).unsqueeze(1)


def body_volume(depth: int = 32, size=64, contrast: str = "ct", *, n_inserts: int = 6,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Seeded 3D body phantom, shape ``(D, 1, H, W)``: anatomy-like axial slices that vary along z.

    One :func:`body_phantom` slice is deformed smoothly along z (the body widens and narrows,
    shifts and turns by a few degrees: a random low-order affine path), and ``n_inserts``
    ellipsoidal structures of various heights (vessels, organs, lesions; 0.15–0.7 of the depth)
    appear, grow and vanish across slices inside the body. Every axial slice therefore looks like
    the 2D phantoms the shipped ``phantom64`` prior was trained on, while the coronal and
    sagittal planes carry structure that only z coupling can recover.
    """
    import torch.nn.functional as F

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    h, w = _check_size(size)
    g = generator
    base = body_phantom((2 * h, 2 * w), contrast, generator=g).double()[None]  # 2× finer, sampled below
    t = torch.linspace(-1, 1, depth, dtype=torch.float64)
    # smooth affine path: scale, shift and rotation as low-order polynomials of z
    sy = 1 + _uniform(g, -0.08, 0.08) * t + _uniform(g, -0.08, 0.0) * t**2
    sx = 1 + _uniform(g, -0.06, 0.06) * t + _uniform(g, -0.06, 0.0) * t**2
    dy, dx = _uniform(g, -0.04, 0.04) * t, _uniform(g, -0.03, 0.03) * t
    rot = _uniform(g, -0.08, 0.08) * t
    theta = torch.zeros(depth, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = torch.cos(rot) / sx, -torch.sin(rot) / sx, dx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = torch.sin(rot) / sy, torch.cos(rot) / sy, dy
    grid = F.affine_grid(theta, (depth, 1, h, w), align_corners=False)
    vol = F.grid_sample(base.expand(depth, 1, 2 * h, 2 * w), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)[:, 0]
    body = (vol > 0.02).double()
    (yy, xx), s = _grid((h, w))
    zz = t[:, None, None]
    for _ in range(n_inserts):
        cz, az = _uniform(g, -0.7, 0.7), _uniform(g, 0.15, 0.7)
        cy, cx = _uniform(g, -0.4, 0.4), _uniform(g, -0.45, 0.45)
        ay, ax = _uniform(g, 0.05, 0.16), _uniform(g, 0.05, 0.16)
        u, v = _rotated(yy[None], xx[None], cy, cx, _uniform(g, 0, math.pi))
        r = torch.sqrt((u / ax) ** 2 + (v / ay) ** 2 + ((zz - cz) / az) ** 2)
        m = torch.sigmoid((1 - r) * min(ax, ay) * s) * body
        vol = vol * (1 - m) + _uniform(g, 0.35, 0.9) * m
    return vol.clamp(0, 1).to(torch.float32).unsqueeze(1)
