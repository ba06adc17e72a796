"""Everything runs on a GPU and matches the CPU (issue 17), and the GPU script's dry run.

Tests marked ``gpu`` need a CUDA device: without one they are collected and skipped with the
reason (``tests/conftest.py``). Each compares a computation on the device with the same one on
the CPU, and is written for any device: ``_devices()`` also runs it with ``device="cpu"``, so its
logic (the moves: ``Problem.to``, ``Module.to``, ``Result.to``; the comparisons) runs in CI,
where the "device" result must then equal the CPU's.

Tolerances, float32 (networks, operators). A GPU sums in other orders than the CPU, so the
two float32 results differ by rounding. The reference is the same computation in float64 on
the CPU: the device's float32 result must be within 100× of the CPU's float32 distance to it
(plus 1e-6 of the result's scale, for computations the CPU does exactly, such as a mask). GPU
kernels (cuDNN's convolution algorithms, FFTs, ``grid_sample``) round differently, some more
than the CPU's, hence the factor; a device bug — a noise level, channel or tensor lost on the way —
is orders of magnitude larger. TF32 is switched off in these tests (``_exact_float32``): it
would round inputs to 10-bit mantissas, a precision choice, not a device bug.

Tolerance, float64 (solvers on exact Gaussian priors). Every draw comes from the seeded CPU
generator, so a solve on the GPU sees the same noise as on the CPU and differs by float64
rounding only (1e-16 relative per operation, amplified by at most the conditioning of the few
CG and Cholesky solves involved, < 1e6 here): a 1e-8 absolute tolerance on images in [0, 1]
leaves a margin of 100× over that and is far below any real change (the smallest noise added
in a step is ~1e-3).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from invdiff import Problem, solve
from invdiff.devices import module_device, multinomial, rand, randn, resolve_device
from invdiff.operators import OPERATORS, ct_sparse_view, random_inpainting, volume_mri
from invdiff.priors import load_prior
from invdiff.priors.zoo import available_priors, catalog
from invdiff.problems import get_problem
from invdiff.solvers import SOLVERS

ROOT = Path(__file__).resolve().parents[1]
D64 = torch.float64


def _devices():
    """The devices a comparison runs on: the CPU (its logic, in CI) and CUDA (marked ``gpu``)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.gpu, id="cuda")]


@pytest.fixture(autouse=True)
def _exact_float32():
    """No TF32 on the GPU during these tests (see the module's description); restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _on(t, device: str) -> bool:
    """Whether ``t`` (a tensor, or a device) is on ``device``'s kind of device."""
    return getattr(t, "device", t).type == torch.device(device).type


def _assert_as_close_as_cpu(out: torch.Tensor, cpu: torch.Tensor, exact: torch.Tensor, *, factor: float = 100.0,
                            floor: float = 1e-6) -> None:
    """``out`` (float32, on a device) is as close to ``exact`` (float64, CPU) as ``cpu`` (float32, CPU) is,
    within ``factor``, plus ``floor`` times the scale of ``exact`` (module description)."""
    exact = exact.detach().double().cpu()
    err_out = float((out.detach().double().cpu() - exact).abs().max())
    err_cpu = float((cpu.detach().double().cpu() - exact).abs().max())
    bound = factor * err_cpu + floor * float(exact.abs().max())
    assert err_out <= bound, f"device error {err_out:.3g} > {bound:.3g} (CPU float32 error {err_cpu:.3g})"


# -- priors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", available_priors())
def test_shipped_prior_denoises_on_the_device_as_on_the_cpu(name, device):
    cpu = load_prior(name)
    h, w = catalog()[name]["resolution"]
    x = 0.5 + 0.3 * torch.randn((2, cpu.channels, h, w), generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.05, 2.0])  # one noise level per image: both ends of the range
    with torch.no_grad():
        ref = cpu.denoise(x, sigma)
        exact = copy.deepcopy(cpu).double().denoise(x.double(), sigma.double())
        moved = load_prior(name, device=device)
        out = moved.denoise(x.to(device), sigma.to(device))
    assert _on(out, device) and out.dtype == torch.float32 and _on(next(moved.parameters()), device)
    _assert_as_close_as_cpu(out, ref, exact)


@pytest.mark.parametrize("device", _devices())
def test_gaussian_prior_on_the_device(smooth_prior, inpainting_problem, device):
    """The exact prior's denoiser, sampler and posterior run where the prior is (float64: 1e-8)."""
    moved = copy.deepcopy(smooth_prior).to(device)
    x = smooth_prior.sample(2, generator=torch.Generator().manual_seed(5))
    out = moved.denoise(x.to(device), 0.1)
    assert _on(out, device)
    torch.testing.assert_close(out.cpu(), smooth_prior.denoise(x, 0.1), rtol=0, atol=1e-8)
    draws = moved.sample(3, generator=torch.Generator().manual_seed(5))  # CPU generator, device draws
    assert _on(draws, device) and draws.shape == (3, 1, 8, 8) and torch.isfinite(draws).all()
    pb, post = inpainting_problem(0.5)
    post_dev = moved.posterior(copy.deepcopy(pb.physics).to(device), pb.y.to(device), pb.sigma_y)
    assert _on(post_dev.mean, device)
    torch.testing.assert_close(post_dev.mean.cpu(), post.mean, rtol=0, atol=1e-8)


# -- operators -----------------------------------------------------------------------------------

#: every registered operator (32 px, 2 images), and a volume MRI operator with one mask per slice
_OPERATORS = {**{name: (lambda f=f: f((1, 32, 32)), 2) for name, f in OPERATORS.items()},
              "volume_mri": (lambda: volume_mri(3, 32, generator=torch.Generator().manual_seed(3)), 3)}


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", sorted(_OPERATORS))
def test_operator_on_the_device_as_on_the_cpu(name, device):
    """``A`` and ``Aᵀ`` of each operator family (CT parallel and fan, MRI single- and multi-coil,
    blur, inpainting, super-resolution, …) moved to the device."""
    make, batch = _OPERATORS[name]
    op = make()
    exact_op, moved = copy.deepcopy(op).double(), copy.deepcopy(op).to(device)
    x = torch.rand((batch, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = op.A(x)
        r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        pairs = [(moved.A(x.to(device)), y, exact_op.A(x.double())),
                 (moved.A_adjoint(r.to(device)), op.A_adjoint(r), exact_op.A_adjoint(r.double()))]
    for out, ref, exact in pairs:
        assert _on(out, device) and out.dtype == torch.float32 and out.shape == ref.shape
        _assert_as_close_as_cpu(out, ref, exact)
    assert _on(module_device(moved), device) and module_device(op).type == "cpu"  # a moved copy; op stays


def test_every_tensor_of_operators_and_priors_moves_with_them():
    """A tensor kept as a plain attribute (not a buffer or parameter) stays behind on ``.to(device)``:
    every operator of the registry and every prior keeps its tensors registered."""
    from invdiff.priors import GaussianMixturePrior, GaussianPrior, SliceStackPrior

    def strays(module):
        return [f"{type(m).__name__}.{k}" for m in module.modules() for k, v in vars(m).items()
                if isinstance(v, torch.Tensor)]

    modules = {name: make() for name, (make, _) in _OPERATORS.items()}
    modules.update({name: load_prior(name) for name in available_priors()})
    modules["gaussian"] = GaussianPrior(torch.full((1, 4, 4), 0.5), 0.04)
    modules["mixture"] = GaussianMixturePrior(torch.ones(2), torch.rand(2, 1, 4, 4), 0.01)
    modules["slices"] = SliceStackPrior(load_prior("phantom64"))
    for name, module in modules.items():
        assert strays(module) == [], name
        assert list(module.buffers()) or list(module.parameters()), name  # it has tensors to move
    op = _OPERATORS["random_inpainting"][0]()
    op.stray = torch.ones(3)
    assert strays(op) == ["_Inpainting.stray"]  # the check sees one


# -- solvers -------------------------------------------------------------------------------------

#: cheaper settings where a solver's defaults are heavy (SMC: 64 particles; DAPS: 100 Langevin steps)
_SOLVER_OPTIONS = {"smc": {"particles": 8}, "daps": {"langevin_steps": 10}}
_SOLVER_CASES = [(name, op) for name in sorted(SOLVERS) for op in ("inpainting", "ct")
                 if not (SOLVERS[name].needs_svd and op == "ct")]  # CT has no SVD


def _gaussian_problem(prior, operator: str, dtype=D64) -> Problem:
    """An 8×8 problem of the smooth Gaussian prior: random inpainting (an SVD) or 6-view CT (CG, autograd adjoint)."""
    g = torch.Generator().manual_seed(0)
    x = prior.sample(1, generator=g).clamp(0, 1)
    op = random_inpainting((1, 8, 8), 0.5, generator=g) if operator == "inpainting" else ct_sparse_view(8, 6)
    return Problem.simulate(x.to(dtype), op.to(dtype), 0.02, generator=g)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name, operator", _SOLVER_CASES)
def test_every_solver_solves_on_the_device_as_on_the_cpu(name, operator, device, smooth_prior):
    solver = SOLVERS[name](**_SOLVER_OPTIONS.get(name, {}))
    samples = 1 if solver.couples_batch else 2
    pb = _gaussian_problem(smooth_prior, operator)

    def run(problem, prior):
        return solve(problem, prior, solver, steps=5, num_samples=samples,
                     generator=torch.Generator().manual_seed(3), progress=False, record=("residual", "loss", "ess"))

    ref = run(pb, smooth_prior)
    out = run(pb.to(device), copy.deepcopy(smooth_prior).to(device))
    assert _on(out.x_hat, device) and out.x_hat.dtype == D64
    assert all(_on(v, device) for v in out.trace.values()) and set(out.trace) == set(ref.trace)
    back = out.to("cpu")
    assert _on(out.x_hat, device) and _on(back.x_hat, "cpu")  # to() makes a copy
    assert torch.isfinite(back.x_hat).all() and (out.nfe, out.vjp) == (ref.nfe, ref.vjp)
    torch.testing.assert_close(back.x_hat, ref.x_hat, rtol=0, atol=1e-8)
    if ref.samples is not None:
        torch.testing.assert_close(back.samples, ref.samples, rtol=0, atol=1e-8)
    assert _on(pb.y, "cpu") and module_device(pb.physics).type == "cpu"  # the problem was copied, not moved


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", ["diffpir", "dps"])
def test_network_solve_on_the_device_as_on_the_cpu(name, device):
    """A shipped prior inside a solve (DPS back-propagates through it) on a named 64-px problem,
    3 steps. The reference runs the network in float64 on the same float32 problem and draws."""
    spec = get_problem("mri-4x")
    pb = spec.make("test", 1, seed=0)
    prior, solver = spec.build_prior(), spec.solver(name)

    def run(problem, net):
        return solve(problem, net, solver, steps=3, generator=torch.Generator().manual_seed(0), progress=False)

    ref, exact = run(pb, prior), run(pb, copy.deepcopy(prior).double())
    out = run(pb.to(device), spec.build_prior().to(device))
    assert _on(out.x_hat, device) and out.x_hat.dtype == torch.float32 and out.network_seconds > 0
    _assert_as_close_as_cpu(out.x_hat, ref.x_hat, exact.x_hat, floor=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_results_keep_the_dtype_of_the_problem(dtype, smooth_prior):
    """Device and dtype follow ``y``: a float32 problem gives float32 results, a float64 one float64,
    for every solver (the CPU stand-in for tensors made without the device or dtype of their inputs)."""
    for name, operator in _SOLVER_CASES:
        solver = SOLVERS[name](**_SOLVER_OPTIONS.get(name, {}))
        pb = _gaussian_problem(smooth_prior, operator, dtype)
        res = solve(pb, smooth_prior, solver, steps=3, num_samples=1 if solver.couples_batch else 2,
                    generator=torch.Generator().manual_seed(0), progress=False, record=("residual", "loss", "ess"))
        assert res.x_hat.dtype == dtype and torch.isfinite(res.x_hat).all(), (name, operator)
        assert res.samples is None or res.samples.dtype == dtype, (name, operator)
        assert res.std is None or res.std.dtype == dtype, (name, operator)
        assert res.trace["residual"].dtype == dtype, (name, operator)


# -- the pieces: devices, draws, moves -----------------------------------------------------------

def test_draws_come_from_the_generator_on_its_device():
    """The seeded draws are torch's own draws from the generator, moved (identical on the CPU)."""
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(randn((3, 4), generator=g(), dtype=D64, device="cpu"),
                       torch.randn((3, 4), generator=g(), dtype=D64))
    assert torch.equal(rand((5,), generator=g(), device="cpu"), torch.rand((5,), generator=g()))
    w = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.25, 0.25]])
    assert torch.equal(multinomial(w, 4, replacement=True, generator=g()),
                       torch.multinomial(w, 4, replacement=True, generator=g()))
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.device_count() <= 7:
        with pytest.raises(ValueError, match="'cuda:7'.*available here: cpu"):
            resolve_device("cuda:7")


@pytest.mark.parametrize("device", _devices())
def test_problem_to_moves_every_tensor_field(device):
    """``Problem.to`` gives a problem of the same class with every tensor field on the device (here a
    low-dose CT problem, whose per-entry noise std is one) and a moved copy of the operator; the
    original stays on the CPU, and a problem already on the device is returned as it is."""
    from invdiff.measurements import simulate_ct_poisson

    x = get_problem("ct-sparse-8").images("test", 2)
    pb = simulate_ct_poisson(x, ct_sparse_view(64, 8), 1e4, generator=torch.Generator().manual_seed(0))
    moved = pb.to(device)
    assert type(moved) is type(pb) and moved.scale == pb.scale and moved.sigma_y == pb.sigma_y
    for name in ("y", "x_true", "noise_std"):
        assert _on(getattr(moved, name), device) and torch.equal(getattr(moved, name).cpu(), getattr(pb, name)), name
    assert _on(module_device(moved.physics), device)
    assert _on(pb.y, "cpu") and module_device(pb.physics).type == "cpu"
    assert (moved is pb) == (device == "cpu") and moved.to(device) is moved
    with pytest.raises(ValueError, match="device 'nonsense' is not a torch device name"):
        pb.to("nonsense")


def test_solve_refuses_a_prior_or_operator_on_another_device(smooth_prior, inpainting_problem):
    """A prior or an operator left on another device than the measurement is named before any work
    (on the CPU, the ``meta`` device stands in for a GPU)."""
    pb, _ = inpainting_problem(0.5)
    solver = SOLVERS["diffpir"]()
    with pytest.raises(ValueError, match="the prior is on meta but the measurement problem.y is on cpu"):
        solve(pb, copy.deepcopy(smooth_prior).to("meta"), solver, steps=2, progress=False)
    elsewhere = Problem(copy.deepcopy(pb.physics).to("meta"), pb.y, pb.sigma_y)
    with pytest.raises(ValueError, match=r"the operator \(problem.physics\) is on meta"):
        solve(elsewhere, smooth_prior, solver, steps=2, progress=False)


@pytest.mark.gpu
def test_cli_solve_with_device_cuda(tmp_path):
    """``invdiff solve --device cuda`` on a tiny run gives the CPU's reconstruction (float32 rounding:
    a 3-step run on this problem moves by ~1e-7 when the network's rounding changes; 1e-4 allowed).
    The CPU side of the option is tested in tests/test_cli.py."""
    from invdiff.cli import main

    args = ["solve", "--problem", "mri-4x", "--steps", "2", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "cpu")]) == 0
    assert main(args + ["--device", "cuda", "--out", str(tmp_path / "cuda")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "cuda" / "reconstruction.npy"),
                               np.load(tmp_path / "cpu" / "reconstruction.npy"), rtol=0, atol=1e-4)


# -- the GPU script ------------------------------------------------------------------------------

def _gpu_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_script_dry_run(tmp_path):
    """``benchmarks/gpu.py --dry-run`` runs every part on the CPU and writes both files, with finite
    numbers where a cell ran and a reason where it did not; on a machine without CUDA its
    ``pytest -m gpu`` run skips every gpu test with the conftest's reason."""
    from conftest import GPU_SKIP_REASON

    t0 = time.perf_counter()
    data = _gpu_script().main(["--dry-run", "--out", str(tmp_path)])
    seconds = time.perf_counter() - t0
    md, saved = (tmp_path / "gpu.md").read_text(), json.loads((tmp_path / "gpu.json").read_text())
    assert saved["command"] == data["command"] and saved["dry_run"] is True and saved["device"] == "cpu (dry run)"
    for section in ("## gpu tests", "## Network cost per call", "## Overhead ratios", "## invdiff vs deepinv"):
        assert section in md, section
    assert "cpu (dry run)" in md and "python benchmarks/gpu.py --dry-run" in md and torch.__version__ in md

    tests = saved["tests"]
    assert "error" not in tests and tests["failed"] == tests["errors"] == 0, tests
    if not torch.cuda.is_available():
        assert tests["passed"] == 0 and tests["skipped"] > 0 and tests["skip_reasons"] == [GPU_SKIP_REASON]

    assert {(r["prior"], r["size"]) for r in saved["network"]} == {(p, s) for p in available_priors() for s in (32, 64)}
    assert all(math.isfinite(r["median_ms"]) and 0 < r["min_ms"] <= r["median_ms"] for r in saved["network"])

    ran = [r for r in saved["overhead"] if "psnr" in r]
    assert {r["method"] for r in ran} == {"diffpir", "dps", "reddiff", "daps", "ddrm"}
    assert [r["method"] for r in saved["overhead"] if "not_applicable" in r] == ["ddrm"] * 3  # CT, MRI: no SVD
    for r in ran:  # the network's time is part of the solve's: overhead >= 1
        assert math.isfinite(r["psnr_mean"]) and r["device"] == "cpu" and r["overhead"] >= 1, r
    pairs = {(r["problem"], r["invdiff"]["method"]): r for r in saved["versus"]}
    assert set(pairs) == {(p, m) for p in ("deblur-gauss", "ct-sparse-32") for m in ("dps", "ddrm", "diffpir")}
    assert pairs[("ct-sparse-32", "ddrm")]["invdiff"]["not_applicable"] == "needs an SVD"
    for key, r in pairs.items():
        if key != ("ct-sparse-32", "ddrm"):
            assert r["time_ratio"] > 0 and math.isfinite(r["time_ratio"] + r["psnr_difference"]), key
            assert f"| {r['invdiff']['method']} vs {r['deepinv']['method']} |" in md
    if not torch.cuda.is_available():  # with CUDA, its pytest run runs the gpu tests for real
        assert seconds < 60, f"the dry run took {seconds:.0f} s"
