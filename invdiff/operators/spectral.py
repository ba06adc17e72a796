"""The singular value decomposition of an operator, where it has one, and what solvers build on it.

deepinv's :class:`~deepinv.physics.DecomposablePhysics` carries ``A = U diag(s) Vᴴ`` as the
maps ``U``, ``U_adjoint``, ``V``, ``V_adjoint`` and the singular values ``s`` (its ``mask``):
inpainting (``U = V = I``, ``s`` the mask), FFT-diagonalised blur and super-resolution-free
circulant operators (``U = V = F``), complex-input Cartesian MRI, and :func:`dense_operator`.
The SVD-based solvers (DDRM, ΠGDM) and RED-Diff's start use the helpers below instead of
reaching into ``physics.mask`` themselves.
"""

from __future__ import annotations

import torch

__all__ = ["has_svd", "require_svd", "singular_values", "truncated_pinv", "real_part", "has_exact_prox", "has_binary_spectrum", "data_prox",
           "diagonal_normal"]


def has_svd(physics) -> bool:
    """Whether ``physics`` carries an SVD over the images it takes.

    deepinv ``DecomposablePhysics`` do, except real-input MRI: its singular vectors (Fourier
    modes) live on complex images, and the real-to-complex map has no SVD of that form.
    """
    import deepinv

    return isinstance(physics, deepinv.physics.DecomposablePhysics) and not getattr(physics, "real_input", False)


def require_svd(physics, who: str):
    """Return ``physics`` if it has an SVD (:func:`has_svd`), else a ``ValueError`` naming ``who``."""
    if not has_svd(physics):
        why = ("real-input MRI (its SVD acts on complex images; build it with real_input=False)"
               if getattr(physics, "real_input", False) else type(physics).__name__.lstrip("_"))
        raise ValueError(f"{who} needs an operator with an SVD (deepinv DecomposablePhysics: inpainting, "
                         f"circular blur, complex-input MRI, dense), got {why}; use a solver that needs only "
                         f"A and its adjoint (DPS, DiffPIR, SMC, DAPS, RED-Diff) for this operator")
    return physics


def singular_values(physics, like: torch.Tensor | None = None) -> torch.Tensor:
    """The singular values ``s`` of ``A = U diag(s) Vᴴ``, shaped like the spectral coordinates.

    Complex for FFT-diagonalised operators (``|s|`` are the singular values proper; the phase
    belongs to ``U``). ``like`` gives the dtype and device to return them in (real parts
    only converted).
    """
    s = require_svd(physics, "singular_values").mask
    s = torch.as_tensor(s)
    if like is not None and not s.is_complex():
        s = s.to(dtype=like.dtype, device=like.device)
    return s


def real_part(t: torch.Tensor) -> torch.Tensor:
    """``t.real`` for complex tensors (FFT-diagonalised operators), ``t`` otherwise."""
    return t.real if t.is_complex() else t


def truncated_pinv(physics, y: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``V diag(1/s · [|s| > cutoff]) Uᴴ y``: the pseudo-inverse with small singular values dropped.

    deepinv's ``A_dagger`` drops only ``s ≤ 1e-5``; on a Gaussian blur that amplifies the
    measurement noise by up to 10⁹. A ``cutoff`` such as 0.05 keeps the start of RED-Diff
    (and any other user) bounded. Singular values ``≤ 1e-5`` are always dropped.
    """
    s = singular_values(physics, y)
    keep = s > max(cutoff, 1e-5)
    return physics.V(physics.U_adjoint(y) * torch.where(keep, 1 / torch.where(keep, s, 1), 0))


def has_exact_prox(physics) -> bool:
    """Whether ``physics.prox_l2`` is a closed form: operators with an SVD (deepinv's
    ``DecomposablePhysics`` prox), circular downsampling (deepinv's FFT closed form) and
    single-coil real-input MRI (Fourier-diagonal normal operator, :mod:`invdiff.operators.mri`)."""
    import deepinv

    return (has_svd(physics) or getattr(physics, "fourier_diagonal", False)
            or (isinstance(physics, deepinv.physics.Downsampling) and getattr(physics, "padding", "") == "circular"))


def has_binary_spectrum(physics) -> bool:
    """Whether ``AᵀA`` has a closed form whose nonzero eigenvalues are bounded away from zero:
    masks (inpainting: singular values 0 or 1) and single-coil real-input MRI (0, ½ or 1).

    There the closed-form solve of :func:`data_prox` cannot amplify the measurement noise. Blur and
    anti-aliased downsampling have singular values arbitrarily close to zero: for a tiny μ (the first
    steps of a diffusion run, μ ~ 1e-7) their exact solve fits the noise on those directions, which
    CG stopped after a few iterations barely moves — DiffPIR keeps CG there (its presets were tuned
    with it; with 2 steps the exact solve drops a deblurred photograph from 24 to 6 dB).
    """
    if getattr(physics, "fourier_diagonal", False):
        return True
    if not has_svd(physics):
        return False
    s = torch.as_tensor(singular_values(physics)).abs()
    return bool(((s < 1e-6) | (s > 0.1)).all())


def data_prox(physics, y: torch.Tensor, z: torch.Tensor, mu: float, *, cg_iters: int, tol: float = 1e-6,
              closed_form: bool | None = None, precond=None):
    """``argmin_x ½‖A x − y‖² + (μ/2)‖x − z‖²``, i.e. ``(AᵀA + μ I) x = Aᵀy + μ z``.

    The operator's closed form where it has one and ``closed_form`` allows it (``None``:
    :func:`has_exact_prox`), otherwise the package's CG (:func:`invdiff.linalg.cg`) warm-started
    at ``z`` with ``cg_iters`` iterations, preconditioned by ``precond``
    (a :class:`~invdiff.operators.preconditioner.CirculantPreconditioner`) when given.
    """
    if closed_form is False or not has_exact_prox(physics):
        from ..linalg import cg

        if precond is None and _is_circular_blur(physics):
            return _fourier_cg(physics, y, z, mu, cg_iters=cg_iters, tol=tol)
        return cg(lambda v: physics.A_adjoint(physics.A(v)) + mu * v, physics.A_adjoint(y) + mu * z, z,
                  max_iter=cg_iters, tol=tol, precond=None if precond is None else precond.for_mu(mu))
    if has_svd(physics):
        # z + V diag(s̄ / (|s|² + μ)) Uᴴ (y − A z): the residual form with the SVD's own factors.
        # deepinv's prox divides Vᴴ(Aᵀy + μ z) by |s|² + μ, whose rounding noise on tiny singular
        # values is amplified by 1/μ (μ ~ 1e-8 early in a diffusion run); here by at most 1/(2√μ).
        s = singular_values(physics)
        c = physics.U_adjoint(y - physics.A(z))
        s = s.to(device=c.device, dtype=c.dtype if s.is_complex() or not c.is_complex() else c.real.dtype)
        return z + real_part(physics.V(s.conj() * c / (s.abs() ** 2 + mu))).to(z.dtype)
    return physics.prox_l2(z, y, 1.0 / mu)


def _is_circular_blur(physics) -> bool:
    import deepinv

    return isinstance(physics, deepinv.physics.BlurFFT)


def _fourier_cg(physics, y: torch.Tensor, z: torch.Tensor, mu: float, *, cg_iters: int, tol: float) -> torch.Tensor:
    """The CG of :func:`data_prox` for a circular blur, run on the image's Fourier coefficients.

    ``AᵀA + μI = V diag(|s|² + μ) Vᴴ`` with ``Vᴴ`` the orthonormal real FFT (deepinv's
    ``BlurFFT.V_adjoint``: half spectrum, real and imaginary parts on a last axis of 2). The
    coefficients are weighted by ``√w_k`` (``w_k = 2`` for the columns whose conjugate twin is not
    stored, 1 for column 0 and, when ``W`` is even, ``W/2``), so that their Euclidean inner product
    is that of the images. CG is unchanged by such an orthonormal change of basis: its iterates are
    those of the spatial CG up to rounding, with an elementwise ``AᵀA`` instead of two FFTs per
    iteration. (At the tiny μ of a diffusion run's first steps the system's condition number
    reaches 10⁶ and more; there rounding makes any two CG implementations drift apart after tens of
    iterations.)
    """
    from ..linalg import cg

    width = physics.img_size[-1]
    cols = width // 2 + 1
    sqrt_w = torch.full((cols, 1), 2.0 ** 0.5, dtype=z.dtype, device=z.device)
    sqrt_w[0] = 1.0
    if width % 2 == 0:
        sqrt_w[-1] = 1.0
    eig = physics.mask.to(device=z.device, dtype=z.dtype) ** 2 + mu  # |s|² + μ, on both real/imag parts
    rhs = sqrt_w * physics.V_adjoint(physics.A_adjoint(y) + mu * z)
    coeffs = cg(lambda v: eig * v, rhs, sqrt_w * physics.V_adjoint(z), max_iter=cg_iters, tol=tol)
    return physics.V(coeffs / sqrt_w).to(z.dtype)


def diagonal_normal(physics, like: torch.Tensor):
    """``(to, back, w)`` with ``AᵀA x = back(w · to(x))`` for real images ``x`` shaped like ``like``,
    where the normal operator is diagonal in a known orthonormal basis; ``None`` otherwise.

    * masks (deepinv ``Inpainting``): the pixel basis, ``w`` the mask (``AᵀA 1``);
    * circular blur (deepinv ``BlurFFT``) and single-coil real-input MRI (``fourier_diagonal``):
      the unitary 2D DFT, ``w`` the DFT of the normal operator's impulse response (real, and
      symmetric ``w(k) = w(−k)``, so ``back(g · to(x))`` is real for any real ``g`` built from ``w``).

    ``to`` maps an image to its coefficients, ``back`` maps coefficients to a real image.
    """
    import deepinv

    if isinstance(physics, deepinv.physics.Inpainting):
        w = physics.A_adjoint(physics.A(torch.ones_like(like)))
        return (lambda x: x), (lambda c: c), w
    if _is_circular_blur(physics) or getattr(physics, "fourier_diagonal", False):
        delta = torch.zeros_like(like)
        delta[..., 0, 0] = 1
        w = torch.fft.fft2(physics.A_adjoint(physics.A(delta))).real
        return (lambda x: torch.fft.fft2(x, norm="ortho")), (lambda c: torch.fft.ifft2(c, norm="ortho").real), w
    return None
