import pytest
import torch

from invdiff.operators import (FiniteDifference, check_adjoint, check_volume, ct_sparse_view,
                               gaussian_blur, volume_ct)


@pytest.mark.parametrize("dim", [0, -1, (-2, -1), (0, -2, -1)])
def test_finite_difference_adjoint_any_axis(dim):
    op = FiniteDifference(dim)
    assert check_adjoint(op, (5, 1, 6, 7), generator=torch.Generator().manual_seed(0)) < 1e-12


def test_finite_difference_values():
    x = torch.arange(4.0).reshape(1, 1, 1, 4) ** 2
    d = FiniteDifference(-1).A(x)
    assert torch.equal(d[0, 0, 0], torch.tensor([1.0, 3.0, 5.0, 0.0]))
    assert torch.count_nonzero(FiniteDifference((-2, -1)).A(torch.ones(2, 1, 5, 5))) == 0


def test_2d_operators_apply_slice_by_slice(gen):
    vol = torch.rand(6, 1, 32, 32, generator=gen)
    for op in (volume_ct(32, 8), gaussian_blur(32, 1.0)):
        y = op.A(vol)
        for d in range(6):
            assert torch.allclose(y[d:d + 1], op.A(vol[d:d + 1]), atol=1e-6)


def test_wrong_volume_layouts_are_refused():
    op = ct_sparse_view(16, 4)
    with pytest.raises(ValueError, match=r"\(D, C, H, W\)"):
        op.A(torch.zeros(1, 1, 8, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        op.A(torch.zeros(8, 2, 16, 16))
    with pytest.raises(ValueError, match="x\\[0\\].transpose"):
        check_volume(torch.zeros(1, 1, 8, 16, 16))
    assert check_volume(torch.zeros(8, 1, 16, 16)).shape == (8, 1, 16, 16)
