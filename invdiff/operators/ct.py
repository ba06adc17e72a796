"""Computed tomography: the Radon transform from deepinv, scaled, with an exact adjoint and FBP.

Model
-----
``y = R x / W``: line integrals of the image through ``n_views`` projection angles (parallel
beam by default), divided by the image width ``W`` in pixels. The scaling makes the sinogram
a *mean* attenuation along each ray (path length measured in image widths), so sinogram values
lie in [0, 1] like the image, and ``sigma_y`` keeps its [0, 1]-unit meaning for CT.

Implementation notes (measured in ``benchmarks/operators.md``)
-------------------------------------------------------------
* The forward projection is deepinv's :class:`~deepinv.physics.Tomography` with
  ``normalize=False`` (no power method at construction).
* The adjoint is computed by autograd through the forward projection in the dtype of ``y``,
  so ``<A x, y> = <x, Aᵀ y>`` holds to rounding error (deepinv's legacy adjoint is 0.6–0.8 % off in
  ``benchmarks/operators.md``).
* ``A_dagger`` is filtered back-projection through that same adjoint: ramp filter (optionally
  Hann-windowed) of each projection along the detector, then ``Δθ · Rᵀ``. Because it uses the
  operator's own back-projector, it is consistent with ``A`` whatever the grid parity.
"""

from __future__ import annotations

import math

import deepinv
import torch

from ._base import ShapeChecked, img_size_3d, positive_int, real_number, real_tensor

__all__ = ["ct_sparse_view", "ct_limited_angle", "ct_parallel", "CT", "ramp_filter", "FBP_FILTERS",
           "default_fan_parameters"]

FBP_FILTERS = ("ramp", "hann", "shepp-logan", "cosine")
#: keys of deepinv's fan-beam geometry (``fan_parameters``); the detector count is an integer
FAN_PARAMETERS = ("pixel_spacing", "source_radius", "detector_radius", "n_detector_pixels", "detector_spacing")


def _check_fan_parameters(fan_parameters) -> dict | None:
    """``fan_parameters`` (None or a dict of deepinv fan-beam settings) checked key by key."""
    if fan_parameters is None:
        return None
    if not isinstance(fan_parameters, dict):
        raise TypeError(f"fan_parameters must be a dict or None, got {type(fan_parameters).__name__}")
    unknown = sorted(map(str, set(fan_parameters) - set(FAN_PARAMETERS)))
    if unknown:
        raise ValueError(f"fan_parameters has unknown key(s) {', '.join(unknown)}; known keys: "
                         f"{', '.join(FAN_PARAMETERS)}")
    out = {}
    for key, value in fan_parameters.items():
        if key == "n_detector_pixels":
            out[key] = positive_int(value, f"fan_parameters['{key}']")
        else:
            out[key] = real_number(value, f"fan_parameters['{key}']", low=0.0, low_open=True)
    return out


def ramp_filter(n_det: int, window: str = "ramp", *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Frequency response of the discrete ramp filter for FBP, length ``2^ceil(log2(2 n_det))``.

    Built from the band-limited spatial-domain ramp of Kak & Slaney (1988, eq. 61):
    ``h[0] = 1/4``, ``h[n] = -1/(π n)²`` for odd ``n``, ``0`` for even ``n`` (detector spacing 1),
    then multiplied by a window: ``ramp`` (none), ``hann``, ``shepp-logan`` (sinc) or ``cosine``.
    """
    positive_int(n_det, "n_det")
    if not isinstance(window, str) or window not in FBP_FILTERS:
        raise ValueError(f"FBP filter (window) must be one of {FBP_FILTERS}, got {window!r}")
    size = max(64, 2 ** math.ceil(math.log2(2 * n_det)))
    n = torch.cat([torch.arange(0, size // 2 + 1), torch.arange(-(size // 2) + 1, 0)]).to(dtype)
    h = torch.zeros(size, dtype=dtype)
    h[0] = 0.25
    odd = (n.long() % 2) == 1
    h[odd] = -1.0 / (math.pi * n[odd]) ** 2
    resp = torch.fft.fft(h).real  # ≈ |f| for f in cycles per detector pixel
    f = torch.fft.fftfreq(size, dtype=dtype)  # cycles per sample, in [-0.5, 0.5)
    if window == "hann":
        resp = resp * (0.5 + 0.5 * torch.cos(2 * math.pi * f))
    elif window == "shepp-logan":
        resp = resp * torch.sinc(f)
    elif window == "cosine":
        resp = resp * torch.cos(math.pi * f)
    return resp.to(device) if device is not None else resp


class CT(ShapeChecked, deepinv.physics.Tomography):
    """Scaled Radon transform ``A x = R x / W`` with exact adjoint and FBP pseudo-inverse.

    Use the factories :func:`ct_sparse_view`, :func:`ct_limited_angle`, :func:`ct_parallel`.
    Sinograms have shape ``(B, C, n_det, n_views)`` as in deepinv.
    """

    def __init__(self, img_size, angles_deg: torch.Tensor, *, fbp_filter: str = "ramp",
                 fan_beam: bool = False, fan_parameters: dict | None = None):
        c, h, w = img_size_3d(img_size)
        if h != w:
            raise ValueError(f"CT needs a square image (img_size with H == W), got ({h}, {w})")
        if not isinstance(fbp_filter, str) or fbp_filter not in FBP_FILTERS:
            raise ValueError(f"fbp_filter must be one of {FBP_FILTERS}, got {fbp_filter!r}")
        if not isinstance(fan_beam, bool):
            raise TypeError(f"fan_beam must be True or False, got {fan_beam!r}")
        if fan_parameters is not None and not fan_beam:
            raise ValueError("fan_parameters only apply to fan-beam CT (fan_beam=True / geometry='fan')")
        fan_parameters = _check_fan_parameters(fan_parameters)
        angles_deg = real_tensor(angles_deg, "angles_deg", dtype=torch.float64).reshape(-1)
        if angles_deg.numel() < 1:
            raise ValueError("angles_deg must hold at least one angle")
        super().__init__(angles=angles_deg.float(), img_width=w, circle=False, normalize=False,
                         adjoint_via_backprop=True, fan_beam=fan_beam, fan_parameters=fan_parameters)
        self.img_shape = (c, h, w)
        self.scale = 1.0 / w
        self.fbp_filter = fbp_filter
        self.geometry = "fan" if fan_beam else "parallel"
        self._set_meas_shape()

    @property
    def n_views(self) -> int:
        return int(self.angles.numel())

    def _apply_A(self, x, **kwargs):
        return super()._apply_A(x, **kwargs) * self.scale

    def A_adjoint(self, y, **kwargs):
        """Exact adjoint ``Aᵀ y = ∇_x <A x, y>`` by autograd, computed in the operator's working
        dtype and returned in the dtype of ``y`` (see :class:`~invdiff.operators._base.ShapeChecked`).

        ``A`` is linear, so its vector–Jacobian product does not depend on the point: it is
        built once per (batch, dtype, device) with :func:`torch.func.vjp` and reused.
        """
        y, dtype = self._as_working(y, "y")
        self._check_y(y)
        key = (y.shape[0], y.dtype, y.device)
        cache = self.__dict__.setdefault("_vjp_cache", {})
        if key not in cache:
            x0 = torch.zeros((y.shape[0],) + self.img_shape, dtype=y.dtype, device=y.device)
            cache.clear()  # keep one entry: the saved tensors are the size of an image batch
            cache[key] = torch.func.vjp(self.A, x0)[1]
        return cache[key](y)[0].to(dtype)

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_vjp_cache", None)  # dtype/device change: rebuild the adjoint
        return super()._apply(fn, recurse)

    def angular_step(self) -> float:
        """Δθ in radians used to weight each view in FBP.

        The mean spacing ``δ`` of the angles, scaled down where the views cover more than a
        half-circle: FBP integrates over 180°, and views spread over ``n δ`` degrees see each
        direction ``n δ / 180`` times, so ``Δθ = δ · min(1, 180 / (n δ))`` — ``π/n`` for ``n``
        views over [0°, 180°) and over [0°, 360°) alike.
        """
        a = torch.sort(self.angles.double()).values
        n = a.numel()
        if n == 1:
            return math.pi
        step = float(a[-1] - a[0]) / (n - 1)
        if step <= 0:  # every view at one angle
            return math.pi / n
        return math.radians(step * min(1.0, 180.0 / (n * step)))

    def fbp(self, y, filter: str | None = None, **kwargs):
        """Filtered back-projection ``Δθ · W² · Aᵀ(h ∗ y)`` (``W²`` undoes the 1/W scaling twice).

        ``filter`` overrides the operator's ``fbp_filter`` (ramp, hann, shepp-logan, cosine).
        For fan-beam geometry this is the parallel-beam formula applied to fan data, an
        approximation (no fan-angle weighting).
        """
        y, dtype = self._as_working(y, "y")
        self._check_y(y)
        n_det = y.shape[-2]
        resp = ramp_filter(n_det, filter or self.fbp_filter, dtype=y.dtype, device=y.device)
        size = resp.numel()
        yt = y.transpose(-1, -2)  # (..., views, det): filter along the detector axis
        spec = torch.fft.fft(yt, n=size, dim=-1) * resp
        filtered = torch.fft.ifft(spec, dim=-1).real[..., :n_det].transpose(-1, -2)
        w = self.img_shape[-1]
        return (self.A_adjoint(filtered.contiguous()) * (self.angular_step() * w * w)).to(dtype)

    def A_dagger(self, y, **kwargs):
        """Filtered back-projection (see :meth:`fbp`)."""
        return self.fbp(y)


def _angles(n_views: int, max_angle_deg: float) -> torch.Tensor:
    return torch.arange(n_views, dtype=torch.float64) * (max_angle_deg / n_views)


def ct_parallel(img_size, angles_deg, *, fbp_filter: str = "ramp") -> CT:
    """Parallel-beam CT at the given projection angles (degrees)."""
    a = real_tensor(angles_deg, "angles_deg", dtype=torch.float64).reshape(-1)
    if a.numel() < 1:
        raise ValueError(f"angles_deg must hold at least one finite angle, got {angles_deg!r}")
    return CT(img_size, a, fbp_filter=fbp_filter)


def default_fan_parameters(width: int) -> dict:
    """invdiff's fan-beam geometry for a ``width``-pixel image (lengths in image widths).

    The source is 4 image widths from the rotation axis and the detector 2 (magnification
    1.5): the fan's half-angle is asin(√2/2 / 4) ≈ 10°. The detector bins are one image pixel
    apart at the axis (1.5 / ``width`` on the detector) and just enough of them cover the fan
    that holds the image's circumscribed circle. (deepinv's own defaults put the detector bins
    ~5 pixels apart at the axis of a 0.5-wide image, so only ~20 bins see it whatever its size.)
    """
    width = positive_int(width, "width")
    source, detector = 4.0, 2.0
    magnification = (source + detector) / source
    spacing = magnification / width
    half_angle = math.asin(math.sqrt(0.5) / source)
    half_width = (source + detector) * math.tan(half_angle)
    return {"pixel_spacing": 1.0 / width, "source_radius": source, "detector_radius": detector,
            "detector_spacing": spacing, "n_detector_pixels": 2 * math.ceil(half_width / spacing) + 2}


def ct_sparse_view(img_size, n_views: int = 32, *, fbp_filter: str = "ramp", geometry: str = "parallel",
                   fan_parameters: dict | None = None) -> CT:
    """Sparse-view CT: ``n_views`` angles equally spaced over [0°, 180°).

    ``geometry="fan"`` uses deepinv's fan-beam projector (angles over [0°, 360°)) in the
    geometry of :func:`default_fan_parameters` — or, given ``fan_parameters``, deepinv's
    geometry with those keys changed; its ``A_dagger`` is then an approximate FBP (the
    parallel-beam formula, no fan weighting).
    """
    img_size_3d(img_size)
    n_views = positive_int(n_views, "n_views")
    if geometry == "parallel":
        if fan_parameters is not None:
            raise ValueError("fan_parameters only apply to geometry='fan', got geometry='parallel'")
        return CT(img_size, _angles(n_views, 180.0), fbp_filter=fbp_filter)
    if geometry == "fan":
        if fan_parameters is None:
            fan_parameters = default_fan_parameters(img_size_3d(img_size)[-1])
        return CT(img_size, _angles(n_views, 360.0), fbp_filter=fbp_filter, fan_beam=True,
                  fan_parameters=fan_parameters)
    raise ValueError(f"geometry must be 'parallel' or 'fan', got {geometry!r}")


def ct_limited_angle(img_size, max_angle_deg: float = 90.0, n_views: int | None = None, *,
                     fbp_filter: str = "ramp") -> CT:
    """Limited-angle CT: ``n_views`` angles equally spaced over [0°, ``max_angle_deg``).

    ``n_views`` defaults to one view per degree.
    """
    img_size_3d(img_size)
    max_angle_deg = real_number(max_angle_deg, "max_angle_deg", low=0.0, high=180.0, low_open=True)
    if n_views is None:
        n_views = max(1, int(round(max_angle_deg)))
    n_views = positive_int(n_views, "n_views")
    return CT(img_size, _angles(n_views, max_angle_deg), fbp_filter=fbp_filter)
