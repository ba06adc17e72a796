import pytest
import torch

from invdiff.operators import cartesian_mask, coil_sensitivities, mri_cartesian, volume_mri


@pytest.mark.parametrize("kind", ["random", "equispaced", "gaussian"])
@pytest.mark.parametrize("acc", [4, 8])
def test_mask_acceleration_and_centre(kind, acc, gen):
    m = cartesian_mask((64, 64), acc, 0.08, kind, generator=gen)[0]
    cols = m[0]
    assert int(cols.sum()) == round(64 / acc)
    assert torch.all(m == cols[None, :])  # whole phase-encoding columns
    n_c = round(64 * 0.08)
    assert torch.all(cols[32 - n_c // 2: 32 - n_c // 2 + n_c] == 1)


def test_gaussian_mask_prefers_centre():
    g = torch.Generator().manual_seed(0)
    m = cartesian_mask((64, 64), 4, 0.0, "gaussian", n_masks=200, generator=g)[:, 0]
    density = m.mean(0)
    assert density[24:40].mean() > 2 * torch.cat([density[:8], density[-8:]]).mean()


def test_coil_maps_normalised():
    s = coil_sensitivities(6, (32, 48))
    assert s.shape == (6, 32, 48) and s.dtype == torch.complex64
    assert torch.allclose((s.abs() ** 2).sum(0), torch.ones(32, 48), atol=1e-5)


def test_fully_sampled_single_coil_is_unitary(gen):
    op = mri_cartesian(32, 1.0, 1.0)
    x = torch.rand(2, 1, 32, 32, generator=gen)
    assert torch.allclose(op.A_dagger(op.A(x)), x, atol=1e-5)
    assert torch.allclose(op.A(x).norm(), x.norm(), rtol=1e-5)


def test_fully_sampled_multicoil_is_isometry(gen):
    op = mri_cartesian(32, 1.0, 1.0, coils=4)
    x = torch.rand(2, 1, 32, 32, generator=gen)
    assert op.A(x).shape == (2, 2, 4, 32, 32)
    assert torch.allclose(op.A_adjoint(op.A(x)), x, atol=1e-5)


def test_complex_input_option(gen):
    op = mri_cartesian((2, 32, 32), 4, real_input=False, generator=gen)
    assert op.A(torch.rand(1, 2, 32, 32)).shape == (1, 2, 32, 32)


def test_per_slice_masks_differ_and_fix_depth(gen):
    op = volume_mri(5, 32, 4, generator=gen)
    masks = op.mask[:, 0]
    assert masks.shape[0] == 5 and not torch.equal(masks[0], masks[1])
    x = torch.rand(5, 1, 32, 32, generator=gen)
    y = op.A(x)
    for d in range(5):  # slice d sees mask d
        single = mri_cartesian(32, mask=masks[d])
        assert torch.allclose(y[d:d + 1], single.A(x[d:d + 1]), atol=1e-6)
    with pytest.raises(ValueError, match="5 slices"):
        op.A(x[:3])


def test_shared_mask_volume(gen):
    op = volume_mri(5, 32, 4, masks="shared", generator=gen)
    assert op.A(torch.rand(7, 1, 32, 32)).shape == (7, 2, 32, 32)


def test_real_input_mri_prox_l2_solves_its_normal_equations():
    """deepinv's SVD prox acts on complex images; real-input MRI solves (AᵀA + I/γ) x = Aᵀy + z/γ."""
    import torch

    from invdiff.operators import mri_cartesian

    A = mri_cartesian(16, 4.0, generator=torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=g)
    y = A.A(x)
    z = torch.rand(x.shape, dtype=torch.float64, generator=g)
    p = A.prox_l2(z, y, 0.7)
    residual = A.A_adjoint(A.A(p) - y) + (p - z) / 0.7
    assert p.shape == z.shape and float(residual.norm() / z.norm()) < 1e-12  # closed form: exact


@pytest.mark.parametrize("masks", ["shared", "per-slice"])
def test_single_coil_real_input_normal_operator_is_fourier_diagonal(masks):
    """For real x, AᵀA x = Re(F⁻¹ M F x) = F⁻¹ ((M(k) + M(−k))/2) F x: a circulant operator whose
    spectrum w lies in {0, ½, 1}; the prox is one FFT pair. Checked against AᵀA itself."""
    import torch

    from invdiff.operators import mri_cartesian, volume_mri
    from invdiff.operators.spectral import data_prox, has_exact_prox

    g = torch.Generator().manual_seed(3)
    A = (volume_mri(3, 16, 4, masks="per_slice", generator=g) if masks == "per-slice"
         else mri_cartesian(16, 4.0, generator=g)).double()
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64, generator=g)
    w = A.normal_spectrum(x)
    assert torch.allclose(A.A_adjoint(A.A(x)), torch.fft.ifft2(w * torch.fft.fft2(x)).real, atol=1e-12)
    assert set(torch.unique(torch.round(2 * w)).tolist()) <= {0.0, 1.0, 2.0}
    if masks == "per-slice":
        assert not torch.equal(w[0], w[1])  # one spectrum per slice's own mask
    assert has_exact_prox(A)
    y, z = A.A(torch.rand(x.shape, dtype=torch.float64, generator=g)), x
    for mu in (1e-3, 0.4, 30.0):
        p = data_prox(A, y, z, mu, cg_iters=1)  # one CG iteration would be far off: the closed form is used
        residual = A.A_adjoint(A.A(p) - y) + mu * (p - z)
        assert float(residual.norm() / (A.A_adjoint(y) + mu * z).norm()) < 1e-12


def test_multi_coil_mri_prox_stays_iterative_and_solves_its_normal_equations():
    import torch

    from invdiff.operators import mri_cartesian
    from invdiff.operators.spectral import data_prox, has_exact_prox

    A = mri_cartesian(16, 4.0, coils=4, generator=torch.Generator().manual_seed(0)).double()
    assert not A.fourier_diagonal and not has_exact_prox(A)
    g = torch.Generator().manual_seed(1)
    y, z = A.A(torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=g)), torch.rand(2, 1, 16, 16,
                                                                                     dtype=torch.float64, generator=g)
    p = data_prox(A, y, z, 0.3, cg_iters=200, tol=1e-12)
    residual = A.A_adjoint(A.A(p) - y) + 0.3 * (p - z)
    assert float(residual.norm() / (A.A_adjoint(y) + 0.3 * z).norm()) < 1e-10


def test_diffpir_solves_in_closed_form_only_where_the_spectrum_is_binary():
    """Masks and single-coil MRI: closed form; blur, downsampling, coil arrays and CT: CG (their near-zero
    singular values would let the exact solve fit the noise when rho is tiny)."""
    import torch

    from invdiff.operators import ct_sparse_view, gaussian_blur, mri_cartesian, random_inpainting, super_resolution
    from invdiff.operators.spectral import has_binary_spectrum

    g = torch.Generator().manual_seed(0)
    assert has_binary_spectrum(random_inpainting((1, 16, 16), 0.5, generator=g))
    assert has_binary_spectrum(mri_cartesian(16, 4.0, generator=g))
    assert not has_binary_spectrum(mri_cartesian(16, 4.0, coils=2, generator=g))
    assert not has_binary_spectrum(gaussian_blur((1, 16, 16), 2.0))
    assert not has_binary_spectrum(super_resolution((1, 16, 16), 4))
    assert not has_binary_spectrum(ct_sparse_view(16, 8))
