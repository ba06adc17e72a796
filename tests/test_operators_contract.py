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


# What each operator's A† achieves on its own range: ‖A A† y − y‖ ≤ tol · ‖y‖ for y = A x, x a
# phantom (float64). A† = 0 gives 1 everywhere; A† = Aᵀ unscaled fails each entry where it is
# not A† already (blur 0.16–0.19, dense 0.57, super-resolution 0.94, finite differences 0.98,
# CT 0.32–1.8). A new operator must state its own entry.
DAGGER_ON_RANGE = {
    # masks: A† = Aᵀ is the pseudo-inverse, exact
    "box_inpainting": 1e-12,
    "random_inpainting": 1e-12,
    # SVD pseudo-inverse that drops singular values ≤ 1e-5 (deepinv): the residual is the part of
    # y on those, ≤ 1e-5 ‖x‖, and ‖y‖ ≈ ‖x‖ for a smooth phantom (measured ≤ 1e-7)
    "gaussian_blur": 1e-5,
    "motion_blur": 1e-5,
    # SVD pseudo-inverse with factors stored in the random matrix's float32 (measured 4e-8)
    "dense": 1e-6,
    # deepinv's CG least squares at its default tolerance (measured 2e-4 and 3–5e-3)
    "super_resolution": 1e-3,
    "finite_difference": 1e-2,
    # FBP is an approximate inverse: 32 parallel views 1.0–1.5 %; fan-beam data through the
    # parallel-beam formula (documented approximation) 5–7 %; limited angle (90° of data) 41–42 %,
    # the weakest, still far from A† = 0 (1) and A† = Aᵀ (1.8)
    "ct_sparse_view": 0.04,
    "ct_fan_beam": 0.12,
    "ct_limited_angle": 0.6,
    # real-input MRI: A† = Aᵀ (zero filling, documented). Single coil: the residual is half the
    # norm of y on sampled k-space points whose mirror point is not sampled (checked exactly
    # below), so ≤ 0.5 always; a phantom's energy sits in the fully sampled, symmetric centre:
    # 1.5–7 % over masks. Coil arrays: 6–13 % over masks.
    "mri_cartesian": 0.15,
    "mri_multicoil": 0.25,
}


def test_dagger_inverts_on_the_range(request, op, gen):
    """A† is an inverse on the range of A, to the accuracy stated for each operator."""
    from invdiff.data.phantoms import body_phantoms

    name = request.node.callspec.params["op"]
    assert name in DAGGER_ON_RANGE, f"{name}: state how well A† inverts A on its range in DAGGER_ON_RANGE"
    o = op.double()
    x = body_phantoms(2, IMG[-1], generator=gen).double()
    with torch.no_grad():
        y = o.A(x)
        rel = float((o.A(o.A_dagger(y)) - y).norm() / y.norm())
    tol = DAGGER_ON_RANGE[name]
    assert rel <= tol, f"{name}: ‖A A†y − y‖ / ‖y‖ = {rel:.3g} > {tol:g}"


@pytest.mark.parametrize("name", sorted(OPERATORS) + ["mri_cartesian_complex"])
def test_dagger_is_the_moore_penrose_inverse(name, gen):
    """For operators with an SVD, A† satisfies the four Penrose identities (which define the
    pseudo-inverse uniquely), probed with random vectors in float64: A A† A = A (up to the
    singular values ≤ 1e-5 that deepinv drops, as in DAGGER_ON_RANGE), A† A A† = A†, and A A†,
    A† A symmetric. Tolerances: float32-stored factors (dense, blur spectra) leave 1e-7 relative
    errors, amplified by up to 1/1e-5 for A† A A† on a blur (measured 2e-8 there); A† = Aᵀ fails
    the second identity by 0.5 on the blurs and the dense matrix, A† = 0 fails the first by 1.
    Complex-input single-coil MRI is included: A† = Aᵀ is documented as its exact pseudo-inverse."""
    from invdiff.operators import has_svd, mri_cartesian

    if name == "mri_cartesian_complex":
        o = mri_cartesian((2,) + IMG[1:], real_input=False, generator=torch.Generator().manual_seed(0))
    else:
        o = OPERATORS[name](IMG)
        if not has_svd(o):
            pytest.skip(f"{name} has no SVD; its A† is checked on the range only")
    o = o.double()
    shape = (2,) + tuple(o.img_shape)
    x, w = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        y = o.A(x)
        u, v = (torch.randn(y.shape, generator=gen, dtype=torch.float64) for _ in range(2))
        d = o.A_dagger(u)
        errors = {  # (error, bound) per identity
            "A A† A = A": (float((o.A(o.A_dagger(y)) - y).norm()),
                           1e-5 * float(x.norm()) if "blur" in name else 1e-6 * float(y.norm())),
            "A† A A† = A†": (float((o.A_dagger(o.A(d)) - d).norm()), 1e-6 * float(d.norm())),
            "A A† symmetric": (abs(_dot(o.A(o.A_dagger(u)), v) - _dot(u, o.A(o.A_dagger(v)))),
                               1e-8 * float(u.norm() * v.norm())),
            "A† A symmetric": (abs(_dot(o.A_dagger(o.A(x)), w) - _dot(x, o.A_dagger(o.A(w)))),
                               1e-8 * float(x.norm() * w.norm())),
        }
    bad = {k: f"{e:.3g} > {b:.3g}" for k, (e, b) in errors.items() if not e <= b}
    assert not bad, f"{name}: {bad}"


def _dot(a, b):
    return float((a * b).sum())


def test_real_input_mri_dagger_residual_is_exact(gen):
    """Real-input single-coil MRI, A† = Aᵀ: for y = M F x with x real, F Re(F⁻¹ Mᵀ y) keeps y at
    k-space points whose mirror −k is also sampled and halves it where it is not (Hermitian
    symmetry of F x), so A A† y − y is −½ y on those lone points, exactly."""
    from invdiff.data.phantoms import body_phantoms
    from invdiff.operators import mri_cartesian

    op = mri_cartesian(IMG, generator=torch.Generator().manual_seed(0)).double()
    x = body_phantoms(2, IMG[-1], generator=gen).double()
    with torch.no_grad():
        y = op.A(x)
        r = op.A(op.A_dagger(y)) - y
    m = op.mask.double().reshape(-1, *IMG[1:])[0]  # (H, W), k-space centred: −k of index i is (N − i) mod N
    mirror = torch.roll(torch.flip(m, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))
    lone = m * (1 - mirror)
    assert float(lone.sum()) > 0  # a random mask has lone lines, so the check is not vacuous
    assert torch.allclose(r, -0.5 * y * lone, atol=1e-12)


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
