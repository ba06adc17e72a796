"""The ``tv`` baseline against an independent optimality certificate.

``tv`` documents that it solves

    min_x  ½‖A x − y‖² + λ Σ_{c, pixel} ‖(∇x)_{c, pixel}‖₂  s.t.  lo ≤ x ≤ hi

(isotropic TV per channel, forward differences with a zero last difference). On a tiny problem —
two 5×5 channels, an injective random dense ``A`` — the test solves the same objective with a
different algorithm (ADMM with exact dense linear solves, written here in NumPy) and certifies
the result by Fenchel duality: for any ``p`` and any ``q`` with ``‖q_pixel‖₂ ≤ λ``,

    D(p, q) = −½‖p‖² − ⟨p, y⟩ − Σ_i max(lo·w_i, hi·w_i),   w = −(Aᵀp + ∇ᵀq),

is a lower bound on the optimum, so ``P(x_admm) − D(p, q)`` brackets the optimal value. ``tv``'s
output must then be feasible (inside the box, exactly) and reach the certified value within
the O(1/N) bound of Chambolle & Pock (2011, Thm. 1) for N iterations,
``(‖x* − x₀‖²/τ + ‖(p*, q*)‖²/σ) / (2N)``, evaluated with the certificate's solution and the
documented step sizes. (That bound is for the ergodic average; on this strongly convex problem
the last iterate, which ``tv`` returns, converges linearly and lands far inside it.)

The truth has regions at 1.2 and −0.2, so the unconstrained optimum leaves [0, 1] (checked: the
box is active, otherwise dropping it would go unnoticed).
"""

import numpy as np
import pytest
import torch

from invdiff.operators import dense_operator
from invdiff.problem import Problem
from invdiff.solvers.baselines import default_weight, tv

C, H, W = 2, 5, 5
LAM = 0.1
ITERS = 4000


@pytest.fixture(scope="module")
def problem():
    d = C * H * W
    g = torch.Generator().manual_seed(0)
    M = torch.randn(2 * d, d, generator=g, dtype=torch.float64) / (2 * d) ** 0.5  # σ_min(M) ≈ 0.3: injective
    op = dense_operator((C, H, W), M)
    x_true = torch.full((1, C, H, W), -0.2, dtype=torch.float64)
    x_true[:, 0, 1:4, 1:3] = 1.2
    x_true[:, 1, 2:5, 0:4] = 0.5
    x_true[:, 1, 0:2, 3:5] = 1.2
    y = op.A(x_true) + 0.02 * torch.randn((1, 2 * d), generator=g, dtype=torch.float64)
    return Problem(op, y, 0.02), M.numpy(), y.numpy().ravel()


def _gradient_matrix() -> np.ndarray:
    """∇ as a dense (2d, d) matrix, rows [∂_H of every (c, i, j); ∂_W of every (c, i, j)], built here
    from the definition (x[i+1] − x[i], zero on the last row/column) — not from the library."""
    d = C * H * W
    idx = np.arange(d).reshape(C, H, W)
    G = np.zeros((2 * d, d))
    for c in range(C):
        for i in range(H):
            for j in range(W):
                r = idx[c, i, j]
                if i + 1 < H:
                    G[r, idx[c, i + 1, j]], G[r, r] = 1.0, -1.0
                if j + 1 < W:
                    G[d + r, idx[c, i, j + 1]], G[d + r, r] = 1.0, -1.0
    return G


GRAD = _gradient_matrix()


# How the 2·d gradient entries (rows of GRAD) are grouped under one Euclidean norm, as ``reshape(k, -1)``
# with the norm over the first axis: the documented isotropic per-channel TV pairs ∂_H and ∂_W of one
# channel at one pixel (k = 2); the slips a test must tell apart are anisotropic TV, every entry alone
# (k = 1), and vectorial TV, one norm over both differences of all channels at a pixel (k = 2C).
ISOTROPIC, ANISOTROPIC, VECTORIAL = 2, 1, 2 * C


def _objective(M, y, x, lam, k=ISOTROPIC):
    """½‖Mx − y‖² + λ Σ_groups ‖(∇x)_group‖₂ (box not included)."""
    r = M @ x - y
    g = (GRAD @ x).reshape(k, -1)
    return 0.5 * r @ r + lam * np.sqrt((g**2).sum(0)).sum()


def _certified_optimum(M, y, lam, lo, hi, k=ISOTROPIC, rho=1.0, tol=1e-10, max_iters=30000):
    """ADMM on x with splits z₁ = ∇x (group shrinkage) and z₂ = x (box), run until the duality gap
    certifies the optimal value to ``tol`` (relative).

    Returns ``(x*, P(x*), lower bound, p*, q*)``; ``q* = ρ u₁`` is in the λ-ball by construction."""
    d = M.shape[1]
    solve = np.linalg.inv(M.T @ M + rho * GRAD.T @ GRAD + rho * np.eye(d))
    aty = M.T @ y
    x, z1, u1, z2, u2 = np.zeros(d), np.zeros(2 * d), np.zeros(2 * d), np.zeros(d), np.zeros(d)
    for it in range(1, max_iters + 1):
        x = solve @ (aty + rho * GRAD.T @ (z1 - u1) + rho * (z2 - u2))
        v = (GRAD @ x + u1).reshape(k, -1)
        shrink = np.maximum(1 - (lam / rho) / np.maximum(np.sqrt((v**2).sum(0)), 1e-300), 0.0)
        z1 = (v * shrink).ravel()
        z2 = np.clip(x + u2, lo, hi)
        u1 += GRAD @ x - z1
        u2 += x - z2
        if it % 200 == 0:
            xf = np.clip(x, lo, hi)
            p, q = M @ xf - y, rho * u1
            assert np.sqrt((q.reshape(k, -1) ** 2).sum(0)).max() <= lam * (1 + 1e-12)  # dual feasible
            w = -(M.T @ p + GRAD.T @ q)
            lower = -0.5 * p @ p - p @ y - np.maximum(lo * w, hi * w).sum()
            primal = _objective(M, y, xf, lam, k)
            if primal - lower < tol * (1 + abs(primal)):
                return xf, primal, lower, p, q
    raise AssertionError(f"the reference did not converge: gap {primal - lower:.2e}")


def _pdhg_budget(M, x_star, p_star, q_star, x0, iters):
    """Chambolle–Pock's O(1/N) bound with tv's documented steps τ = 10·0.99/‖K‖, σ = 0.99/(10‖K‖),
    ‖K‖² = ‖A‖² + 8, starting from x₀ and zero duals."""
    norm_k = (np.linalg.norm(M, 2) ** 2 + 8.0) ** 0.5
    tau, sigma = 10 * 0.99 / norm_k, 0.99 / (10 * norm_k)
    return (np.sum((x_star - x0) ** 2) / tau + (p_star @ p_star + q_star @ q_star) / sigma) / (2 * iters)


@pytest.mark.parametrize("box", [(0.0, 1.0), None])
def test_tv_reaches_the_certified_optimum(problem, box):
    pb, M, y = problem
    lo, hi = box if box is not None else (-10.0, 10.0)  # a box this wide is inactive (checked below)
    x_star, primal, lower, p_star, q_star = _certified_optimum(M, y, LAM, lo, hi)
    x0 = torch.full((1, C, H, W), 0.5, dtype=torch.float64)
    budget = _pdhg_budget(M, x_star, p_star, q_star, x0.numpy().ravel(), ITERS)
    # The budget is tight enough to tell the documented objective from its neighbours: the optima for
    # 2λ (e.g. a doubled dual radius), λ/2 (a data term without its ½: ‖Ax − y‖² + λ TV has the minimiser
    # of ½‖Ax − y‖² + (λ/2) TV), anisotropic and vectorial TV all miss the documented optimum by more than
    # twice the budget, so a tv that solved any of them fails below.
    for lam, k in ((2 * LAM, ISOTROPIC), (LAM / 2, ISOTROPIC), (LAM, ANISOTROPIC), (LAM, VECTORIAL)):
        x_other = _certified_optimum(M, y, lam, lo, hi, k)[0]
        assert _objective(M, y, x_other, LAM) - primal > 2 * budget, (lam, k)

    x = tv(pb, LAM, iters=ITERS, box=box, x0=x0)
    xn = x.numpy().ravel()
    if box is None:
        assert -10 < x_star.min() and x_star.max() < 10  # the wide box was inactive: x* is the unconstrained one
        assert x_star.min() < -0.1 and x_star.max() > 1.1  # the unconstrained optimum leaves [0, 1] ...
        assert xn.min() < -0.1 and xn.max() > 1.1  # (and box=None does drop the constraint)
    else:
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # ... so the box must be enforced exactly
        assert (x_star == 0).sum() >= 3 and (x_star == 1).sum() >= 3  # and it is active at the optimum
    excess = _objective(M, y, xn, LAM) - lower  # ≥ P(x) − P*, since lower ≤ P*
    assert excess >= -1e-12 and excess <= budget, (excess, budget)


def test_tv_default_weight_rule(problem):
    """``lam=None`` is the documented MAP rule λ = σ_y² / 0.05, with σ_y floored at 1e-3."""
    pb, _, _ = problem
    assert default_weight("tv", 0.02) == pytest.approx(0.02**2 / 0.05, rel=1e-15)
    assert default_weight("tv", 0.0) == pytest.approx(1e-3**2 / 0.05, rel=1e-15)
    assert torch.equal(tv(pb, iters=20), tv(pb, 0.02**2 / 0.05, iters=20))
    assert not torch.equal(tv(pb, iters=20), tv(pb, 2 * 0.02**2 / 0.05, iters=20))
