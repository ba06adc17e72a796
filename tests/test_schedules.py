"""Noise schedules against grids written out here from the papers' formulas.

The expected values are computed with Python floats in plain loops (no code shared with
``invdiff.schedules``), so a schedule that picks the wrong timesteps, drops one, mixes up
ρ or the units fails here, not only when compared with itself.
"""

import math

import pytest
import torch

from invdiff import schedules
from invdiff.priors import GaussianPrior
from invdiff.solvers.dps import DPS

T = 1000


def ddpm_linear_sigmas(scale=0.5):
    """Ho et al. (2020): β_t linear from 1e-4 to 0.02 over t = 1…1000, ᾱ_t = ∏_{s≤t} (1 − β_s),
    VE noise level σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) on [−1, 1] data, i.e. half of it in invdiff's [0, 1]
    units. Index 0 is t = 1."""
    out, abar = [], 1.0
    for i in range(T):
        abar *= 1 - (1e-4 + (0.02 - 1e-4) * i / (T - 1))
        out.append(scale * math.sqrt((1 - abar) / abar))
    return out


def cosine_sigmas(s=0.008, scale=0.5):
    """Nichol & Dhariwal (2021): f(t) = cos²((t/T + s)/(1 + s) · π/2), β_t = 1 − f(t)/f(t−1)
    clipped at 0.999, ᾱ_t = ∏ (1 − β_s)."""
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    out, abar = [], 1.0
    for t in range(1, T + 1):
        abar *= 1 - min(1 - f[t] / f[t - 1], 0.999)
        out.append(scale * math.sqrt((1 - abar) / abar))
    return out


def karras_eq5(n, smin, smax, rho=7.0):
    """Karras et al. (2022), eq. 5, then σ_N = 0."""
    a, b = smax ** (1 / rho), smin ** (1 / rho)
    return [(a + i / (n - 1) * (b - a)) ** rho for i in range(n)] + [0.0]


def close(got, want, rel=1e-12):
    got = [float(v) for v in got]
    assert len(got) == len(want), (len(got), len(want))
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=rel, abs=0 if w else 1e-300), (i, g, w)


def test_ddpm_linear_grid_end_points_are_the_papers():
    s = ddpm_linear_sigmas()
    assert s[0] == pytest.approx(0.5 * math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-14)  # t = 1: σ = 0.005000250…
    assert s[0] == pytest.approx(0.005000250018751287, rel=1e-12)
    assert s[-1] == pytest.approx(78.70364040520379, rel=1e-10)  # t = T, 157.4 on [−1, 1] data


def test_ddpm_sigmas_picks_evenly_spaced_timesteps_down_to_t1():
    s = ddpm_linear_sigmas()
    # every timestep, largest first, ending at t = 1 (σ = 0.005), then 0
    close(schedules.ddpm_sigmas(T, 1e-3, 100.0), s[::-1] + [0.0])
    # ten steps: timesteps 1000, 889, …, 112, 1 (0-based 999 − 111 k)
    got = schedules.ddpm_sigmas(10, 1e-3, 100.0)
    assert got.shape == (11,) and got.dtype == torch.float64
    close(got, [s[999 - 111 * k] for k in range(10)] + [0.0])
    assert float(got[-2]) == pytest.approx(0.005000250018751287, rel=1e-12)
    # six steps: 999 · (1 − k/5) = 999, 799.2, 599.4, 399.6, 199.8, 0, rounded to the nearest timestep
    close(schedules.ddpm_sigmas(6, 1e-3, 100.0), [s[i] for i in (999, 799, 599, 400, 200, 0)] + [0.0])
    # one step: the largest timestep only
    close(schedules.ddpm_sigmas(1, 1e-3, 100.0), [s[-1], 0.0])


def test_ddpm_sigmas_keeps_the_range_a_prior_covers():
    s = ddpm_linear_sigmas()
    top = max(i for i, v in enumerate(s) if v <= 1.0)
    assert top == 395  # σ_396 = 0.99… ≤ 1 < σ_397
    assert s[top] <= 1.0 < s[top + 1]
    # six steps over indices 395 … 0: 395, 316, 237, 158, 79, 0 (exact, no rounding)
    close(schedules.ddpm_sigmas(6, 1e-3, 1.0), [s[395 - 79 * k] for k in range(6)] + [0.0])
    # sigma_max exactly on a grid value keeps it (σ ≤ sigma_max); the value is taken from the full
    # grid, checked above against s to 1e-12, so that it is bit-equal to the schedule's own
    on_grid = float(schedules.ddpm_sigmas(T, 1e-3, 100.0)[999 - 395])
    assert on_grid == pytest.approx(s[395], rel=1e-12)
    close(schedules.ddpm_sigmas(6, 1e-3, on_grid), [s[395 - 79 * k] for k in range(6)] + [0.0])
    close(schedules.ddpm_sigmas(6, 1e-3, 0.999 * s[395])[:2], [s[394], s[394 - 79]])  # 394 … 0: 394, 315, …
    # clamped below at sigma_min: t = 1 and t = 2 (0.0050, 0.0074) are raised to 0.008, t = 3 (0.0095) is not
    got = schedules.ddpm_sigmas(T, 0.008, 100.0)
    close(got[-4:], [s[2], 0.008, 0.008, 0.0])


def test_ddpm_quad_sigmas_is_diffpirs_quadratic_spacing():
    """DiffPIR's official ``skip_type = 'quad'``: index ``j_i = int(sqrt(i/(N−1)) · L)`` into the noise
    levels counted from the top, the last one pulled back to ``L − 1`` (that is, t = 1)."""
    s = ddpm_linear_sigmas()
    # L = 1000: sqrt(0, 0.25, 0.5, 0.75, 1) · 1000 = 0, 500, 707.1, 866.03, 1000 → 0, 500, 707, 866, 999
    got = schedules.ddpm_quad_sigmas(5, 1e-3, 100.0)
    assert got.shape == (6,) and got.dtype == torch.float64
    close(got, [s[999 - j] for j in (0, 500, 707, 866, 999)] + [0.0])
    # the prior covers σ <= 1, i.e. L = 396 levels (checked above): 0, 396/√2 = 280.01, 396 → 0, 280, 395
    close(schedules.ddpm_quad_sigmas(3, 1e-3, 1.0), [s[395], s[395 - 280], s[0], 0.0])
    close(schedules.ddpm_quad_sigmas(1, 1e-3, 100.0), [s[999], 0.0])
    # strides shrink towards the end (dense at low noise), unlike ddpm_sigmas' even strides
    t = [999 - int(math.sqrt(i / 29) * 1000) for i in range(30)]
    t[-1] = 0
    close(schedules.ddpm_quad_sigmas(30, 1e-3, 100.0), [s[i] for i in t] + [0.0])
    assert t[0] - t[1] > 100 and t[-2] - t[-1] < 20
    assert schedules.RANGE_SCHEDULES["ddpm_quad"] is schedules.ddpm_quad_sigmas


def test_diffpir_defaults_to_the_quadratic_spacing():
    from invdiff.solvers import DiffPIR

    prior = GaussianPrior(torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.05))  # covers (0.002, 80)
    s = ddpm_linear_sigmas()
    close(DiffPIR().default_sigmas(prior, 5), [s[999 - j] for j in (0, 500, 707, 866, 999)] + [0.0])


def test_solvers_on_the_ddpm_schedule_use_that_grid():
    """DPS's default noise levels over a Gaussian prior's range (0.002, 80) are the DDPM grid."""
    prior = GaussianPrior(torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.05))
    assert (prior.sigma_min, prior.sigma_max) == (0.002, 80.0)
    s = ddpm_linear_sigmas()
    close(DPS().default_sigmas(prior, 10), [s[999 - 111 * k] for k in range(10)] + [0.0])


def test_vp_linear_and_cosine_grids():
    s = ddpm_linear_sigmas()
    close(schedules.vp_linear(10), [s[999 - 111 * k] for k in range(10)] + [0.0])
    close(schedules.vp_linear(10, scale=1.0), [2 * s[999 - 111 * k] for k in range(10)] + [0.0])
    c = cosine_sigmas()
    # cosine: ᾱ_t = f(t)/f(0) wherever β is not clipped (here every t < T)
    f0 = math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    abar_500 = math.cos((0.5 + 0.008) / 1.008 * math.pi / 2) ** 2 / f0
    assert c[499] == pytest.approx(0.5 * math.sqrt((1 - abar_500) / abar_500), rel=1e-10)
    close(schedules.vp_cosine(4), [c[999], c[666], c[333], c[0], 0.0], rel=1e-10)  # 999, 666, 333, 0


def test_karras_is_eq5_with_rho_7():
    close(schedules.karras(5, 0.002, 80.0), karras_eq5(5, 0.002, 80.0))
    k = schedules.karras(3, 0.002, 80.0)
    mid = ((80.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    assert float(k[1]) == pytest.approx(mid, rel=1e-13) and mid == pytest.approx(2.51522, rel=1e-5)
    assert float(k[0]) == 80.0 and float(k[2]) == pytest.approx(0.002, rel=1e-13) and float(k[3]) == 0
    assert karras_eq5(3, 0.002, 80.0, rho=3.0)[1] != pytest.approx(mid, rel=1e-3)  # ρ matters
    close(schedules.karras(4, 0.01, 10.0, rho=3.0), karras_eq5(4, 0.01, 10.0, rho=3.0))
    close(schedules.karras(1, 0.002, 80.0), [80.0, 0.0])


def test_geometric_is_log_uniform():
    want = [10.0 * (0.01 / 10.0) ** (i / 3) for i in range(4)] + [0.0]  # 10, 1, 0.1, 0.01
    close(schedules.geometric(4, 0.01, 10.0), want, rel=1e-13)
    close(schedules.geometric(1, 0.01, 10.0), [10.0, 0.0])
