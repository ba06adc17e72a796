"""RED-Diff's init and one step written out by hand (written to kill surviving mutants: benchmarks/mutation.md):
a non-SVD operator (CT: u₀ = A†(2y − A1) by FBP), a one-measurement operator (m = 1), several samples, the
reported loss and the state's x̂0; and the hyperparameter bounds."""

import pytest
import torch

from invdiff import Problem
from invdiff.operators import ct_sparse_view, dense_operator
from invdiff.priors import GaussianPrior
from invdiff.solvers.reddiff import REDDiff

D64 = torch.float64


def _prior(n):
    d = n * n
    idx = torch.arange(d, dtype=D64)
    cov = 0.04 * torch.exp(-(idx[:, None] - idx[None, :]) ** 2 / 8) + 1e-3 * torch.eye(d, dtype=D64)
    return GaussianPrior(torch.full((1, n, n), 0.5, dtype=D64), cov)


@pytest.mark.parametrize("which", ["ct", "one_measurement"])
def test_init_and_one_step_by_hand(which):
    n = 4 if which == "one_measurement" else 8
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, n, n, generator=g, dtype=D64)
    if which == "ct":
        op = ct_sparse_view(n, 6).double()
    else:
        op = dense_operator((1, n, n), torch.randn(1, n * n, generator=g, dtype=D64))
    pb = Problem.simulate(x, op, 0.01, generator=g)
    prior = _prior(n)
    solver = REDDiff(lam=0.7, lr=0.05, obs_weight=1.5, pinv_cutoff=0.05)
    x_T = torch.zeros(2, 1, n, n, dtype=D64)                                   # two samples
    st = solver.init(pb, prior, x_T, 3.0, None)
    y_u = 2 * pb.y - op.A(torch.ones(1, 1, n, n, dtype=D64))
    if which == "ct":                                                          # no SVD: FBP of y_u
        u0 = op.A_dagger(y_u).expand(2, 1, n, n)
        torch.testing.assert_close(st.u, u0, rtol=1e-10, atol=1e-10)
    assert st.u.shape == (2, 1, n, n) and st.u.dtype == D64 and st.k == 0
    u0 = st.u.clone()
    torch.testing.assert_close(st.x, (u0 + 1) / 2)

    sigma = 0.4
    out, info = solver.step(st, sigma, 0.3, pb, prior, torch.Generator().manual_seed(5))
    eps = torch.randn(u0.shape, generator=torch.Generator().manual_seed(5), dtype=D64)
    xs = (u0 + 1) / 2 + sigma * eps
    eps_hat = (xs - prior.denoise(xs, sigma)) / sigma
    resid = y_u - op.A(u0)
    m, d = resid[0].numel(), n * n
    grad = -1.5 * op.A_adjoint(resid) / m + 0.7 * (2 * sigma) * (eps_hat - eps) / d   # "linear" weighting
    m1 = 0.1 * grad
    v1 = 0.01 * grad**2
    u1 = u0 - 0.05 * (m1 / 0.1) / ((v1 / 0.01).sqrt() + 1e-8)
    torch.testing.assert_close(out.u, u1, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.x, (u1 + 1) / 2, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.x0, (u1 + 1) / 2, rtol=1e-9, atol=1e-12)
    assert out.k == 1
    torch.testing.assert_close(info["loss"], 0.5 * 1.5 * (resid.flatten(1) ** 2).mean(1))

    # a second step: Adam's first step is grad/|grad| whatever the gradient's scale, the second is not
    out2, _ = solver.step(out, 0.3, 0.2, pb, prior, torch.Generator().manual_seed(6))
    eps = torch.randn(u0.shape, generator=torch.Generator().manual_seed(6), dtype=D64)
    xs = (u1 + 1) / 2 + 0.3 * eps
    eps_hat = (xs - prior.denoise(xs, 0.3)) / 0.3
    resid = y_u - op.A(u1)
    grad = -1.5 * op.A_adjoint(resid) / m + 0.7 * (2 * 0.3) * (eps_hat - eps) / d
    m2 = 0.9 * m1 + 0.1 * grad
    v2 = 0.99 * v1 + 0.01 * grad**2
    u2 = u1 - 0.05 * (m2 / (1 - 0.9**2)) / ((v2 / (1 - 0.99**2)).sqrt() + 1e-8)
    torch.testing.assert_close(out2.u, u2, rtol=1e-9, atol=1e-12)
    assert out2.k == 2


def test_hyperparameter_bounds():
    for ok in (dict(lam=0.0), dict(obs_weight=0.0), dict(obs_weight=0.5), dict(pinv_cutoff=0.0)):
        REDDiff(**ok)
    for bad in (dict(lam=-1e-9), dict(obs_weight=-1e-9), dict(lr=0.0), dict(pinv_cutoff=-1e-9),
                dict(weighting="cubic")):
        with pytest.raises(ValueError):
            REDDiff(**bad)
