"""Property-based checks (hypothesis): operator contracts over random sizes and parameters."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invdiff.operators import FiniteDifference, check_adjoint, gaussian_blur, random_inpainting, super_resolution


@settings(max_examples=25, deadline=None)
@given(h=st.integers(8, 24), w=st.integers(8, 24), sigma=st.floats(0.3, 2.5), c=st.sampled_from([1, 3]))
def test_blur_adjoint_any_size(h, w, sigma, c):
    op = gaussian_blur((c, h, w), sigma, kernel_size=min(7, h, w) - (1 - min(7, h, w) % 2)).double()
    assert check_adjoint(op, (2, c, h, w), generator=torch.Generator().manual_seed(0)) < 1e-10


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), factor=st.sampled_from([2, 4]), filt=st.sampled_from(["bicubic", "box", "gaussian"]))
def test_super_resolution_adjoint_any_size(n, factor, filt):
    """Either a clear ValueError (image smaller than the filter) or an exact adjoint — never a crash."""
    size = 8 * n
    try:
        op = super_resolution((1, size, size), factor, filter=filt).double()
    except ValueError as err:
        assert "smaller than the" in str(err)
        return
    assert check_adjoint(op, (2, 1, size, size), generator=torch.Generator().manual_seed(0)) < 1e-10


@settings(max_examples=25, deadline=None)
@given(frac=st.floats(0.0, 0.99), seed=st.integers(0, 1000))
def test_inpainting_mask_is_binary_and_idempotent(frac, seed):
    op = random_inpainting(16, frac, generator=torch.Generator().manual_seed(seed))
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(op.A(op.A(x)), op.A(x))
    assert set(torch.unique(op.mask).tolist()) <= {0.0, 1.0}


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=4, max_size=4), dim=st.sampled_from([0, -1, -2, (-2, -1)]))
def test_finite_difference_adjoint_any_shape(shape, dim):
    op = FiniteDifference(dim)
    dims = (dim,) if isinstance(dim, int) else dim
    if all(shape[d] == 1 for d in dims):  # no neighbours along any axis: D = 0 and Dᵀ = 0
        y = torch.randn(op.A(torch.zeros(shape)).shape, generator=torch.Generator().manual_seed(2))
        assert torch.count_nonzero(op.A(torch.randn(shape))) == 0 and torch.count_nonzero(op.A_adjoint(y)) == 0
        return
    assert check_adjoint(op, tuple(shape), generator=torch.Generator().manual_seed(1)) < 1e-10
