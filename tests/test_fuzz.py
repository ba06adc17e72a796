"""Fuzz suite of the loop's entry points: solve, Problem, every solver's hyperparameters, Result,
methods, the deepinv wrapper and the CLI.

Every bad input must give ``TypeError``/``ValueError`` whose message names the argument (or, for
the CLI, one line on stderr and a non-zero exit code) — never a raw traceback or a silent wrong
result. Operators, priors and training are fuzzed in ``tests/test_fuzz_inputs.py``. Each case
is listed in the test ids. The reproducers of the hardening issue are at the end.
"""

import dataclasses
import math
import typing

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invdiff import Problem, Result, solve
from invdiff.cli import main
from invdiff.methods import get_method
from invdiff.operators import ct_sparse_view, dense_operator, random_inpainting
from invdiff.priors import GaussianPrior
from invdiff.solve import NonFiniteError
from invdiff.solvers import DPS, MBIR, SMC, SOLVERS, DiffPIR

D64 = torch.float64


def _small():
    prior = GaussianPrior(torch.full((1, 4, 4), 0.5, dtype=D64), torch.full((1, 4, 4), 0.04, dtype=D64))
    g = torch.Generator().manual_seed(0)
    op = random_inpainting((1, 4, 4), 0.5, generator=g).double()
    pb = Problem.simulate(prior.sample(2, generator=g).clamp(0, 1), op, 0.05, generator=g)
    return prior, pb


PRIOR, PB = _small()


# -- solve ---------------------------------------------------------------------------------

def _solve(**kw):
    args = dict(problem=PB, prior=PRIOR, solver=DPS(), steps=3, progress=False)
    args.update(kw)
    return solve(args.pop("problem"), args.pop("prior"), args.pop("solver"), **args)


SOLVE_CASES = [
    ("problem-None", dict(problem=None), TypeError, "problem"),
    ("problem-str", dict(problem="ct-sparse-8"), TypeError, "problem"),
    ("problem-tensor", dict(problem=torch.zeros(1, 1, 4, 4)), TypeError, "problem"),
    ("problem-dict", dict(problem={"y": 1}), TypeError, "problem"),
    ("prior-None", dict(prior=None), TypeError, "prior"),
    ("prior-str", dict(prior="phantom64"), TypeError, "prior"),
    ("prior-int", dict(prior=3), TypeError, "prior"),
    ("prior-object", dict(prior=object()), TypeError, "prior"),
    ("solver-str", dict(solver="dps"), TypeError, "solver"),
    ("solver-class", dict(solver=DPS), TypeError, "solver"),
    ("solver-None", dict(solver=None), TypeError, "solver"),
    ("solver-int", dict(solver=3), TypeError, "solver"),
    ("generator-int", dict(generator=123), TypeError, "generator"),
    ("generator-str", dict(generator="seed"), TypeError, "generator"),
    ("generator-numpy", dict(generator=np.random.default_rng(0)), TypeError, "generator"),
    ("steps-0", dict(steps=0), ValueError, "steps"),
    ("steps-negative", dict(steps=-3), ValueError, "steps"),
    ("steps-float", dict(steps=2.5), ValueError, "steps"),
    ("steps-bool", dict(steps=True), ValueError, "steps"),
    ("steps-str", dict(steps="10"), ValueError, "steps"),
    ("steps-None", dict(steps=None), ValueError, "steps"),
    ("num_samples-0", dict(num_samples=0), ValueError, "num_samples"),
    ("num_samples-float", dict(num_samples=1.5), ValueError, "num_samples"),
    ("num_samples-bool", dict(num_samples=True), ValueError, "num_samples"),
    ("num_samples-negative", dict(num_samples=-2), ValueError, "num_samples"),
    ("sigmas-empty", dict(sigmas=[]), ValueError, "sigmas"),
    ("sigmas-one", dict(sigmas=[1.0]), ValueError, "sigmas"),
    ("sigmas-increasing", dict(sigmas=[1.0, 2.0, 0.0]), ValueError, "sigmas"),
    ("sigmas-nan", dict(sigmas=[1.0, float("nan"), 0.0]), ValueError, "sigmas"),
    ("sigmas-inf", dict(sigmas=[float("inf"), 1.0, 0.0]), ValueError, "sigmas"),
    ("sigmas-negative-end", dict(sigmas=[1.0, 0.5, -0.1]), ValueError, "sigmas"),
    ("sigmas-zero-inside", dict(sigmas=[1.0, 0.0, 0.0]), ValueError, "sigmas"),
    ("sigmas-above-sigma_max", dict(sigmas=[1000.0, 1.0, 0.0]), ValueError, "sigma_max"),
    ("mbir-num_samples-2", dict(solver=MBIR(), num_samples=2), ValueError, "num_samples=1"),
]


@pytest.mark.parametrize("kw, exc, match", [c[1:] for c in SOLVE_CASES], ids=[c[0] for c in SOLVE_CASES])
def test_solve_refuses(kw, exc, match):
    with pytest.raises(exc, match=match):
        _solve(**kw)


def _mutated_y(value):
    pb = Problem(PB.physics, PB.y.clone(), PB.sigma_y, PB.x_true)
    pb.y.view(-1)[1] = value  # written after construction
    return pb


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("solver", ["dps", "diffpir", "smc", "reddiff", "ddrm"])
def test_solve_rechecks_a_measurement_written_after_construction(value, solver):
    with pytest.raises(ValueError, match="problem.y contains 1 non-finite"):
        _solve(problem=_mutated_y(value), solver=SOLVERS[solver]())


def test_solve_problem_prior_mismatch_and_svd():
    rgb = Problem.simulate(torch.full((1, 3, 4, 4), 0.5), random_inpainting((3, 4, 4), 0.5), 0.01)
    with pytest.raises(ValueError, match="problem and prior do not match"):
        _solve(problem=rgb)
    ct = Problem.simulate(torch.full((1, 1, 16, 16), 0.5), ct_sparse_view(16, 4), 0.01)
    with pytest.raises(ValueError, match="DDRM needs an operator with an SVD"):
        solve(ct, GaussianPrior(torch.full((1, 16, 16), 0.5), torch.full((1, 16, 16), 0.04)), SOLVERS["ddrm"](),
              steps=2, progress=False)


# -- Problem -------------------------------------------------------------------------------

PROBLEM_CASES = [
    ("physics-None", lambda: Problem(None, PB.y, 0.1), ValueError, "physics"),
    ("physics-str", lambda: Problem("ct", PB.y, 0.1), ValueError, "physics"),
    ("y-nan", lambda: Problem(PB.physics, torch.full_like(PB.y, float("nan")), 0.1), ValueError, "y"),
    ("y-int", lambda: Problem(PB.physics, PB.y.to(torch.int64), 0.1), TypeError, "y"),
    ("y-complex", lambda: Problem(PB.physics, PB.y.to(torch.complex128), 0.1), TypeError, "y"),
    ("y-list", lambda: Problem(PB.physics, [[0.1]], 0.1), ValueError, "y"),
    ("y-wrong-shape", lambda: Problem(ct_sparse_view(16, 4), torch.zeros(1, 5, 5), 0.1), ValueError,
     "measurement of shape"),
    ("sigma_y-negative", lambda: Problem(PB.physics, PB.y, -0.1), ValueError, "sigma_y"),
    ("sigma_y-nan", lambda: Problem(PB.physics, PB.y, float("nan")), ValueError, "sigma_y"),
    ("sigma_y-inf", lambda: Problem(PB.physics, PB.y, float("inf")), ValueError, "sigma_y"),
    ("sigma_y-str", lambda: Problem(PB.physics, PB.y, "low"), ValueError, "sigma_y"),
    ("sigma_y-None", lambda: Problem(PB.physics, PB.y, None), ValueError, "sigma_y"),
    ("x_true-batch", lambda: Problem(PB.physics, PB.y, 0.1, PB.x_true[:1]), ValueError, "x_true"),
    ("x_true-image-shape", lambda: Problem(PB.physics, PB.y, 0.1, torch.zeros(2, 1, 5, 5, dtype=D64)), ValueError,
     "x_true"),
    ("x_true-nan", lambda: Problem(PB.physics, PB.y, 0.1, torch.full_like(PB.x_true, float("nan"))), ValueError,
     "x_true"),
    ("simulate-0-255", lambda: Problem.simulate(torch.full((1, 1, 16, 16), 200.0), ct_sparse_view(16, 4), 0.01),
     ValueError, "divide 8-bit"),
    ("simulate-HU", lambda: Problem.simulate(torch.full((1, 1, 16, 16), -1000.0), ct_sparse_view(16, 4), 0.01),
     ValueError, "intensity units"),
    ("simulate-nan", lambda: Problem.simulate(torch.full((1, 1, 16, 16), float("nan")), ct_sparse_view(16, 4), 0.01),
     ValueError, "x contains"),
    ("simulate-sigma_y", lambda: Problem.simulate(torch.zeros(1, 1, 16, 16), ct_sparse_view(16, 4), -1), ValueError,
     "sigma_y"),
    ("simulate-uint8", lambda: Problem.simulate(torch.zeros(1, 1, 16, 16, dtype=torch.uint8), ct_sparse_view(16, 4),
                                                0.01), TypeError, "x"),
]


@pytest.mark.parametrize("make, exc, match", [c[1:] for c in PROBLEM_CASES], ids=[c[0] for c in PROBLEM_CASES])
def test_problem_refuses(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# -- every solver's hyperparameters --------------------------------------------------------

def _bad_values(annotation: str):
    kinds = [k.strip() for k in annotation.split("|")]
    if "bool" in kinds:
        return [("str", "yes", TypeError), ("int", 1, TypeError)]
    if "int" in kinds:
        return [("float", 2.5, TypeError), ("bool", True, TypeError), ("str", "5", TypeError)]
    if "float" in kinds:
        return [("nan", float("nan"), ValueError), ("inf", float("inf"), ValueError), ("str", "1", TypeError),
                ("bool", True, TypeError)]
    if "str" in kinds:
        return [("int", 3, TypeError), ("unknown", "no-such-choice", ValueError)]
    return []


HYPER_CASES = []
for _name, _cls in sorted(SOLVERS.items()):
    for _f in dataclasses.fields(_cls):
        for _label, _value, _exc in _bad_values(str(_f.type)):
            HYPER_CASES.append((f"{_name}-{_f.name}-{_label}", _cls, _f.name, _value, _exc))


@pytest.mark.parametrize("cls, field, value, exc", [c[1:] for c in HYPER_CASES], ids=[c[0] for c in HYPER_CASES])
def test_solver_hyperparameters_are_checked_where_they_enter(cls, field, value, exc):
    with pytest.raises(exc, match=field):
        cls(**{field: value})


def test_solver_hyperparameter_ranges():
    with pytest.raises(ValueError, match="lam"):
        DiffPIR(lam=math.inf)  # would silently ignore the data
    with pytest.raises(TypeError, match="cg_iters"):
        DiffPIR(cg_iters=2.5)  # used to fail only inside CG
    with pytest.raises(ValueError, match="tau"):
        SMC(tau=-1.0)


# -- Result, methods, the deepinv wrapper --------------------------------------------------

def test_result_metrics_refuses_a_missing_or_misshaped_truth():
    r = Result(x_hat=torch.zeros(2, 1, 4, 4))
    with pytest.raises(TypeError, match="x_true"):
        r.metrics(None)
    with pytest.raises(ValueError, match="x_true has shape"):
        r.metrics(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("name, exc, match", [
    (3, TypeError, "method"), (None, TypeError, "method"), ("magic", ValueError, "unknown method"),
    ("diffpir:0", ValueError, "SOLVER:K"), ("tv:2", ValueError, "SOLVER:K"), ("diffpir:-1", ValueError, "SOLVER:K"),
    ("reddiff:3", ValueError, "SOLVER:K"), ("diffpir:", ValueError, "SOLVER:K"),
], ids=["int", "None", "unknown", "K-0", "classical-K", "K-negative", "point-estimate-K", "K-empty"])
def test_get_method_refuses(name, exc, match):
    with pytest.raises(exc, match=match):
        get_method(name)


def test_as_reconstructor_refuses_unknown_solvers():
    from invdiff import as_reconstructor

    with pytest.raises(ValueError, match="unknown solver"):
        as_reconstructor(PRIOR, "magic")


# -- the CLI: one line, an exit code, nothing written --------------------------------------

def _cli_cases(tmp):
    big = tmp / "big.npy"
    np.save(big, np.full((64, 64), 200.0, dtype=np.float32))
    tiny = tmp / "tiny.npy"
    np.save(tiny, np.full((1, 1), 0.5, dtype=np.float32))
    nan = tmp / "nan.npy"
    np.save(nan, np.full((1, 91, 32), np.nan, dtype=np.float32))  # ct_sparse_view(64): 32 views
    png = tmp / "a.png"
    from skimage.io import imsave

    imsave(png, np.zeros((64, 64), dtype=np.uint8), check_contrast=False)
    solve = ["solve", "--steps", "1", "--no-progress"]
    return [
        ("index-huge", solve + ["--problem", "ct-sparse-8", "--index", "1000000"], "--index", 2),
        ("index-negative", solve + ["--problem", "ct-sparse-8", "--index", "-1"], "--index", 2),
        ("image-and-dicom", solve + ["--problem", "ct-sparse-8", "--image", str(png), "--dicom", str(png)],
         "--image or --dicom", 2),
        ("problem-and-operator", solve + ["--problem", "ct-sparse-8", "--operator", "ct_sparse_view"], "--operator", 2),
        ("problem-and-sigma-y", solve + ["--problem", "ct-sparse-8", "--sigma-y", "0.1"], "--sigma-y", 2),
        ("problem-and-n-views", solve + ["--problem", "ct-sparse-8", "--n-views", "4"], "--n-views", 2),
        ("measurement-and-image", solve + ["--measurement", str(nan), "--operator", "ct_sparse_view", "--sigma-y",
                                           "0.1", "--image", str(png)], "--image", 2),
        ("image-0-255-npy", solve + ["--problem", "ct-sparse-8", "--image", str(big)], "divide 8-bit", 2),
        ("image-1x1", solve + ["--problem", "ct-sparse-8", "--image", str(tiny)], "smaller than the problem", 2),
        ("measurement-nan", solve + ["--measurement", str(nan), "--operator", "ct_sparse_view", "--sigma-y", "0.1"],
         "NaN", 2),
        ("max-angle-sparse-view", solve + ["--measurement", str(nan), "--operator", "ct_sparse_view", "--sigma-y",
                                           "0.1", "--max-angle", "90"], "does not take --max-angle", 2),
        ("unknown-operator", solve + ["--measurement", str(nan), "--operator", "radon", "--sigma-y", "0.1"],
         "unknown operator", 2),
        ("bench-unknown-method", ["bench", "--problems", "ct-sparse-8", "--solvers", "magic"], "unknown method", 2),
        ("bench-K-zero", ["bench", "--problems", "ct-sparse-8", "--solvers", "dps:0"], "SOLVER:K", 2),
    ]


def test_cli_bad_inputs_give_one_line(tmp_path, capsys):
    for case_id, argv, message, code in _cli_cases(tmp_path):
        out = tmp_path / f"out-{case_id}"
        assert main(argv + ["--out", str(out)]) == code, case_id
        err = capsys.readouterr().err
        assert message in err, (case_id, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (case_id, err)
        assert not out.exists() or not any(out.iterdir()), case_id  # nothing written


# -- valid inputs: a finite result of the right shape --------------------------------------

@settings(max_examples=15, deadline=None)
@given(steps=st.integers(1, 6), samples=st.integers(1, 3), solver=st.sampled_from(["dps", "diffpir", "ddrm", "pigdm"]),
       seed=st.integers(0, 2**31 - 1))
def test_valid_inputs_give_finite_results_of_the_right_shape(steps, samples, solver, seed):
    res = _solve(solver=SOLVERS[solver](), steps=steps, num_samples=samples,
                 generator=torch.Generator().manual_seed(seed))
    assert res.x_hat.shape == PB.x_true.shape and torch.isfinite(res.x_hat).all()
    if samples > 1:
        assert res.samples.shape == (samples,) + tuple(PB.x_true.shape) and torch.isfinite(res.std).all()


# -- the reproducers of the hardening issue ------------------------------------------------

@pytest.fixture(scope="module")
def ct_problem():
    from invdiff.priors import load_prior

    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    pb = Problem.simulate(torch.rand(1, 1, 64, 64, generator=g()) * .5 + .25, ct_sparse_view(64, 8), 0.01,
                          generator=g())
    return load_prior("phantom64"), pb


def test_smc_with_an_exploding_weight_is_an_error_not_a_nan_result(ct_problem):
    prior, pb = ct_problem
    with pytest.raises(NonFiniteError, match="SMC: .*x_hat.*lam = 100000000000.0"):
        solve(pb, prior, SMC(particles=4, lam=1e11), steps=3, generator=torch.Generator().manual_seed(0),
              progress=False)


def test_nan_in_one_detector_bin_is_refused(ct_problem):
    _, pb = ct_problem
    y = pb.y.clone()
    y[0, 0, 10, 3] = float("nan")
    with pytest.raises(ValueError, match="y .measurement. contains 1 non-finite"):
        Problem(pb.physics, y, pb.sigma_y)


@pytest.mark.parametrize("solver", [SMC(particles=2), SMC(particles=2, cov="jacobian"), MBIR(), DPS(), DiffPIR()],
                         ids=["smc", "smc-jacobian", "mbir", "dps", "diffpir"])
def test_unconditional_problems_run_through_every_solver(ct_problem, solver):
    prior, _ = ct_problem
    res = solve(Problem.unconditional((1, 64, 64), batch=2), prior, solver, steps=3,
                generator=torch.Generator().manual_seed(0), progress=False)
    assert res.x_hat.shape == (2, 1, 64, 64) and torch.isfinite(res.x_hat).all()
    assert float(res.x_hat.abs().max()) < 5  # a sample of the [0, 1] prior, not a blow-up


def test_a_float64_measurement_with_a_float32_network(ct_problem):
    prior, pb = ct_problem
    pb64 = Problem(pb.physics, pb.y.double(), pb.sigma_y)
    res = solve(pb64, prior, DiffPIR(), steps=2, generator=torch.Generator().manual_seed(0), progress=False)
    assert res.x_hat.dtype == torch.float64 and torch.isfinite(res.x_hat).all()
