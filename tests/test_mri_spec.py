"""Cartesian MRI against its definitions: coil maps by the docstring's formula, every proximal path against a
dense solve, the mask kinds' laws, and the validation of given masks and coil maps (written to kill surviving
mutants: benchmarks/mutation.md)."""

import math

import numpy as np
import pytest
import torch

from invdiff.operators import cartesian_mask, coil_sensitivities, mri_cartesian

G = torch.Generator


def _dense(op, shape):
    """The operator's matrix (real measurements × real image entries) by applying it to the unit images."""
    d = int(np.prod(shape))
    cols = [op.A(torch.eye(d, dtype=torch.float64)[i].reshape((1,) + shape)).flatten() for i in range(d)]
    return torch.stack(cols, 1)


def _prox_dense(op, shape, z, y, gamma):
    M = _dense(op, shape)
    lhs = M.T @ M + torch.eye(M.shape[1], dtype=torch.float64) / gamma
    rhs = M.T @ y.flatten() + z.flatten() / gamma
    return torch.linalg.solve(lhs, rhs).reshape(z.shape)


@pytest.mark.parametrize("kind", ["single", "multi", "given_maps", "complex"])
@pytest.mark.parametrize("gamma", [0.05, 3.0, 300.0])
def test_prox_l2_is_the_regularised_least_squares_solution(kind, gamma):
    """``prox_l2(z, y, γ) = argmin ½‖A x − y‖² + ‖x − z‖²/(2γ)``, checked against a dense solve on 8×8 images,
    for the Fourier-diagonal path (one coil), the CG path (coil arrays, given maps) and complex images."""
    g = G().manual_seed(0)
    n = 8
    mask = cartesian_mask(n, 2.0, 0.25, generator=g)[0]
    if kind == "single":
        op, shape = mri_cartesian(n, mask=mask), (1, n, n)
    elif kind == "multi":
        op, shape = mri_cartesian(n, mask=mask, coils=3), (1, n, n)
    elif kind == "given_maps":
        maps = coil_sensitivities(2, n) * 0.9
        op, shape = mri_cartesian(n, mask=mask, coil_maps=maps), (1, n, n)
    else:
        op, shape = mri_cartesian((2, n, n), mask=mask, real_input=False), (2, n, n)
    op = op.double()
    z = torch.randn((1,) + shape, generator=g, dtype=torch.float64)
    y = op.A(torch.randn((1,) + shape, generator=g, dtype=torch.float64))
    y = y + 0.1 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    got = op.prox_l2(z, y, gamma)
    assert got.shape == z.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, _prox_dense(op, shape, z, y, gamma), rtol=1e-6, atol=1e-6)
    assert op.fourier_diagonal == (kind == "single")


def test_coil_sensitivities_follow_the_documented_formula():
    """Coils on a circle of radius 1.2 at angles 2πc/C, magnitude exp(−d²/(2 width²)), phase (π/4)·d,
    normalised by the root sum of squares."""
    C, h, w, width = 3, 6, 5, 0.6
    S = coil_sensitivities(C, (h, w), width=width)
    assert S.dtype == torch.complex64 and S.shape == (C, h, w)
    ys, xs = np.linspace(-1, 1, h), np.linspace(-1, 1, w)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    raw = []
    for c in range(C):
        cx, cy = 1.2 * np.cos(2 * np.pi * c / C), 1.2 * np.sin(2 * np.pi * c / C)
        d = np.hypot(xx - cx, yy - cy)
        raw.append(np.exp(-d**2 / (2 * width**2)) * np.exp(1j * np.pi / 4 * d))
    raw = np.array(raw)
    want = raw / np.sqrt((np.abs(raw) ** 2).sum(0))
    np.testing.assert_allclose(S.numpy(), want, rtol=1e-5, atol=1e-6)
    default = coil_sensitivities(2, 4)
    np.testing.assert_allclose((default.abs() ** 2).sum(0).numpy(), 1.0, rtol=1e-6)
    ys = np.linspace(-1, 1, 4)
    yy, xx = np.meshgrid(ys, ys, indexing="ij")
    r = [np.exp(-((xx - 1.2 * np.cos(a)) ** 2 + (yy - 1.2 * np.sin(a)) ** 2) / (2 * 0.7**2)) for a in (0, np.pi)]
    np.testing.assert_allclose(default.abs().numpy(), np.array(r) / np.sqrt(r[0] ** 2 + r[1] ** 2), rtol=1e-5)


def test_gaussian_mask_draws_columns_with_the_documented_density():
    """One free column per mask: its frequency over many draws is ∝ exp(−k² / (2 (0.25 W)²)) among the
    non-centre columns."""
    w, draws = 16, 8000
    masks = cartesian_mask((1, w), acceleration=8.0, center_fraction=1 / w, kind="gaussian", n_masks=draws,
                           generator=G().manual_seed(0))[:, 0]
    centre = w // 2
    assert bool((masks[:, centre] == 1).all()) and bool((masks.sum(1) == 2).all())
    freq = masks.sum(0).double()
    freq[centre] = 0
    freq /= draws
    k = torch.arange(w, dtype=torch.float64) - w // 2
    p = torch.exp(-k**2 / (2 * (0.25 * w) ** 2))
    p[centre] = 0
    p /= p.sum()
    assert float((freq - p).abs().sum()) < 0.075       # sampling: ~0.03; a density of 1.5x the variance: 0.13


def test_equispaced_mask_is_regular_from_a_uniform_offset():
    """The free columns are every ``step``-th of the non-centre ones (step = their count / number to pick) from
    an offset uniform in [0, step): gaps of floor/ceil(step), first pick anywhere in [0, step)."""
    w = 40
    masks = cartesian_mask((1, w), 4.0, 0.1, kind="equispaced", n_masks=300, generator=G().manual_seed(1))[:, 0]
    n_center = round(w * 0.1)
    c0 = w // 2 - n_center // 2
    others = [i for i in range(w) if not c0 <= i < c0 + n_center]
    n_rest = round(w / 4.0) - n_center
    step = len(others) / n_rest
    firsts = []
    for m in masks:
        idx = [others.index(i) for i in range(w) if m[i] == 1 and i in others]
        assert len(idx) == n_rest
        gaps = np.diff(idx)
        assert set(gaps.tolist()) <= {math.floor(step), math.ceil(step)}
        firsts.append(idx[0])
    assert max(firsts) < step and max(firsts) >= math.floor(step) - 1 and min(firsts) == 0


@pytest.mark.parametrize("kind", ["random", "gaussian", "equispaced"])
def test_masks_are_drawn_from_the_generator(kind):
    a = cartesian_mask(32, 4.0, kind=kind, n_masks=3, generator=G().manual_seed(5))
    b = cartesian_mask(32, 4.0, kind=kind, n_masks=3, generator=G().manual_seed(5))
    c = cartesian_mask(32, 4.0, kind=kind, n_masks=3, generator=G().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    op1 = mri_cartesian(32, 4.0, mask=kind, generator=G().manual_seed(5))
    assert torch.equal(op1.mask[0, 0], a[0])


def test_mask_defaults_and_centre():
    m = cartesian_mask(32, generator=G().manual_seed(0))
    assert m.shape == (1, 32, 32)
    assert torch.equal(m, cartesian_mask(32, 4.0, 0.08, "random", generator=G().manual_seed(0)))
    assert int(m[0, 0].sum()) == 8
    assert bool((m[0, :, 15:18] == 1).all())                   # round(32 · 0.08) = 3 centre columns at 15..17
    one = cartesian_mask(16, 8.0, 2 / 16, generator=G().manual_seed(0))      # n_rest = 0: centre only
    assert int(one[0, 0].sum()) == 2 and bool(one[0, 0, 7:9].all())


def test_given_masks_are_validated_and_used():
    n = 8
    bool_mask = torch.zeros(n, n, dtype=torch.bool)
    bool_mask[:, [0, 3, 4]] = True
    op = mri_cartesian(n, mask=bool_mask)
    assert torch.equal(op.mask[0, 0], bool_mask.float()) and op.batch is None
    assert op.acceleration == pytest.approx(8 / 3)
    two = torch.stack([bool_mask.float(), torch.ones(n, n)])
    assert mri_cartesian(n, mask=two).batch == 2
    assert mri_cartesian(n, mask=two, n_slices=2).batch == 2
    with pytest.raises(ValueError, match="mask holds 2 slices, n_slices is 3"):
        mri_cartesian(n, mask=two, n_slices=3)
    with pytest.raises(ValueError, match=r"^mask must be a binary \(H, W\) or \(D, H, W\) tensor with H, W = 8, 8, "
                                         r"got shape \(8, 6\)"):
        mri_cartesian(n, mask=torch.ones(8, 6))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 8, 8\)"):
        mri_cartesian(n, mask=torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"got values other than 0 and 1 in shape \(8, 8\)"):
        mri_cartesian(n, mask=torch.full((8, 8), 0.5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        mri_cartesian(n, mask=torch.full((8, 8), math.nan))
    empty = two.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match=r"slice\(s\) \[1\]"):
        mri_cartesian(n, mask=empty)
    with pytest.raises(TypeError, match=r"^mask\b"):
        mri_cartesian(n, mask=torch.ones(n, n, dtype=torch.complex64))


def test_given_coil_maps_count_and_shape():
    maps = coil_sensitivities(3, 8)
    assert mri_cartesian(8, coil_maps=maps).coil_maps.shape[-3] == 3
    assert mri_cartesian(8, coils=3, coil_maps=maps).coil_maps.shape[-3] == 3
    with pytest.raises(ValueError, match="coils is 2 but coil_maps holds 3"):
        mri_cartesian(8, coils=2, coil_maps=maps)
    with pytest.raises(ValueError, match=r"coil_maps must have shape \(N, 8, 8\)"):
        mri_cartesian(8, coil_maps=coil_sensitivities(3, (8, 6)))
    op = mri_cartesian(8, coil_maps=maps[0] * 0.5, mask=torch.ones(8, 8))   # one coil, (H, W) map
    x = torch.rand(1, 1, 8, 8, generator=G().manual_seed(0), dtype=torch.float64)
    y = op.double().A(x)
    want = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x[0, 0] * maps[0].to(torch.complex128) * 0.5),
                                             norm="ortho"))
    torch.testing.assert_close(torch.complex(y[0, 0, 0], y[0, 1, 0]), want, rtol=1e-5, atol=1e-6)


def test_multicoil_maps_follow_dtype_changes_and_keep_their_phase():
    op = mri_cartesian(8, coils=2)
    maps = op.coil_maps.clone()
    d = op.to(torch.float64)                    # a real dtype maps to the matching complex one for the maps
    assert d.coil_maps.dtype == torch.complex128
    torch.testing.assert_close(d.coil_maps, maps.to(torch.complex128))
    f = d.to(torch.float32)
    assert f.coil_maps.dtype == torch.complex64
    torch.testing.assert_close(f.coil_maps, maps)
    assert float(f.coil_maps.imag.abs().max()) > 0.01


def test_equispaced_picks_follow_the_documented_rule_exactly():
    """Per mask one uniform draw ``u``: offset ``u · step``, picks ``others[floor(offset + step · i) mod n]``."""
    w, acc, cf = 37, 5.0, 0.1
    masks = cartesian_mask((1, w), acc, cf, kind="equispaced", n_masks=6, generator=G().manual_seed(3))[:, 0]
    n_total, n_center = round(w / acc), round(w * cf)
    c0 = w // 2 - n_center // 2
    others = [i for i in range(w) if not c0 <= i < c0 + n_center]
    n_rest = n_total - n_center
    step = len(others) / n_rest
    g = G().manual_seed(3)
    for m in masks:
        offset = float(torch.rand((), generator=g)) * step
        want = torch.zeros(w)
        want[c0:c0 + n_center] = 1
        want[[others[math.floor(offset + step * i) % len(others)] for i in range(n_rest)]] = 1
        assert torch.equal(m, want)


@pytest.mark.parametrize("kind", ["random", "gaussian", "equispaced"])
def test_masks_with_nothing_beyond_the_centre_or_a_single_column(kind):
    one = cartesian_mask(16, 8.0, 2 / 16, kind=kind, generator=G().manual_seed(0))      # n_rest = 0
    assert int(one[0, 0].sum()) == 2 and bool(one[0, 0, 7:9].all())
    single = cartesian_mask(16, 16.0, 0.0, kind=kind, generator=G().manual_seed(0))     # round(16 / 16) = 1
    assert int(single[0, 0].sum()) == 1
    assert int(cartesian_mask(16, 40.0, 0.0, kind=kind, generator=G().manual_seed(0))[0, 0].sum()) == 1   # at least 1


def test_multicoil_forward_is_mask_times_fft_of_each_coil_image():
    """``y_c = M F (S_c x)`` with the centred orthonormal DFT, zero off the sampled columns."""
    n = 8
    mask = torch.zeros(n, n)
    mask[:, [1, 4, 6]] = 1
    for op in (mri_cartesian(n, mask=mask, coils=3), mri_cartesian(n, mask=mask, coil_maps=coil_sensitivities(2, n))):
        op = op.double()
        maps = op.coil_maps.reshape(-1, n, n).to(torch.complex128)
        x = torch.rand(1, 1, n, n, generator=G().manual_seed(1), dtype=torch.float64)
        y = op.A(x)
        yc = torch.complex(y[0, 0], y[0, 1])                               # (C, H, W)
        want = mask * torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(maps * x[0, 0], dim=(-2, -1)),
                                                        norm="ortho"), dim=(-2, -1))
        torch.testing.assert_close(yc, want, rtol=1e-5, atol=1e-6)


def test_acceleration_defaults_to_four():
    assert mri_cartesian(32, generator=G().manual_seed(0)).acceleration == pytest.approx(4.0)


def test_acceleration_counts_sampled_locations():
    m = (torch.rand(8, 8, generator=G().manual_seed(2)) < 0.3).float()      # any given binary mask, not columns
    assert mri_cartesian(8, mask=m).acceleration == pytest.approx(64 / float(m.sum()))


def test_generator_is_validated_even_with_a_given_mask():
    with pytest.raises(TypeError, match=r"^generator must be a torch.Generator"):
        mri_cartesian(8, mask=torch.ones(8, 8), generator="seed")
    with pytest.raises(ValueError, match=r"tensor with H, W = 8, 8, got shape \(8, 6\)$"):
        mri_cartesian(8, mask=torch.zeros(8, 6))                            # binary: no "values other than"


def test_single_coil_prox_leaves_unsampled_frequencies_alone_at_huge_gamma():
    """At ``1/γ = 1e-8`` (a diffusion run's first steps) the closed form must not amplify float32 rounding on the
    frequencies nobody samples: there the prox returns ``z`` unchanged."""
    n = 16
    mask = torch.zeros(n, n)
    mask[:, [0, 3, 8, 9, 13]] = 1
    op = mri_cartesian(n, mask=mask)
    g = G().manual_seed(4)
    z = torch.rand(1, 1, n, n, generator=g)
    y = op.A(torch.rand(1, 1, n, n, generator=g))
    out = op.prox_l2(z, y, 1e8)
    w = op.normal_spectrum(z)[0, 0]
    unsampled = w.abs() < 1e-3
    assert bool(unsampled.any())
    dz = torch.fft.fft2((out - z)[0, 0].double())
    assert float(dz[unsampled].abs().max()) < 1e-3 * float(torch.fft.fft2(z[0, 0].double()).abs().max())
    torch.testing.assert_close(op.A(out), y, rtol=0, atol=1e-4)             # the data are fitted
