"""Contract tests run on every operator in OPERATORS: a new registry entry is tested with no edits."""

import pytest
import torch

from invdiff.operators import OPERATORS, check_adjoint, check_batch, check_linear

IMG = (1, 32, 32)


@pytest.fixture(params=sorted(OPERATORS))
def op(request):
    return OPERATORS[request.param](IMG)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_adjoint(op, dtype, tol):
    o = op.double() if dtype == torch.float64 else op
    for seed in range(3):
        err = check_adjoint(o, (3,) + IMG, dtype=dtype, generator=torch.Generator().manual_seed(seed))
        assert err <= tol, f"{type(op).__name__}: adjoint error {err:.2e} > {tol:.0e}"


def test_linear(op):
    o = op.double()
    assert check_linear(o, (2,) + IMG, generator=torch.Generator().manual_seed(0)) <= 1e-10


def test_batch_independent(op):
    o = op.double()
    assert check_batch(o, (3,) + IMG, generator=torch.Generator().manual_seed(0)) <= 1e-10


def test_dagger_does_not_increase_residual(op, gen):
    from invdiff.data.phantoms import body_phantoms

    x = body_phantoms(2, IMG[-1], generator=gen)
    y = op.A(x) + 0.01 * torch.randn(op.A(x).shape, generator=gen)
    with torch.no_grad():
        r_dagger = (op.A(op.A_dagger(y)) - y).norm()
    assert r_dagger <= y.norm(), f"{type(op).__name__}: ‖A A†y − y‖ = {r_dagger:.3g} > ‖y‖ = {y.norm():.3g}"


def test_measurement_shape_recorded(op):
    y = op.A(torch.zeros((2,) + IMG))
    assert tuple(y.shape[1:]) == tuple(getattr(op, "meas_shape", y.shape[1:]))


def test_checks_detect_a_wrong_adjoint():
    """The adjoint check must fail on an operator whose adjoint is off by a few percent."""
    op = OPERATORS["gaussian_blur"](IMG)

    class Wrong(type(op)):
        def A_adjoint(self, y, **kw):
            return 1.03 * super().A_adjoint(y, **kw)

    op.__class__ = Wrong
    assert check_adjoint(op.double(), (2,) + IMG, generator=torch.Generator().manual_seed(0)) > 1e-2


def test_dense_operator_is_its_matrix_and_has_an_exact_svd():
    from invdiff.operators import dense_operator

    g = torch.Generator().manual_seed(0)
    for m, d in ((3, 12), (12, 5)):  # fewer and more measurements than unknowns
        M = torch.randn(m, d, generator=g, dtype=torch.float64)
        op = dense_operator((1, 1, d), M)
        x = torch.randn(4, 1, 1, d, generator=g, dtype=torch.float64)
        assert torch.allclose(op.A(x), x.reshape(4, d) @ M.T, atol=1e-12)
        assert torch.allclose(op.V(op.V_adjoint(x)), x, atol=1e-12)  # full orthogonal right basis
        assert int((op.mask.abs() > 1e-12).sum()) == min(m, d)
    with pytest.raises(ValueError, match=r"shape \(m, 12\)"):
        dense_operator((1, 3, 4), torch.ones(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        dense_operator((1, 1, 2), torch.tensor([[float("nan"), 1.0]]))
