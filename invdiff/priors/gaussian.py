"""Exact priors: Gaussian and Gaussian mixtures, with exact denoisers and exact posteriors.

These are the ground truth every solver is tested against. For a Gaussian prior
``x0 ~ N(m, C)`` and ``x_σ = x0 + σ ε``,

.. math:: E[x_0 \\mid x_σ] = m + C (C + σ^2 I)^{-1} (x_σ - m),

and for a linear Gaussian measurement ``y = A x0 + σ_y n`` the posterior is Gaussian with

.. math::
    S = A C Aᵀ + σ_y^2 I,\\quad K = C Aᵀ S^{-1},\\quad
    μ = m + K (y - A m),\\quad Σ = C - K A C .

For a mixture ``Σ_k w_k N(m_k, C_k)`` both results are mixtures: the denoiser averages the
component denoisers with responsibilities ``r_k(x) ∝ w_k N(x; m_k, C_k + σ² I)``, and the
posterior has components ``N(μ_k, Σ_k)`` with weights ``∝ w_k N(y; A m_k, S_k)``.

All linear algebra runs in float64 on eigendecompositions ``C_k = U_k Λ_k U_kᵀ`` computed
once; results are cast back to the input's dtype.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ..devices import module_device, multinomial, randn
from .prior import Prior

__all__ = ["GaussianPrior", "GaussianMixturePrior", "Gaussian", "GaussianMixture", "as_matrix"]

_LOG2PI = math.log(2 * math.pi)
MAX_DENSE_DIM = 4096


def as_matrix(A, event_shape) -> tuple[torch.Tensor, tuple]:
    """Dense float64 matrix ``(m, d)`` of a linear operator and the measurement's event shape.

    ``A`` is a 2D tensor (used as is) or a deepinv ``LinearPhysics``, materialised by applying
    a float64 copy of it to the ``d`` standard basis images (``d <= 4096``) on its device. ``A`` is
    not modified.
    """
    d = math.prod(event_shape)
    if isinstance(A, torch.Tensor):
        if A.ndim != 2 or A.shape[1] != d:
            raise ValueError(f"operator matrix must have shape (m, {d}), got {tuple(A.shape)}")
        return A.to(torch.float64), (A.shape[0],)
    if not hasattr(A, "A"):
        raise ValueError(f"operator must be a (m, d) tensor or a deepinv LinearPhysics, got {type(A).__name__}")
    if d > MAX_DENSE_DIM:
        raise ValueError(f"cannot materialise an operator on {d} unknowns (limit {MAX_DENSE_DIM})")
    op = copy.deepcopy(A).double()
    basis = torch.eye(d, dtype=torch.float64, device=module_device(op)).reshape((d,) + tuple(event_shape))
    with torch.no_grad():
        cols = op.A(basis)
    return cols.reshape(d, -1).T.contiguous(), tuple(cols.shape[1:])


def _flat_y(y: torch.Tensor, meas_shape: tuple) -> torch.Tensor:
    if tuple(y.shape[-len(meas_shape):]) != tuple(meas_shape):
        raise ValueError(f"y must have shape (B, {', '.join(map(str, meas_shape))}), got {tuple(y.shape)}")
    return y.reshape(-1, math.prod(meas_shape)).to(torch.float64)


def _mvn_logpdf(r: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """log N(r; 0, S) for residuals ``r`` (..., m) and covariances ``S`` (..., m, m)."""
    L = torch.linalg.cholesky(S)
    z = torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((z**2).sum(-1) + logdet + r.shape[-1] * _LOG2PI)


def _sqrtm_psd(C: torch.Tensor) -> torch.Tensor:
    """The principal square root ``C^{1/2} = U Λ^{1/2} Uᵀ`` of a PSD matrix (batched).

    Unlike the factor ``U Λ^{1/2}``, it does not depend on the signs (or, for repeated
    eigenvalues, the basis) that ``eigh`` picks for the eigenvectors, which vary with the
    LAPACK build and thread count: a seeded draw ``μ + C^{1/2} z`` is then the same everywhere
    up to rounding."""
    lam, U = torch.linalg.eigh(C)
    root = (U * lam.clamp_min(0).sqrt().unsqueeze(-2)) @ U.transpose(-1, -2)
    return 0.5 * (root + root.transpose(-1, -2))


@dataclass
class GaussianMixture:
    """Batch of Gaussian mixtures: ``weights (B, K)``, ``means (B, K, d)``, ``covs (K, d, d)``.

    ``event_shape`` restores image shapes in :attr:`mean` and :meth:`sample`.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    event_shape: tuple

    @property
    def mean(self) -> torch.Tensor:
        """``(B, *event_shape)`` mixture mean."""
        m = (self.weights.unsqueeze(-1) * self.means).sum(1)
        return m.reshape((-1,) + tuple(self.event_shape))

    @property
    def cov(self) -> torch.Tensor:
        """``(B, d, d)`` mixture covariance (law of total covariance)."""
        m = (self.weights.unsqueeze(-1) * self.means).sum(1)
        second = torch.einsum("bk,kij->bij", self.weights, self.covs) + \
            torch.einsum("bk,bki,bkj->bij", self.weights, self.means, self.means)
        return second - m.unsqueeze(-1) * m.unsqueeze(-2)

    @property
    def var(self) -> torch.Tensor:
        """``(B, *event_shape)`` marginal variances."""
        return torch.diagonal(self.cov, dim1=-2, dim2=-1).reshape((-1,) + tuple(self.event_shape))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws per batch element, ``(n, B, *event_shape)``, on the device of the means
        (drawn from ``generator`` on its own device, :mod:`invdiff.devices`)."""
        B, K, d = self.means.shape
        comp = multinomial(self.weights, n, replacement=True, generator=generator).T  # (n, B)
        roots = _sqrtm_psd(self.covs)  # (K, d, d)
        z = randn((n, B, d), generator=generator, dtype=torch.float64, device=self.means.device)
        means = self.means[torch.arange(B, device=comp.device)[None, :], comp]  # (n, B, d)
        x = means + torch.einsum("nbij,nbj->nbi", roots[comp], z)
        return x.reshape((n, B) + tuple(self.event_shape))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density at ``x`` ``(..., B, *event_shape)`` → ``(..., B)``."""
        d = self.means.shape[-1]
        xf = x.reshape(x.shape[: x.ndim - len(self.event_shape)] + (d,)).to(torch.float64)
        r = xf.unsqueeze(-2) - self.means  # (..., B, K, d)
        lp = _mvn_logpdf(r, self.covs) + torch.log(self.weights.clamp_min(1e-300))
        return torch.logsumexp(lp, dim=-1)


@dataclass
class Gaussian(GaussianMixture):
    """A batch of Gaussians sharing one covariance (a one-component :class:`GaussianMixture`)."""

    @classmethod
    def from_mean_cov(cls, mean: torch.Tensor, cov: torch.Tensor, event_shape) -> "Gaussian":
        return cls(weights=torch.ones(mean.shape[0], 1, dtype=torch.float64, device=mean.device), means=mean[:, None],
                   covs=cov[None], event_shape=tuple(event_shape))


class GaussianMixturePrior(Prior):
    """Gaussian-mixture prior ``Σ_k w_k N(m_k, C_k)`` on any event shape, with exact denoiser.

    Parameters
    ----------
    weights : tensor (K,)
        Mixture weights (normalised here; must be positive).
    means : tensor (K, *event_shape)
        Component means, e.g. ``(K, 1, 1, 8)`` vectors or ``(K, 1, 8, 8)`` images.
    covs : tensor (K, d, d), (d, d), (K, *event_shape), or float
        Full covariances (per component or shared), diagonal variances per component, or one
        isotropic variance. ``d = prod(event_shape) <= 4096``.
    """

    def __init__(self, weights, means, covs):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        K = means.shape[0]
        self.event_shape = tuple(means.shape[1:])
        d = math.prod(self.event_shape)
        if d > MAX_DENSE_DIM:
            raise ValueError(f"mixture priors are dense: d = {d} > {MAX_DENSE_DIM}")
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if w.shape[0] != K or not torch.isfinite(w).all() or (w <= 0).any():
            raise ValueError(f"weights must be {K} positive finite numbers, got {weights!r}")
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.ndim == 0:
            covs = covs * torch.eye(d, dtype=torch.float64).expand(K, d, d)
        elif tuple(covs.shape) == (d, d):
            covs = covs.expand(K, d, d)
        elif tuple(covs.shape) == (K,) + self.event_shape:
            covs = torch.diag_embed(covs.reshape(K, d))
        elif tuple(covs.shape) != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), ({d}, {d}), ({K}, *{self.event_shape}) "
                             f"or be a float, got {tuple(covs.shape)}")
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        lam, U = torch.linalg.eigh(covs)
        if (lam < -1e-10 * lam.abs().max()).any():
            raise ValueError("covariances must be positive semi-definite")
        self.register_buffer("log_weights", torch.log(w / w.sum()))
        self.register_buffer("means", means.reshape(K, d).clone())
        self.register_buffer("covs", covs.contiguous())
        self.register_buffer("eigvals", lam.clamp_min(0))
        self.register_buffer("eigvecs", U)
        self.img_shape = self.event_shape
        self.sigma_min, self.sigma_max = 2e-3, 80.0
        # the prior's own scale: total per-coordinate variance (within and between components),
        # and the envelope of mean ± 4 std of every component
        w = self.weights
        mean = w @ self.means
        var = w @ (torch.diagonal(self.covs, dim1=-2, dim2=-1) + (self.means - mean) ** 2)
        self.data_std = float(var.mean().sqrt())
        sd = torch.diagonal(self.covs, dim1=-2, dim2=-1).clamp_min(0).sqrt()
        self.data_range = (float((self.means - 4 * sd).min()), float((self.means + 4 * sd).max()))

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _flatten(self, x):
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    def responsibilities(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x)`` at noise level ``sigma``, ``(B, K)``."""
        self.check_input(x)
        from .prior import as_sigma

        s = as_sigma(sigma, x, owner=type(self).__name__).reshape(-1, 1, 1).to(torch.float64)
        return self._component_terms(self._flatten(x), s)[0]

    def _component_terms(self, xf, s):
        """Responsibilities (B, K) and rotated residuals ``z = Uᵀ(x − m)`` (B, K, d)."""
        r = xf[:, None, :] - self.means[None]  # (B, K, d)
        z = torch.einsum("kji,bkj->bki", self.eigvecs, r)
        var = self.eigvals[None] + s**2  # (B, K, d)
        logp = -0.5 * ((z**2 / var).sum(-1) + torch.log(var).sum(-1) + self.dim * _LOG2PI)
        resp = torch.softmax(logp + self.log_weights[None], dim=-1)
        return resp, z, var

    def _denoise(self, x, sigma):
        s = sigma.reshape(-1, 1, 1).to(torch.float64)
        resp, z, var = self._component_terms(self._flatten(x), s)
        shrunk = z * self.eigvals[None] / var  # Λ (Λ + σ²)⁻¹ z
        comp = self.means[None] + torch.einsum("kij,bkj->bki", self.eigvecs, shrunk)  # (B, K, d)
        out = (resp.unsqueeze(-1) * comp).sum(1)
        return out.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """Log density of the noisy marginal ``p_σ`` at ``x`` ``(B, *event)`` (``sigma = 0``: the prior)."""
        self.check_input(x)
        dist = GaussianMixture(self.weights.expand(x.shape[0], -1),
                               self.means.expand(x.shape[0], -1, -1),
                               self.covs + sigma**2 * torch.eye(self.dim, dtype=torch.float64, device=self.covs.device),
                               self.event_shape)
        return dist.log_prob(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact prior draws, ``(n, *event_shape)`` float64."""
        dist = GaussianMixture(self.weights[None], self.means[None], self.covs, self.event_shape)
        return dist.sample(n, generator)[:, 0]

    def posterior(self, A, y: torch.Tensor, sigma_y: float) -> GaussianMixture:
        """Exact posterior ``p(x0 | y)`` for ``y = A x0 + sigma_y n`` (one per batch element of ``y``).

        ``A`` is an ``(m, d)`` tensor or a deepinv ``LinearPhysics`` (materialised).
        """
        if not (math.isfinite(sigma_y) and sigma_y >= 0):
            raise ValueError(f"sigma_y must be finite and >= 0, got {sigma_y!r}")
        M, meas_shape = as_matrix(A, self.event_shape)
        M = M.to(self.covs.device)
        yf = _flat_y(y, meas_shape).to(self.covs.device)
        m = M.shape[0]
        C = self.covs  # (K, d, d)
        S = M @ C @ M.T + sigma_y**2 * torch.eye(m, dtype=torch.float64, device=C.device)  # (K, m, m)
        S = 0.5 * (S + S.transpose(-1, -2))
        gain = torch.linalg.solve(S, M @ C).transpose(-1, -2)  # K_k = C Aᵀ S⁻¹, (K, d, m)
        resid = yf[:, None, :] - (self.means @ M.T)[None]  # (B, K, m)
        means = self.means[None] + torch.einsum("kdm,bkm->bkd", gain, resid)
        covs = C - gain @ M @ C
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        logw = self.log_weights[None] + _mvn_logpdf(resid, S[None])
        return GaussianMixture(torch.softmax(logw, dim=-1), means, covs, self.event_shape)


class GaussianPrior(GaussianMixturePrior):
    """Gaussian prior ``N(m, C)`` with exact denoiser, sampler and posterior.

    ``cov`` is a full ``(d, d)`` matrix (``d = prod(mean.shape) <= 4096``), a tensor shaped like
    ``mean`` holding per-pixel variances (diagonal covariance: any size, the denoiser never
    forms a matrix), or a float (isotropic).
    """

    def __init__(self, mean, cov):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        self._diag = None
        d = math.prod(mean.shape)
        if cov.ndim == 0:
            cov = cov.expand(mean.shape)
        if tuple(cov.shape) == tuple(mean.shape) and cov.shape != (d, d) and d > MAX_DENSE_DIM:
            Prior.__init__(self)
            if (cov < 0).any():
                raise ValueError("variances must be >= 0")
            self.event_shape = tuple(mean.shape)
            self.img_shape = self.event_shape
            self.register_buffer("diag_mean", mean.clone())
            self.register_buffer("diag_var", cov.clone())
            self._diag = True
            self.sigma_min, self.sigma_max = 2e-3, 80.0
            return
        if tuple(cov.shape) == tuple(mean.shape) and cov.shape != (d, d):
            cov = cov[None]  # per-pixel variances of the single component
        elif tuple(cov.shape) == (d, d):
            pass
        else:
            raise ValueError(f"cov must be ({d}, {d}), shaped like mean {tuple(mean.shape)}, or a float; "
                             f"got {tuple(cov.shape)}")
        super().__init__(torch.ones(1), mean[None], cov)

    @property
    def mean(self) -> torch.Tensor:
        return self.diag_mean if self._diag else self.means[0].reshape(self.event_shape)

    @property
    def cov(self) -> torch.Tensor:
        if self._diag:
            raise ValueError("this GaussianPrior is diagonal and too large to form its covariance; use .var")
        return self.covs[0]

    @property
    def var(self) -> torch.Tensor:
        return self.diag_var if self._diag else torch.diagonal(self.covs[0]).reshape(self.event_shape)

    def _denoise(self, x, sigma):
        if not self._diag:
            return super()._denoise(x, sigma)
        s2 = sigma.to(torch.float64) ** 2
        out = self.diag_mean + self.diag_var / (self.diag_var + s2) * (x.to(torch.float64) - self.diag_mean)
        return out.to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self._diag:
            return super().sample(n, generator)
        z = randn((n,) + self.event_shape, generator=generator, dtype=torch.float64, device=self.diag_mean.device)
        return self.diag_mean + self.diag_var.sqrt() * z

    def posterior(self, A, y, sigma_y) -> Gaussian:
        if self._diag:
            raise ValueError("exact posteriors need a dense covariance (d <= 4096)")
        mix = super().posterior(A, y, sigma_y)
        return Gaussian(mix.weights, mix.means, mix.covs, mix.event_shape)
