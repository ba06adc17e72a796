"""Uncertainty maps: coverage metrics, split-conformal calibration, intervals, and their use in solve/bench/CLI."""

import math
import re

import numpy as np
import pytest
import torch

from invdiff import Problem, solve
from invdiff.calibration import Calibration, fit_conformal
from invdiff.metrics import LEVELS, calibration_curve, coverage, nominal_coverage, scores, std_multiplier
from invdiff.reference import gaussian_dense
from invdiff.result import Result
from invdiff.solvers import DiffPIR, REDDiff

D64 = torch.float64


def test_multipliers_are_the_gaussian_and_student_t_quantiles():
    assert std_multiplier(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert std_multiplier(0.6827) == pytest.approx(1.0, abs=1e-3)
    # S = 8: t_7 quantile 2.364624 times sqrt(1 + 1/8)
    assert std_multiplier(0.95, 8) == pytest.approx(2.364624 * math.sqrt(9 / 8), abs=1e-5)
    for S in (None, 2, 5, 40):
        for p in (0.3, 0.6827, 0.95, 0.99):
            assert nominal_coverage(std_multiplier(p, S), S) == pytest.approx(p, abs=1e-9)
    assert nominal_coverage(2.0, 8) == pytest.approx(0.8987, abs=1e-3)  # not 0.9545: the std is estimated


def test_finite_sample_rule_is_exact_for_gaussian_draws():
    """Truth and S samples i.i.d. N(μ, s²) per pixel: the t-rule coverage is nominal within sampling error,
    the plain Gaussian rule is not (it undercovers by ~5 points at S = 8)."""
    g = torch.Generator().manual_seed(0)
    S, n = 8, 200_000
    mu, s = torch.rand(n, generator=g, dtype=D64), 0.1 + torch.rand(n, generator=g, dtype=D64)
    draws = mu + s * torch.randn(S, n, generator=g, dtype=D64)
    truth = mu + s * torch.randn(n, generator=g, dtype=D64)
    m, sd = draws.mean(0), draws.std(0)
    se = math.sqrt(0.95 * 0.05 / n)
    exact = float(coverage(m[None], sd[None], truth[None], std_multiplier(0.95, S))[0])
    naive = float(coverage(m[None], sd[None], truth[None], std_multiplier(0.95))[0])
    assert abs(exact - 0.95) < 4 * se
    assert naive < 0.95 - 0.03


def test_exact_sampler_on_a_gaussian_posterior_is_calibrated():
    """Exact posterior draws of 400 independent measured signals: observed coverage = nominal at every level."""
    prior, pb, post = gaussian_dense(d=16, m=4, sigma_y=0.05, seed=3, batch=400)
    S = 8
    draws = post.sample(S, generator=torch.Generator().manual_seed(1))  # (S, B, 1, d)
    mean, std = draws.mean(0), draws.std(0)
    curve = calibration_curve(mean, std, pb.x_true, num_samples=S)
    n = pb.x_true.numel()
    for p, obs in zip(curve["level"], curve["observed"]):
        # pixels of one signal are correlated: allow 4 standard errors of n / 16 independent units
        assert abs(obs - p) < 4 * math.sqrt(p * (1 - p) / (n / 16)), (p, obs)
    # halving the std map (an overconfident sampler) is visibly miscalibrated
    bad = calibration_curve(mean, std / 2, pb.x_true, num_samples=S)
    assert bad["observed"][LEVELS.index(0.95)] < 0.75


def test_coverage_counts_the_interval_and_the_mask():
    x_hat = torch.zeros(2, 1, 2, 2, dtype=D64)
    std = torch.ones_like(x_hat)
    truth = torch.tensor([0.5, 1.5, -0.9, 3.0] * 2, dtype=D64).reshape(2, 1, 2, 2)
    assert coverage(x_hat, std, truth, 1.0).tolist() == [0.5, 0.5]
    assert coverage(x_hat, std, truth, 2.0).tolist() == [0.75, 0.75]
    mask = torch.tensor([[True, False], [True, True]]).reshape(1, 1, 2, 2)
    assert coverage(x_hat, std, truth, 1.0, mask=mask).tolist() == [2 / 3, 2 / 3]
    assert scores(x_hat, std * 0, truth).isinf().all()


def test_conformal_factor_is_the_split_conformal_order_statistic():
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(3, 1, 10, 10, generator=g, dtype=D64)
    x_hat, std = torch.zeros_like(truth), torch.full_like(truth, 0.5)
    cal = fit_conformal(x_hat, std, truth, 8, levels=(0.5, 0.9))
    s = torch.sort((truth.abs() / 0.5).flatten()).values
    assert cal.factors == (float(s[math.ceil(301 * 0.5) - 1]), float(s[math.ceil(301 * 0.9) - 1]))
    assert (cal.images, cal.pixels, cal.num_samples) == (3, 300, 8)
    assert cal.factor(0.7) == pytest.approx((cal.factors[0] + cal.factors[1]) / 2)
    # a level beyond what n scores can certify gets an infinite factor, never a too-small one
    tiny = fit_conformal(x_hat[:1, :, :2, :2], std[:1, :, :2, :2], truth[:1, :, :2, :2], 2, levels=(0.9,))
    assert tiny.factors == (math.inf,)


def test_calibration_restores_coverage_of_an_overconfident_map():
    """A map 3× too small: raw 95 % intervals cover ~50 %; after fitting on calibration images, fresh
    test images are covered at the nominal level (within sampling error)."""
    g = torch.Generator().manual_seed(5)

    def batch(n):
        s = 0.05 + 0.1 * torch.rand(n, 1, 32, 32, generator=g, dtype=D64)
        truth = 0.5 + s * torch.randn(n, 1, 32, 32, generator=g, dtype=D64)
        return torch.full_like(truth, 0.5), s / 3, truth

    cal = fit_conformal(*batch(8), 16)
    x_hat, std, truth = batch(8)
    raw = coverage(x_hat, std, truth, std_multiplier(0.95, 16)).mean()
    calibrated = coverage(x_hat, std, truth, cal.factor(0.95)).mean()
    assert raw < 0.7
    assert abs(float(calibrated) - 0.95) < 4 * math.sqrt(0.95 * 0.05 / truth.numel())
    # the truth's spread is 3× the map's: q_95 ≈ 3 · 1.96, measured against the S = 16 rule
    assert cal.factor(0.95) == pytest.approx(3 * std_multiplier(0.95), rel=0.05)
    assert cal.scale(0.95) == pytest.approx(cal.factor(0.95) / std_multiplier(0.95, 16))
    assert Calibration.from_dict(cal.to_dict()) == cal


def _two_sample_result():
    prior, pb, post = gaussian_dense(d=16, m=4, sigma_y=0.05, seed=0, batch=2)
    return solve(pb, prior, DiffPIR(lam=1.0, zeta=1.0), steps=10, num_samples=4,
                 generator=torch.Generator().manual_seed(0), progress=False), pb


def test_result_interval_raw_and_calibrated():
    res, pb = _two_sample_result()
    assert res.num_samples == 4 and res.calibration is None and res.calibrated_std is None
    raw = res.interval(0.9)
    k = std_multiplier(0.9, 4)
    assert not raw.calibrated
    assert torch.allclose(raw.upper, res.x_hat + k * res.std) and torch.allclose(raw.lower, res.x_hat - k * res.std)
    cal = Calibration(levels=(0.5, 0.95), factors=(1.0, 3.0), num_samples=4, images=1, pixels=10)
    done = res.calibrated(cal)
    assert res.calibration is None  # the original is untouched
    itv = done.interval(0.95)
    assert itv.calibrated and torch.allclose(itv.upper - done.x_hat, 3.0 * res.std)
    assert torch.allclose(done.calibrated_std, res.std * 3.0 / std_multiplier(0.95))
    with pytest.raises(ValueError, match="4"):
        res.calibrated(Calibration(levels=(0.95,), factors=(2.0,), num_samples=8, images=1, pixels=10))
    with pytest.raises(ValueError, match="levels 0.5 to 0.95"):
        done.interval(0.99)
    for bad in (0.0, 1.0, 1.5, -0.1, "0.9"):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            res.interval(bad)


def test_no_std_map_means_a_clear_error():
    prior, pb, _ = gaussian_dense(d=16, m=4, sigma_y=0.05, seed=0)
    one = solve(pb, prior, DiffPIR(), steps=5, generator=torch.Generator().manual_seed(0), progress=False)
    red = solve(pb, prior, REDDiff(), steps=5, num_samples=2, generator=torch.Generator().manual_seed(0),
                progress=False)
    for res in (one, red, Result(x_hat=pb.x_true)):
        with pytest.raises(ValueError, match="at least 2"):
            res.interval(0.95)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        fit_conformal(pb.x_true, pb.x_true, pb.x_true, 1)
    with pytest.raises(TypeError, match="at least 2 posterior samples"):
        calibration_curve(pb.x_true, None, pb.x_true)
    with pytest.raises(ValueError, match="no image"):
        fit_conformal(pb.x_true[:0], pb.x_true[:0], pb.x_true[:0], 4)
    with pytest.raises(ValueError, match="negative"):
        coverage(pb.x_true, -torch.ones_like(pb.x_true), pb.x_true, 2.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibration(levels=(0.5, 0.9), factors=(2.0, 1.0), num_samples=4, images=1, pixels=4)


# -- named problems: the factor is fitted on the validation split only ------------------------------------

class _Source:
    """Phantoms for validation; the test split's images are chosen by the test (to show they never matter)."""

    channels, depth = 1, None

    def __init__(self, test_offset=0.0, validation_seed=555):
        self.test_offset, self.validation_seed, self.asked = test_offset, validation_seed, []

    def images(self, split, n, size):
        from invdiff.data import body_phantoms

        self.asked.append(split)
        seed = self.validation_seed if split == "validation" else 777
        x = body_phantoms(n, size, "ct", generator=torch.Generator().manual_seed(seed))
        return (x + self.test_offset).clamp(0, 1) if split == "test" else x


def _toy_spec(source):
    from invdiff.operators import ct_sparse_view
    from invdiff.problems import ProblemSpec

    return ProblemSpec("toy-uq", "toy", lambda: ct_sparse_view(16, 4), 0.01, source, "phantom64", size=16,
                       presets={"diffpir": {"lam": 1.0, "zeta": 1.0}})


def test_calibration_uses_the_validation_split_only(monkeypatch):
    from invdiff.bench import calibrate_problem
    from invdiff.problems import PROBLEMS

    fitted = []
    for source in (_Source(0.0), _Source(0.5), _Source(0.0, validation_seed=556)):
        monkeypatch.setitem(PROBLEMS, "toy-uq", _toy_spec(source))
        cal, res = calibrate_problem("toy-uq", "diffpir:2", images=2, steps=3)
        assert set(source.asked) == {"validation"}
        fitted.append(cal)
    assert fitted[0] == fitted[1]  # other test images: the same factors
    assert fitted[0].factors != fitted[2].factors  # other validation images: other factors
    assert fitted[0].steps == 3 and "validation" in fitted[0].source
    with pytest.raises(ValueError, match="at least 2"):
        calibrate_problem("toy-uq", "diffpir", images=2, steps=3)
    with pytest.raises(ValueError, match="sampling solver"):  # RED-Diff yields no samples
        calibrate_problem("toy-uq", "reddiff:2", images=2, steps=3)
    with pytest.raises(ValueError, match="at least one image"):
        calibrate_problem("toy-uq", "diffpir:2", images=0, steps=3)


def test_bench_cell_and_cli_report_calibrated_coverage(monkeypatch, tmp_path):
    from invdiff.bench import calibrate_problem, run_cell
    from invdiff.methods import get_method
    from invdiff.problems import PROBLEMS
    from invdiff.solve_cli import run_solve

    monkeypatch.setitem(PROBLEMS, "toy-uq", _toy_spec(_Source()))
    raw = run_cell("toy-uq", get_method("diffpir:2"), 2, 0, 3, 1, str(tmp_path / "a"))
    assert set(raw["coverage"]) >= {"raw_1std", "raw_2std", "nominal_2std", "width_2std"}
    assert "cal_95" not in raw["coverage"]
    assert 0 <= raw["coverage"]["raw_1std"] <= raw["coverage"]["raw_2std"] <= 1

    cal, _ = calibrate_problem("toy-uq", "diffpir:2", images=2, steps=3)
    spec = _toy_spec(_Source())
    object.__setattr__(spec, "calibrations", {"diffpir:2": cal.to_dict()})
    monkeypatch.setitem(PROBLEMS, "toy-uq", spec)
    done = run_cell("toy-uq", get_method("diffpir:2"), 2, 0, 3, 1, str(tmp_path / "b"))
    assert done["psnr"] == raw["psnr"]  # calibration changes the intervals, not the reconstruction
    assert done["coverage"]["scale_95"] == pytest.approx(cal.scale(0.95))
    # the stored map is the calibrated one
    std_raw = np.load(tmp_path / "a" / "reconstructions" / "toy-uq" / "diffpir:2.std.npy")
    std_cal = np.load(tmp_path / "b" / "reconstructions" / "toy-uq" / "diffpir:2.std.npy")
    assert np.allclose(std_cal, std_raw * cal.factor(0.95) / std_multiplier(0.95))

    out = run_solve(out_dir=str(tmp_path / "cli"), problem="toy-uq", solver="diffpir", steps=3, samples=2,
                    progress=False)
    assert out["calibrated"] and 0 <= out["coverage95"] <= 1
    bounds = np.load(out["interval95"])
    x = np.load(out["npy"])
    assert bounds.shape == (2,) + x.shape and (bounds[0] <= bounds[1]).all()
    assert np.allclose(np.load(out["std_calibrated"]), np.load(out["std"]) * cal.factor(0.95) / std_multiplier(0.95))
    with pytest.warns(RuntimeWarning, match="uncalibrated"):
        other = run_solve(out_dir=str(tmp_path / "cli4"), problem="toy-uq", solver="diffpir", steps=4, samples=2,
                          progress=False)
    assert not other["calibrated"] and "std_calibrated" not in other
    # a calibration belongs to the prior it was fitted with
    with pytest.warns(RuntimeWarning, match="fitted with its prior phantom64, not mri-brain"):
        swapped = run_solve(out_dir=str(tmp_path / "cli5"), problem="toy-uq", solver="diffpir", steps=3, samples=2,
                            prior="mri-brain", progress=False)
    assert not swapped["calibrated"]
    assert run_solve(out_dir=str(tmp_path / "cli6"), problem="toy-uq", solver="diffpir", steps=3, samples=2,
                     prior="phantom64", progress=False)["calibrated"]


def test_named_problems_read_stored_calibrations():
    from invdiff.problems import PROBLEMS

    for spec in PROBLEMS.values():
        for method in spec.calibrations:
            cal = spec.calibration(method)
            # "solver:S" (S samples), or SMC's "smc(K=S)" (one run of S particles)
            assert cal.num_samples == int(re.search(r"(\d+)\)?$", method).group(1))
            assert "validation" in cal.source
        assert spec.calibration("no-such-method:3") is None


def test_a_calibration_fitted_with_another_prior_is_not_used():
    import dataclasses

    from invdiff.problems import PROBLEMS

    spec = PROBLEMS["ct-sparse-8"]
    stored = spec.calibrations["diffpir:8"]
    assert spec.calibration("diffpir:8") is not None and stored["prior"] == spec.prior
    other = dataclasses.replace(spec, calibrations={"diffpir:8": {**stored, "prior": "ct"}})
    assert other.calibration("diffpir:8") is None
