"""The public operator checks (:mod:`invdiff.operators.checks`) against answers known in closed form.

Each check is fed an operator whose defect is known (a wrong adjoint, a non-linear map, batch
coupling) and its result is compared with the value recomputed here from the same random draws.
"""

import pytest
import torch

from invdiff.operators import check_adjoint, check_batch, check_linear, dense_operator
from invdiff.operators.checks import operator_norm


class Recorder:
    """``A x = f(x)``, ``Aᵀ y = g(y)``, remembering what each was called with."""

    def __init__(self, f, g=None):
        self.f, self.g = f, g
        self.a_in, self.at_in = [], []

    def A(self, x):
        self.a_in.append(x)
        return self.f(x)

    def A_adjoint(self, y):
        self.at_in.append(y)
        return self.g(y)


def test_check_adjoint_measures_a_wrong_adjoint_exactly():
    op = Recorder(lambda x: 2 * x, lambda y: y)          # Aᵀ is half the true adjoint
    err = check_adjoint(op, (2, 1, 4, 5), generator=torch.Generator().manual_seed(0))
    assert err == pytest.approx(0.5, rel=1e-12)
    assert op.a_in[0].dtype == torch.float64              # float64 by default


def test_check_adjoint_draws_y_as_ax_plus_scaled_noise():
    op = Recorder(lambda x: torch.cat([x, 3 * x], dim=1), lambda y: y[:, :1] + 3 * y[:, 1:])
    shape = (2, 1, 3, 4)
    err = check_adjoint(op, shape, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    ax = torch.cat([x, 3 * x], dim=1)
    r = torch.randn(ax.shape, generator=g, dtype=torch.float64)
    y = ax + r * ax.norm() / ax.numel() ** 0.5
    torch.testing.assert_close(op.a_in[0], x, rtol=0, atol=0)
    torch.testing.assert_close(op.at_in[0], y, rtol=1e-15, atol=1e-15)
    assert err < 1e-14


def test_check_adjoint_dtype_is_used():
    op = Recorder(lambda x: x, lambda y: y)
    check_adjoint(op, (1, 1, 2, 2), dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    assert op.a_in[0].dtype == torch.float32


def test_check_linear_value_for_a_nonlinear_map():
    op = Recorder(lambda x: x**2)
    shape = (2, 1, 3, 3)
    err = check_linear(op, shape, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x1 = torch.randn(shape, generator=g, dtype=torch.float64)
    x2 = torch.randn(shape, generator=g, dtype=torch.float64)
    a = float(torch.randn((), generator=g, dtype=torch.float64))
    b = float(torch.randn((), generator=g, dtype=torch.float64))
    y1, y2, y12 = x1**2, x2**2, (a * x1 + b * x2) ** 2
    expected = (y12 - a * y1 - b * y2).norm() / (abs(a) * y1.norm() + abs(b) * y2.norm())
    assert err == pytest.approx(float(expected), rel=1e-12)
    assert err > 0.1
    assert check_linear(Recorder(lambda x: -3 * x), shape, generator=torch.Generator().manual_seed(5)) < 1e-15


def test_check_batch_value_for_a_batch_coupling_map():
    # A x_i = (x_i + mean_j x_j) / 1000 and Aᵀ y_i = (y_i − mean_j y_j / 2) / 1000 couple the batch
    # (small outputs: the relative errors' floor must not bite)
    f = lambda x: (x + x.mean(0, keepdim=True)) / 1000  # noqa: E731
    h = lambda y: (y - y.mean(0, keepdim=True) / 2) / 1000  # noqa: E731
    op = Recorder(f, h)
    shape = (3, 1, 2, 3)
    err = check_batch(op, shape, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    yb = f(x)
    y = torch.randn(yb.shape, generator=g, dtype=torch.float64)
    xb = h(y)
    torch.testing.assert_close(op.a_in[0], x, rtol=0, atol=0)
    torch.testing.assert_close(op.at_in[0], y, rtol=0, atol=0)
    assert len(op.a_in) == len(op.at_in) == 1 + 3                          # the batch, then each element
    assert all(t.shape == (1, 1, 2, 3) for t in op.a_in[1:] + op.at_in[1:])
    worst = 0.0
    for i in range(3):  # alone, A x_i = 2 x_i / 1000 and Aᵀ y_i = y_i / 2000
        worst = max(worst, float((2 * x[i] / 1000 - yb[i]).norm() / yb[i].norm()),
                    float((y[i] / 2000 - xb[i]).norm() / xb[i].norm()))
    assert err == pytest.approx(worst, rel=1e-12)
    assert err > 0.1


def test_check_batch_adjoint_side_is_checked_and_batch_of_two_is_enough():
    # A is batch-independent but Aᵀ is not: only the adjoint half can see it
    h = lambda y: (y + y.sum(0, keepdim=True)) / 1000  # noqa: E731
    op = Recorder(lambda x: x, h)
    err = check_batch(op, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    torch.randn((2, 1, 2, 2), generator=g, dtype=torch.float64)
    y = torch.randn((2, 1, 2, 2), generator=g, dtype=torch.float64)
    xb = h(y)
    want = max(float((2 * y[i] / 1000 - xb[i]).norm() / xb[i].norm()) for i in range(2))
    assert err == pytest.approx(want, rel=1e-12) and err > 0.1
    assert check_batch(Recorder(lambda x: 2 * x, lambda y: 2 * y), (2, 1, 2, 2),
                       generator=torch.Generator().manual_seed(0)) < 1e-15
    with pytest.raises(ValueError, match="batch of at least 2"):
        check_batch(op, (1, 1, 2, 2))


def _power_iteration(M, iters, x):
    s = torch.zeros(())
    for _ in range(iters):
        z = M.T @ (M @ x)
        s = z.norm()
        x = z / s
    return float(s.sqrt())


def test_operator_norm_is_thirty_power_iterations_from_the_drawn_start():
    # singular values 1.0 and 0.97: 30 iterations are far from converged, so the count matters
    d = 4
    M = torch.diag(torch.tensor([0.97, 1.0, 0.5, 0.1], dtype=torch.float64))
    op = dense_operator((1, 2, 2), M)
    got = operator_norm(op, (1, 1, 2, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = torch.randn((1, 1, 2, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64).reshape(d)
    x = x / x.norm()
    assert got == pytest.approx(_power_iteration(M, 30, x), rel=1e-12)
    assert got != pytest.approx(_power_iteration(M, 29, x), rel=1e-6)
    assert got != pytest.approx(_power_iteration(M, 31, x), rel=1e-6)
    assert operator_norm(op, (1, 1, 2, 2), iters=400, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(1)) == pytest.approx(1.0, rel=1e-9)


def test_operator_norm_probes_a_per_slice_operator_on_its_whole_stack():
    scales = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    op = Recorder(lambda x: x * scales[:x.shape[0], None, None, None],
                  lambda y: y * scales[:y.shape[0], None, None, None])
    op.batch = 3
    got = operator_norm(op, (1, 1, 2, 2), iters=50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert op.a_in[0].shape == (3, 1, 2, 2)
    assert got == pytest.approx(4.0, rel=1e-9)
    op1 = Recorder(lambda x: 5 * x, lambda y: 5 * y)
    assert operator_norm(op1, (1, 1, 2, 2), iters=3, generator=torch.Generator().manual_seed(0)) == pytest.approx(5.0)
    assert op1.a_in[0].dtype == torch.float32 and op1.a_in[0].shape == (1, 1, 2, 2)
