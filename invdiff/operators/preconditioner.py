"""A circulant preconditioner for the normal equations ``(AᵀA + μ I) x = b`` of an image operator.

The normal map ``AᵀA`` is replaced by the convolution whose kernel is its response to an
impulse at the image centre (the point-spread function of ``AᵀA``), the circulant
approximation of T. Chan ("An optimal circulant preconditioner for Toeplitz systems", SIAM J.
Sci. Stat. Comput. 9, 1988) taken from one application of the operator. Its eigenvalues are the
DFT of that response, ``h(ω)``, and the preconditioner divides by them in the Fourier domain:

.. math::
    P_μ r = F^{-1}\\big[\\, F r \\,/\\, (h(ω) + \\max(μ, δ\\,\\max_ω h)) \\,\\big].

For parallel-beam CT with ``n`` views, ``h`` is the ``1/|ω|`` weight of filtered back-projection
on the ``n`` Fourier lines the views sample (Fourier slice theorem), for a circulant blur it is
the blur's own ``|K(ω)|²``. The floor ``δ`` (relative to the largest eigenvalue) leaves the
directions with ``h(ω) < δ max h`` to CG's own slow progress: those are the near-null
directions of the operator, where fitting the data fast fits the noise (the reason DiffPIR
solves its data step with a few CG iterations and not exactly, :mod:`invdiff.solvers.diffpir`).

==============  ===========================================================
symbol          code
==============  ===========================================================
``h(ω)``        ``spectrum``: real DFT of ``AᵀA δ_centre``, shifted to the origin
``δ``           ``floor``: fraction of ``max h`` below which ``h`` is not inverted
``μ``           ``mu`` of :meth:`CirculantPreconditioner.for_mu`
==============  ===========================================================
"""

from __future__ import annotations

import torch

__all__ = ["CirculantPreconditioner"]


class CirculantPreconditioner:
    """``P_μ ≈ (AᵀA + μ I)⁻¹`` from the impulse response of ``AᵀA``; see the module's description.

    Parameters
    ----------
    physics : deepinv Physics
        The operator ``A``, acting on images ``(B, C, H, W)``.
    shape : tuple of int
        The shape of the unknowns, ``(B, C, H, W)``; one spectrum per batch element and channel
        (operators with per-image parameters, such as one MRI mask per slice, get their own).
    floor : float
        ``δ`` in ``[0, 1)``: eigenvalues below ``δ · max h`` are treated as ``δ · max h``.
    dtype, device
        Of the spectrum (default float32 on the CPU).

    Raises
    ------
    ValueError
        A shape that is not 4-D or a floor outside ``[0, 1)``.
    """

    def __init__(self, physics, shape, *, floor: float = 0.05, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4:
            raise ValueError(f"shape must be (B, C, H, W), got {shape}")
        if not 0 <= floor < 1:
            raise ValueError(f"floor must be in [0, 1), got {floor}")
        h, w = shape[-2:]
        impulse = torch.zeros(shape, dtype=dtype, device=device)
        impulse[..., h // 2, w // 2] = 1
        with torch.no_grad():
            psf = physics.A_adjoint(physics.A(impulse))
        psf = (psf.real if psf.is_complex() else psf).to(dtype)
        psf = torch.roll(psf, shifts=(-(h // 2), -(w // 2)), dims=(-2, -1))  # the centre to the origin
        self.spectrum = torch.fft.fft2(psf).real.clamp_min(0)
        self.floor = float(floor)
        self._top = self.spectrum.amax(dim=(-2, -1), keepdim=True)

    def for_mu(self, mu: float):
        """``r -> P_μ r`` for the system ``(AᵀA + μ I) x = b`` (``μ >= 0``), as :func:`invdiff.linalg.cg`'s ``precond``."""
        if not mu >= 0:
            raise ValueError(f"mu must be >= 0, got {mu}")
        denom = self.spectrum + torch.maximum(torch.full_like(self._top, float(mu)), self.floor * self._top)
        denom = denom.clamp_min(1e-12 * float(self._top.max()))  # floor = mu = 0 on a null frequency

        def apply(r: torch.Tensor) -> torch.Tensor:
            return torch.fft.ifft2(torch.fft.fft2(r) / denom).real.to(r.dtype)

        return apply
