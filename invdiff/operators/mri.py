"""Cartesian MRI: ``y = M F S x`` on deepinv's :class:`~deepinv.physics.MRI` / ``MultiCoilMRI``.

Model
-----
Single coil: ``y = M F x``; multi-coil: ``y_c = M F (S_c x)``, ``c = 1..C``, with ``F`` the
orthonormal centred 2D DFT, ``M`` a binary mask of phase-encoding lines (columns of k-space,
fully sampled along the read-out direction) and ``S_c`` smooth coil sensitivities normalised so
that ``Σ_c |S_c|² = 1`` (so ``‖A‖ <= 1`` and zero-filling is one unit gradient step).

k-space is complex and stored as deepinv does (real and imaginary parts as 2 channels).
By default the operator accepts a *real* image ``(B, 1, H, W)``: it is embedded as a complex
image with zero imaginary part, and the adjoint returns the real part of the complex adjoint,
which is the exact adjoint of that real-to-complex map. ``real_input=False`` takes complex
images ``(B, 2, H, W)`` instead.
"""

from __future__ import annotations

import math

import deepinv
import torch

from ._base import ShapeChecked, check_generator, img_size_3d, positive_int, real_number, real_tensor

__all__ = ["mri_cartesian", "cartesian_mask", "coil_sensitivities", "MASKS"]

MASKS = ("random", "equispaced", "gaussian")


def cartesian_mask(img_size, acceleration: float = 4.0, center_fraction: float = 0.08,
                   kind: str = "random", *, n_masks: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary masks of phase-encoding columns, shape ``(n_masks, H, W)``, centred k-space.

    ``round(W * center_fraction)`` central columns are always sampled; the remaining
    ``round(W / acceleration)`` minus those are chosen

    * ``random``: uniformly among the other columns,
    * ``equispaced``: every ``acceleration``-th column from a random offset,
    * ``gaussian``: without replacement with probability ∝ ``exp(-k² / (2 (0.25 W)²))``
      (variable density, more lines near the centre).
    """
    _, h, w = img_size_3d(img_size)
    acceleration = real_number(acceleration, "acceleration", low=1.0)
    center_fraction = real_number(center_fraction, "center_fraction", low=0.0, high=1.0)
    if not isinstance(kind, str) or kind not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {kind!r}")
    n_masks = positive_int(n_masks, "n_masks")
    check_generator(generator)
    n_total = max(1, int(round(w / acceleration)))
    n_center = min(int(round(w * center_fraction)), n_total)
    c0 = w // 2 - n_center // 2
    center = torch.zeros(w, dtype=torch.bool)
    center[c0:c0 + n_center] = True
    others = (~center).nonzero().flatten()
    n_rest = n_total - n_center
    k = torch.arange(w, dtype=torch.float64) - w // 2
    masks = []
    for _ in range(n_masks):
        cols = center.clone()
        if n_rest > 0:
            if kind == "random":
                pick = others[torch.randperm(len(others), generator=generator)[:n_rest]]
            elif kind == "gaussian":
                p = torch.exp(-k[others] ** 2 / (2 * (0.25 * w) ** 2))
                pick = others[torch.multinomial(p, n_rest, replacement=False, generator=generator)]
            else:
                step = len(others) / n_rest
                offset = float(torch.rand((), generator=generator)) * step
                pick = others[torch.floor(offset + step * torch.arange(n_rest)).long() % len(others)]
            cols[pick] = True
        masks.append(cols[None, :].expand(h, w).float())
    return torch.stack(masks)


def coil_sensitivities(n_coils: int, img_size, *, width: float = 0.7) -> torch.Tensor:
    """Smooth synthetic coil maps ``(n_coils, H, W)`` (complex64), ``Σ_c |S_c|² = 1`` everywhere.

    Coils sit on a circle of radius 1.2 (image half-width 1) at equal angles; magnitude
    ``exp(-d² / (2 width²))`` of the distance ``d`` to the coil, phase linear in the distance
    (π/2 across the field of view), then normalised by the root sum of squares.
    """
    n_coils = positive_int(n_coils, "coils")
    _, h, w = img_size_3d(img_size)
    width = real_number(width, "width", low=0.0, low_open=True)
    ys = torch.linspace(-1, 1, h, dtype=torch.float64)
    xs = torch.linspace(-1, 1, w, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    maps = []
    for c in range(n_coils):
        a = 2 * math.pi * c / n_coils
        d2 = (xx - 1.2 * math.cos(a)) ** 2 + (yy - 1.2 * math.sin(a)) ** 2
        mag = torch.exp(-d2 / (2 * width**2))
        phase = (math.pi / 4) * torch.sqrt(d2)
        maps.append(mag * torch.exp(1j * phase))
    s = torch.stack(maps)
    s = s / torch.sqrt((s.abs() ** 2).sum(0, keepdim=True))
    return s.to(torch.complex64)


def _check_coil_maps(coil_maps, h: int, w: int) -> torch.Tensor:
    """Given coil sensitivities as a complex64 ``(N, H, W)`` tensor; ``TypeError`` unless complex,
    ``ValueError`` for another shape or NaN/Inf entries."""
    if isinstance(coil_maps, (str, bytes)) or coil_maps is None:
        raise TypeError(f"coil_maps must be a complex tensor (N, H, W), got {type(coil_maps).__name__}")
    try:
        s = torch.as_tensor(coil_maps)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"coil_maps must be a complex tensor (N, H, W), got {type(coil_maps).__name__}") from None
    if not s.is_complex():
        raise TypeError(f"coil_maps must be complex (sensitivities have a phase), got dtype {s.dtype}")
    if s.ndim == 2:
        s = s[None]
    if s.ndim != 3 or tuple(s.shape[-2:]) != (h, w) or s.shape[0] < 1:
        raise ValueError(f"coil_maps must have shape (N, {h}, {w}) or ({h}, {w}), got {tuple(s.shape)}")
    if not torch.isfinite(torch.view_as_real(s)).all():
        raise ValueError("coil_maps contains NaN or Inf values")
    return s.to(torch.complex64)


class _RealInputMixin(ShapeChecked):
    real_input: bool = True
    complex_hint = ("complex images are passed as real and imaginary channels (B, 2, H, W) with "
                    "mri_cartesian(..., real_input=False), and k-space y as real and imaginary channels, "
                    "as A returns it")

    def _to_inner(self, x):
        return torch.cat([x, torch.zeros_like(x)], dim=1) if self.real_input else x

    def _from_inner(self, x):
        return x[:, :1] if self.real_input else x

    def A_dagger(self, y, **kwargs):
        """Zero-filled reconstruction ``Aᵀ y`` (exact pseudo-inverse for single-coil complex images;
        for real images and coil arrays a unit gradient step from zero, which cannot increase
        ``‖A x - y‖`` because ``‖A‖ <= 1``)."""
        return self.A_adjoint(y)

    def prox_l2(self, z, y, gamma, **kwargs):
        """``argmin_x ½‖A x − y‖² + ‖x − z‖²/(2γ)``, i.e. ``(AᵀA + I/γ) x = Aᵀy + z/γ``.

        Real-input MRI has no SVD of deepinv's form (its singular vectors are complex), but for
        one coil its normal operator on real images is still Fourier-diagonal: for real ``x``,
        ``AᵀA x = Re(F⁻¹ M F x) = F⁻¹ diag(w) F x`` with ``w(k) = (M(k) + M(−k))/2`` (the
        conjugate symmetry of ``F x``). ``w`` is read off the operator itself, as the spectrum
        of its normal operator's impulse response, so it follows any mask and FFT convention;
        the solve is then one FFT pair. Multi-coil operators (coil maps break the symmetry) use
        CG (:func:`invdiff.linalg.cg`)."""
        if not self.real_input:
            return super().prox_l2(z, y, gamma, **kwargs)
        if self.fourier_diagonal:
            # z + (AᵀA + I/γ)⁻¹ Aᵀ(y − A z), solved where w > 0 only (above 1e-3 of its largest value,
            # far above the rounding noise of the unsampled ones): Aᵀ(·) has no component on the
            # frequencies nobody samples (w = 0), and dividing its rounding noise there by 1/γ
            # (1e-8 early in a diffusion run) would amplify it a hundred-million-fold
            w = self.normal_spectrum(z)
            r = torch.fft.fft2(self.A_adjoint(y - self.A(z)))
            sampled = w > 1e-3 * w.amax(dim=(-2, -1), keepdim=True)  # binary masks: w in {0, 1/2, 1}
            step = torch.where(sampled, r / (w + 1 / gamma), torch.zeros((), dtype=r.dtype, device=r.device))
            return z + torch.fft.ifft2(step).real.to(z.dtype)
        from ..linalg import cg

        rhs = self.A_adjoint(y) + z / gamma
        return cg(lambda x: self.A_adjoint(self.A(x)) + x / gamma, rhs, z, max_iter=100, tol=1e-8)

    @property
    def fourier_diagonal(self) -> bool:
        """Whether ``AᵀA`` on real images is diagonal in the Fourier basis (single coil, real input)."""
        return self.real_input and not isinstance(self, deepinv.physics.MultiCoilMRI)

    def normal_spectrum(self, like: torch.Tensor) -> torch.Tensor:
        """``w`` with ``AᵀA x = F⁻¹(w · F x)`` for real images shaped like ``like`` (one ``w`` per
        batch element, so per-slice masks work): the FFT of ``AᵀA δ`` for a unit impulse ``δ``."""
        delta = torch.zeros_like(like)
        delta[..., 0, 0] = 1
        return torch.fft.fft2(self.A_adjoint(self.A(delta))).real


class _MRI(_RealInputMixin, deepinv.physics.MRI):
    pass


class _MultiCoilMRI(_RealInputMixin, deepinv.physics.MultiCoilMRI):
    def _apply(self, fn, recurse=True):
        """Keep coil maps complex under ``.to(dtype)``: ``Module.to(torch.float64)`` would cast the
        complex sensitivities to real and silently drop their phase. Real dtypes map to the
        matching complex dtype for complex buffers; ``.double()``/``.float()`` work as usual."""
        maps = getattr(self, "coil_maps", None)
        out = super()._apply(fn, recurse)
        if maps is not None and maps.is_complex() and not self.coil_maps.is_complex():
            real = self.coil_maps.dtype
            self.coil_maps = maps.to(device=self.coil_maps.device,
                                     dtype=torch.complex128 if real == torch.float64 else torch.complex64)
        return out


def mri_cartesian(img_size, acceleration: float = 4.0, center_fraction: float = 0.08, *,
                  mask: str | torch.Tensor = "random", coils: int = 1, real_input: bool = True,
                  n_slices: int | None = None, generator: torch.Generator | None = None,
                  coil_maps: torch.Tensor | None = None):
    """Cartesian undersampled MRI, single- or multi-coil.

    Parameters
    ----------
    img_size : int, (H, W) or (1, H, W)
        Image size (one real channel; the complex embedding is internal).
    acceleration : float
        Undersampling factor ``W / (number of sampled columns)``, >= 1.
    center_fraction : float
        Fraction of central k-space columns always sampled.
    mask : {"random", "equispaced", "gaussian"} or tensor
        Mask kind drawn with :func:`cartesian_mask`, or a given ``(H, W)`` (shared) or
        ``(D, H, W)`` (one per slice) binary tensor.
    coils : int
        1 for single-coil, > 1 for multi-coil with :func:`coil_sensitivities`.
    real_input : bool
        Accept real images ``(B, 1, H, W)`` (default) or complex ones ``(B, 2, H, W)``.
    n_slices : int, optional
        Draw one mask per slice for a volume ``(D, 1, H, W)`` with ``D = n_slices``; the
        operator then only accepts batches of exactly ``n_slices``. Default: one shared mask.
    generator : torch.Generator, optional
        Source of randomness for the mask.
    coil_maps : complex tensor ``(N, H, W)`` or ``(H, W)``, optional
        Given coil sensitivities ``S_c`` (measured, or estimated from data as in
        :func:`invdiff.measurements.mri_from_kspace`) instead of the synthetic ones of
        :func:`coil_sensitivities`: the operator is multi-coil with ``N`` coils (``N = 1``
        included: one coil with a non-uniform sensitivity or a phase map), ``y_c = M F (S_c x)``.
        ``coils`` must then be 1 (its default) or ``N``. The maps are used as given (complex64);
        ``‖A‖ <= 1`` holds when ``Σ_c |S_c|² <= 1`` everywhere.
    """
    c, h, w = img_size_3d(img_size)
    if not isinstance(real_input, bool):
        raise TypeError(f"real_input must be True or False, got {real_input!r}")
    expected_c = 1 if real_input else 2
    if c != expected_c:
        raise ValueError(f"img_size must have {expected_c} channel(s) for real_input={real_input}, got {c}")
    coils = positive_int(coils, "coils")
    if coil_maps is not None:
        coil_maps = _check_coil_maps(coil_maps, h, w)
        if coils not in (1, coil_maps.shape[0]):
            raise ValueError(f"coils is {coils} but coil_maps holds {coil_maps.shape[0]} coil(s): leave coils at 1 "
                             f"(the count is taken from coil_maps) or give {coil_maps.shape[0]}")
    if n_slices is not None:
        n_slices = positive_int(n_slices, "n_slices")
    check_generator(generator)
    if isinstance(mask, str):
        m = cartesian_mask((h, w), acceleration, center_fraction, mask,
                           n_masks=n_slices or 1, generator=generator)
    else:
        try:
            m = real_tensor(mask, "mask", allow_bool=True)  # complex or non-numeric: TypeError
        except ValueError:
            raise ValueError("mask must be a binary (H, W) or (D, H, W) tensor, got NaN or Inf values") from None
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or tuple(m.shape[-2:]) != (h, w) or ((m != 0) & (m != 1)).any():
            binary = "" if ((m == 0) | (m == 1)).all() else "values other than 0 and 1 in "
            raise ValueError(f"mask must be a binary (H, W) or (D, H, W) tensor with H, W = {h}, {w}, "
                             f"got {binary}shape {tuple(torch.as_tensor(mask).shape)}")
        if n_slices is not None and m.shape[0] != n_slices:
            raise ValueError(f"mask holds {m.shape[0]} slices, n_slices is {n_slices}")
        empty = (m.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"mask samples no k-space location in slice(s) {empty}: the operator would "
                             f"measure nothing")
    batch = m.shape[0] if m.shape[0] > 1 else None
    dmask = m[:, None].expand(-1, 2, h, w).contiguous()  # deepinv: (B, 2, H, W)
    if coil_maps is not None:
        op = _MultiCoilMRI(mask=dmask, coil_maps=coil_maps, img_size=(2, h, w))
    elif coils == 1:
        op = _MRI(mask=dmask, img_size=(2, h, w))
    else:
        op = _MultiCoilMRI(mask=dmask, coil_maps=coil_sensitivities(coils, (h, w)), img_size=(2, h, w))
    op.real_input = real_input
    op.img_shape = (c, h, w)
    op.batch = batch
    op.acceleration = float(m[0].numel() / m[0].sum())  # k-space locations over sampled ones (any given mask)
    op._set_meas_shape()
    return op
