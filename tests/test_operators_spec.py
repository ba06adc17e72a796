"""Operators against their documented definitions, value by value (written to kill surviving mutants:
benchmarks/mutation.md)."""

import pytest
import torch

from invdiff.operators import (FiniteDifference, box_inpainting, finite_difference, random_inpainting,
                               volume_ct, volume_mri)


def _dense_diff(n):
    D = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n - 1):
        D[i, i], D[i, i + 1] = -1, 1
    return D


@pytest.mark.parametrize("axis", [0, 2, -1])
def test_finite_difference_is_the_forward_difference_matrix_and_its_transpose(axis):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 4, 6, generator=g, dtype=torch.float64)
    y = torch.randn(5, 2, 4, 6, generator=g, dtype=torch.float64)
    op = FiniteDifference(axis)
    D = _dense_diff(x.shape[axis])
    want = torch.movedim(torch.tensordot(D, torch.movedim(x, axis, 0), dims=1), 0, axis)
    want_t = torch.movedim(torch.tensordot(D.T, torch.movedim(y, axis, 0), dims=1), 0, axis)
    torch.testing.assert_close(op.A(x), want, rtol=0, atol=1e-14)
    torch.testing.assert_close(op.A_adjoint(y), want_t, rtol=0, atol=1e-14)


def test_finite_difference_stacks_axes_along_channels_and_sums_adjoints():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64)
    y = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    both = FiniteDifference((-2, -1))
    torch.testing.assert_close(both.A(x), torch.cat([FiniteDifference(-2).A(x), FiniteDifference(-1).A(x)], 1))
    torch.testing.assert_close(both.A_adjoint(y), FiniteDifference(-2).A_adjoint(y[:, :1])
                               + FiniteDifference(-1).A_adjoint(y[:, 1:]))
    assert finite_difference(8).dims == (-2, -1) and finite_difference(dim=0).dims == (0,)


def test_finite_difference_of_a_single_sample_axis_is_zero():
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    for op in (FiniteDifference(0), FiniteDifference(0, halo=None)):
        assert torch.equal(op.A(x), torch.zeros_like(x))
        assert torch.equal(op.A_adjoint(x), torch.zeros_like(x))


class _StaticHalo:
    """The halo of block ``k`` of a whole tensor cut at ``cuts``, answered from the whole tensors
    (what the other blocks would send)."""

    def __init__(self, xs, ys, k):
        self.xs, self.ys, self.k = xs, ys, k
        self.has_next = k < len(xs) - 1
        self.calls = []

    def from_next(self, first):
        self.calls.append(("next", first))
        return self.xs[self.k + 1][:1] if self.has_next else None

    def from_previous(self, last):
        self.calls.append(("previous", last))
        return self.ys[self.k - 1][-1:] if self.k > 0 else None


@pytest.mark.parametrize("cuts", [(2, 5), (1, 6), (3,)])
def test_finite_difference_blocks_with_a_halo_give_the_rows_of_the_whole_axis(cuts):
    g = torch.Generator().manual_seed(2)
    n = 7
    x = torch.randn(n, 1, 2, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, 2, 3, generator=g, dtype=torch.float64)
    edges = (0,) + cuts + (n,)
    xs = [x[a:b] for a, b in zip(edges, edges[1:])]
    ys = [y[a:b] for a, b in zip(edges, edges[1:])]
    whole = FiniteDifference(0)
    dx, dty = whole.A(x), whole.A_adjoint(y)
    for k, (a, b) in enumerate(zip(edges, edges[1:])):
        halo = _StaticHalo(xs, ys, k)
        op = FiniteDifference(0, halo=halo)
        torch.testing.assert_close(op.A(xs[k]), dx[a:b], rtol=0, atol=1e-14)
        torch.testing.assert_close(op.A_adjoint(ys[k]), dty[a:b], rtol=0, atol=1e-14)
        sent_first, sent_last = halo.calls[0][1], halo.calls[1][1]
        assert torch.equal(sent_first, xs[k][:1]) and torch.equal(sent_last, ys[k][-1:])


def test_a_halo_only_splits_axis_zero():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1, 3, 5, generator=g, dtype=torch.float64)
    halo = _StaticHalo([x, x], [x, x], 0)
    op = FiniteDifference((-2, -1), halo=halo)
    torch.testing.assert_close(op.A(x), FiniteDifference((-2, -1)).A(x))
    assert halo.calls == []


def test_volume_ct_geometry_follows_max_angle():
    full, limited = volume_ct(16, 6), volume_ct(16, 6, max_angle_deg=120, fbp_filter="hann")
    assert full.n_views == 6 and limited.n_views == 6
    torch.testing.assert_close(full.angles.double(), torch.arange(6, dtype=torch.float64) * 30.0, rtol=0, atol=1e-4)
    torch.testing.assert_close(limited.angles.double(), torch.arange(6, dtype=torch.float64) * 20.0, rtol=0, atol=1e-4)
    assert full.fbp_filter == "ramp" and limited.fbp_filter == "hann"
    assert volume_ct(16, 4, fbp_filter="cosine").fbp_filter == "cosine"
    assert volume_ct(16).n_views == 8
    with pytest.raises(ValueError, match="max_angle_deg"):
        volume_ct(16, 6, max_angle_deg=0)
    with pytest.raises(ValueError, match="max_angle_deg"):
        volume_ct(16, 6, max_angle_deg=180.5)


def test_volume_mri_masks_per_slice_or_shared():
    g = torch.Generator().manual_seed(0)
    per = volume_mri(3, 16, 4.0, generator=g)
    assert per.batch == 3
    assert not torch.equal(per.mask[0], per.mask[1])
    shared = volume_mri(3, 16, 4.0, masks="shared", generator=g)
    assert shared.batch is None and shared.mask.shape[0] == 1
    one = volume_mri(1, 16, 4.0, generator=g)
    assert one.batch is None
    assert volume_mri(2, 16, 2.0, generator=g).acceleration == pytest.approx(2.0)
    with pytest.raises(ValueError, match="masks"):
        volume_mri(3, 16, masks="each")


def test_box_inpainting_default_box_is_the_centred_half():
    op = box_inpainting((1, 16, 12))
    want = torch.ones(16, 12)
    want[4:12, 3:9] = 0
    assert torch.equal(op.mask[0, 0], want)
    op = box_inpainting((1, 8, 8), (0, 0, 8, 8))            # a box may fill the image exactly
    assert op.mask.sum() == 0
    with pytest.raises(ValueError, match="does not fit"):
        box_inpainting((1, 8, 8), (1, 0, 8, 8))
    with pytest.raises(ValueError, match="does not fit"):
        box_inpainting((1, 8, 8), (0, 0, 0, 3))


def test_random_inpainting_fraction_and_its_bounds():
    g = torch.Generator().manual_seed(4)
    assert random_inpainting((2, 16, 16), 0.0, generator=g).mask.min() == 1     # nothing missing
    op = random_inpainting((3, 64, 64), 0.25, generator=torch.Generator().manual_seed(5))
    m = op.mask[0]
    assert torch.equal(m[0], m[1]) and torch.equal(m[0], m[2])                     # all channels together
    want = (torch.rand((64, 64), generator=torch.Generator().manual_seed(5)) >= 0.25).float()
    assert torch.equal(m[0], want)


def _moments(k):
    k = k.double()
    n = k.shape[0]
    c = (n - 1) / 2
    r = torch.arange(n, dtype=torch.float64) - c
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return k.sum(), (k * xx).sum(), (k * yy).sum(), (k * xx * yy).sum(), (k * xx * xx).sum(), (k * yy * yy).sum()


@pytest.mark.parametrize("sigma,angle,size", [(1.5, 0.0, None), ((2.0, 0.7), 30.0, 15), ((0.8, 1.6), -75.0, None)])
def test_gaussian_kernel_is_the_rotated_gaussian_density(sigma, angle, size):
    from invdiff.operators import gaussian_kernel
    sx, sy = (sigma, sigma) if isinstance(sigma, float) else sigma
    k = gaussian_kernel(sigma, angle=angle, size=size)
    n = size if size is not None else 2 * int(torch.ceil(torch.tensor(3 * max(sx, sy)))) + 1
    assert k.shape == (n, n) and k.dtype == torch.float32
    t = torch.deg2rad(torch.tensor(angle, dtype=torch.float64))
    R = torch.stack([torch.stack([torch.cos(t), -torch.sin(t)]), torch.stack([torch.sin(t), torch.cos(t)])])
    cov = R @ torch.diag(torch.tensor([sx**2, sy**2], dtype=torch.float64)) @ R.T   # in (x, y)
    r = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    p = torch.stack([xx, yy], -1)
    dens = torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", p, torch.linalg.inv(cov), p))
    torch.testing.assert_close(k.double(), dens / dens.sum(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("length,angle,samples", [(9.0, 0.0, 64), (7.5, 35.0, 64), (12.0, 120.0, 9), (5.0, 90.0, 7),
                                                  (5.0, 0.0, 7), (5.0, 180.0, 6), (5.0, 270.0, 6), (4.2, 60.0, 8)])
def test_line_kernel_moments(length, angle, samples):
    """Bilinear splatting keeps each sample's mass, mean and (x, y) cross moment exactly, so the kernel's
    mass is 1, its centroid the centre and its cross moment −cos θ sin θ · mean(t²) over the samples."""
    from invdiff.operators import line_kernel
    n = int(length) if length == int(length) and int(length) % 2 else 2 * int(torch.ceil(torch.tensor(length / 2))) + 1
    k = line_kernel(length, angle, size=n, samples=samples)   # odd integer lengths: the line touches the border
    assert k.shape == (n, n)
    mass, mx, my, mxy, mxx, myy = _moments(k)
    t = torch.linspace(-0.5, 0.5, samples, dtype=torch.float64) * (length - 1)
    th = torch.deg2rad(torch.tensor(angle, dtype=torch.float64))
    assert float(mass) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(mx)) < 1e-5 and abs(float(my)) < 1e-5
    assert float(mxy) == pytest.approx(float(-torch.cos(th) * torch.sin(th) * (t**2).mean()), abs=1e-5)
    # second moments: the samples' plus the splatting's f(1 − f) per axis
    px, py = t * torch.cos(th), -t * torch.sin(th)
    fx, fy = px - px.floor(), py - py.floor()
    assert float(mxx) == pytest.approx(float((px**2 + fx * (1 - fx)).mean()), abs=1e-5)
    assert float(myy) == pytest.approx(float((py**2 + fy * (1 - fy)).mean()), abs=1e-5)


def test_line_kernel_size_bounds_and_motion_blur_angle_draw():
    from invdiff.operators import line_kernel, motion_blur
    assert line_kernel(5.0, 0.0, size=5).shape == (5, 5)                 # size == length is allowed
    with pytest.raises(ValueError, match="size"):
        line_kernel(5.5, 0.0, size=5)
    assert line_kernel(1.0, 10.0).shape == (3, 3)
    op = motion_blur(16, 5.0, generator=torch.Generator().manual_seed(7))
    angle = float(torch.rand((), generator=torch.Generator().manual_seed(7))) * 180.0
    torch.testing.assert_close(op.filter[0, 0], line_kernel(5.0, angle).to(op.filter.dtype))
    torch.testing.assert_close(motion_blur(16).filter[0, 0].sum(), torch.tensor(1.0))
    assert motion_blur(16, angle=0.0).filter.shape[-1] == 11                 # default length 9


def test_gaussian_blur_kernel_size_rules():
    from invdiff.operators import gaussian_blur, gaussian_kernel
    op = gaussian_blur(32)                                                  # sigma 2: 13 px
    assert op.filter.shape[-2:] == (13, 13)
    torch.testing.assert_close(op.filter[0, 0], gaussian_kernel(2.0))
    assert gaussian_blur(13, 2.0).filter.shape[-1] == 13                     # kernel exactly the image size
    with pytest.raises(ValueError, match="larger than the image"):
        gaussian_blur(12, 2.0)
    assert gaussian_blur(12, 2.0, kernel_size=5).filter.shape[-1] == 5
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_blur(12, 2.0, kernel_size=13)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(12, 2.0, kernel_size=4)
    rot = gaussian_blur(32, (1.0, 2.0), angle=90.0).filter[0, 0]
    torch.testing.assert_close(rot, gaussian_kernel((2.0, 1.0)), atol=1e-7, rtol=0)


def test_a_dagger_dtype_policy_names_and_solver_options():
    """``A_dagger`` (deepinv's, wrapped): a non-tensor is refused naming ``y``; float64 in gives
    float64 out; solver options reach deepinv's least-squares solve (1 CG iteration fits worse)."""
    from invdiff.operators import gaussian_blur

    op = gaussian_blur((1, 16, 16), 1.5, boundary="reflect")
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = op.A(x)
    with pytest.raises(TypeError, match=r"\by must be a torch.Tensor"):
        op.A_dagger(y.tolist())
    assert op.A_dagger(y.double()).dtype == torch.float64
    full, one = op.A_dagger(y), op.A_dagger(y, max_iter=1)
    assert (op.A(one) - y).norm() > 2 * (op.A(full) - y).norm()


def test_blur_sigma_forms_and_messages_name_the_argument():
    """sigma may be a one-element tensor (the same kernel as the number); kernel_size errors and
    the finite-difference adjoint's type check name their argument."""
    from invdiff.operators import gaussian_blur, gaussian_kernel

    torch.testing.assert_close(gaussian_kernel(torch.tensor([1.5])), gaussian_kernel(1.5))
    with pytest.raises(ValueError, match=r"^kernel_size must be an odd integer"):
        gaussian_blur((1, 16, 16), 1.0, kernel_size=4)
    with pytest.raises(ValueError, match=r"^kernel_size \(17 px\)"):
        gaussian_blur((1, 16, 16), 1.0, kernel_size=17)
    with pytest.raises(TypeError, match=r"\by must be a torch.Tensor"):
        FiniteDifference().A_adjoint([[0.0]])


def test_finite_difference_dim_checks_at_their_boundaries():
    """dim: ints only (no bools, no bytes that iterate as ints); -ndim and ndim - 1 are valid axes,
    ndim is not; the adjoint refuses a y whose channels do not split over the axes, naming y."""
    for bad in (b"\x01", (-1, True), True):
        with pytest.raises(TypeError, match="dim must be an int"):
            FiniteDifference(dim=bad)
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(FiniteDifference(dim=-4).A(x), FiniteDifference(dim=0).A(x))
    torch.testing.assert_close(FiniteDifference(dim=3).A(x), FiniteDifference(dim=-1).A(x))
    with pytest.raises(ValueError, match=r"dim \[4\] out of range for x"):
        FiniteDifference(dim=4).A(x)
    with pytest.raises(ValueError, match=r"out of range for y of shape"):
        FiniteDifference(dim=(-2, 6)).A_adjoint(torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError):
        FiniteDifference().A_adjoint(torch.rand(1, 3, 4, 4))  # 3 channels do not split over 2 axes


def test_dense_operator_default_matrix_and_integer_matrices():
    """The default random matrix has N(0, 1/d) entries (‖M‖_F² ≈ m); an integer matrix is used
    exactly, in floating point."""
    from invdiff.operators import dense_operator

    op = dense_operator((1, 8, 8), measurements=48, generator=torch.Generator().manual_seed(0))
    fro2 = float(op.mask.double().pow(2).sum())  # ‖M‖_F² is the sum of the squared singular values
    assert fro2 / 48 == pytest.approx(1.0, abs=0.1)  # 3072 entries: relative std of the sum ≈ 2.6 %
    M = torch.arange(12).reshape(3, 4) - 5
    op = dense_operator((1, 2, 2), M)
    x = torch.tensor([[[[0.5, 0.25], [1.0, -1.0]]]])
    torch.testing.assert_close(op.A(x).reshape(-1), (M.double() @ x.double().reshape(-1)).float())
    assert op.A(x).is_floating_point()


def test_data_prox_by_svd_stays_accurate_at_tiny_mu():
    """For an operator with an SVD, data_prox solves (AᵀA + μI) z = Aᵀy + μ z0 in the residual form
    with the SVD's own factors: float32 rounding on singular values down to 1e-6 stays small at
    μ = 1e-6 (deepinv's prox_l2, dividing Vᴴ(Aᵀy + μz) by |s|² + μ, is off by ~1e-2 here)."""
    from invdiff.operators import dense_operator
    from invdiff.operators.spectral import data_prox

    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    op = dense_operator((1, 8, 8), ((U * torch.logspace(0, -6, 32, dtype=torch.float64)) @ V[:, :32].T).float())
    y, z = op.A(torch.rand(1, 1, 8, 8, generator=g)), torch.rand(1, 1, 8, 8, generator=g)
    M = op.left.double() @ torch.diag(op.mask.double()[:32]) @ op.right.double()[:, :32].T  # the stored operator
    mu = 1e-6
    ref = torch.linalg.solve(M.T @ M + mu * torch.eye(64, dtype=torch.float64),
                             M.T @ y.double().reshape(-1) + mu * z.double().reshape(-1))
    got = data_prox(op, y, z, mu, cg_iters=30).double().reshape(-1)
    assert (got - ref).norm() / ref.norm() < 1e-4


def test_forward_and_adjoint_errors_name_x_and_y_and_pass_options_through():
    """A refuses a non-tensor naming x, an integer image asking for [0, 1] floats; A_adjoint an
    integer measurement as measurements; keyword options reach deepinv's adjoint (a blur's filter)."""
    from invdiff.operators import gaussian_blur, gaussian_kernel, kernel_blur

    op = gaussian_blur((1, 16, 16), 1.0)
    with pytest.raises(TypeError, match=r"\bx must be a torch.Tensor"):
        op.A([[0.0]])
    with pytest.raises(TypeError, match=r"convert images to float first \(with values in \[0, 1\]"):
        op.A(torch.zeros(1, 1, 16, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"convert measurements to float first \(invdiff"):
        op.A_adjoint(torch.zeros(1, 1, 16, 16, dtype=torch.int64))
    y = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    other = kernel_blur((1, 16, 16), gaussian_kernel(2.0))
    torch.testing.assert_close(op.A_adjoint(y, filter=other.filter), other.A_adjoint(y))


def test_spectral_helpers_real_part_require_svd_and_singular_values():
    """real_part takes the real part of complex tensors only; require_svd names why an operator has
    no SVD (real-input MRI, or the operator's class); singular_values returns real values in the
    dtype of ``like``."""
    from invdiff.operators import ct_sparse_view, mri_cartesian
    from invdiff.operators.spectral import real_part, require_svd, singular_values

    z = torch.tensor([1.0 + 2.0j, -3.0 + 0.5j])
    torch.testing.assert_close(real_part(z), torch.tensor([1.0, -3.0]))
    t = torch.tensor([0.25, 4.0])
    assert real_part(t) is t
    with pytest.raises(ValueError, match="got real-input MRI"):
        require_svd(mri_cartesian((1, 16, 16), 4, generator=torch.Generator().manual_seed(0)), "DDRM")
    with pytest.raises(ValueError, match=r"got CT; use a solver"):
        require_svd(ct_sparse_view(16, 4), "DDRM")
    op = random_inpainting((1, 8, 8), 0.5, generator=torch.Generator().manual_seed(0))
    s = singular_values(op, torch.zeros(1, dtype=torch.float64))
    assert s.dtype == torch.float64 and not s.is_complex()
