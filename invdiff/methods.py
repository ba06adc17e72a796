"""Methods: every runnable reconstruction as one object — the benchmark's, the tuner's and the CLI's registry.

A *method* is what fills one row of a benchmark table: an invdiff solver (``"diffpir"``, or
``"diffpir:4"``, the posterior mean of 4 samples), one of deepinv's samplers on the same prior
(``"deepinv-dps"``), or a classical baseline (``"pinv"``, ``"tv"``). Each has the same declared
signature:

=======================================  ==========================================================
``applicable(physics)``                  ``True``, or the reason it cannot run on that operator
``run(problem, prior, *, steps,``        a :class:`~invdiff.Result` (``x_hat`` unclipped; NFE, VJP,
``generator, params=None)``              seconds, network seconds, peak memory, the hyperparameters)
``grid``                                 its tunable hyperparameters and their values
``grid_points(problem)``                 the grid as parameter dicts (``tv`` scales by ``sigma_y²``)
``preset_key``                           the key of its tuned values in a problem's presets
``family``                               ``"invdiff"``, ``"deepinv"`` or ``"classical"``: the report's
                                         grouping, never a branch
``uses_prior``, ``default``              whether it needs the problem's prior; whether ``invdiff
                                         bench`` runs it when no method is named
=======================================  ==========================================================

:data:`METHODS` is a live view: every *posterior* solver registered in
:data:`invdiff.solvers.SOLVERS` (one registry line) is a method, with its solver's declared
capabilities (``needs_svd``, ``couples_batch``, ``grid``), so a new solver reaches the
benchmark, the tuner and the listings with no other edit. :func:`get_method` also parses
``"SOLVER:K"``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .devices import synchronize
from .operators.spectral import has_svd
from .result import Result
from .solve import CountingPrior, peak_rss_mb, solve

__all__ = ["Method", "SolverMethod", "DeepinvMethod", "ClassicalMethod", "METHODS", "get_method",
           "default_methods"]


@dataclass(frozen=True)
class Method:
    """Base class of every method; subclasses implement :meth:`_run`."""

    name: str
    description: str
    family: str = "classical"
    grid: dict = field(default_factory=dict)
    uses_prior: bool = True
    needs_svd: bool = False
    default: bool = True

    @property
    def preset_key(self) -> str:
        """Key of this method's tuned hyperparameters in ``ProblemSpec.presets``."""
        return self.name

    @property
    def volumes(self) -> bool:
        """Whether the method couples the slices of a volume (it then runs on volume problems only)."""
        return False

    def applicable(self, physics) -> bool | str:
        """``True`` when the method can run on ``physics``, else the reason it cannot."""
        if self.needs_svd and not has_svd(physics):
            return "needs an SVD"
        return True

    def grid_points(self, problem) -> list[dict]:
        """Every point of :attr:`grid` as a parameter dict (the tuner's search space)."""
        import itertools

        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def run(self, problem, prior=None, *, steps: int = 100, generator: torch.Generator | None = None,
            params: dict | None = None) -> Result:
        """Reconstruct ``problem``; ``params`` are the hyperparameters (``{}``: the method's defaults).

        Raises ``ValueError`` when the method is not applicable or returns non-finite values.
        """
        ok = self.applicable(problem.physics)
        if ok is not True:
            raise ValueError(f"{self.name} cannot run on this problem: {ok}")
        if self.uses_prior and prior is None:
            raise ValueError(f"{self.name} needs a prior, got None")
        params = dict(params or {})
        on_gpu = problem.y.is_cuda
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(problem.y.device)
        rss0 = peak_rss_mb()
        res = self._run(problem, prior, steps=steps, generator=generator, params=params)
        if not torch.isfinite(res.x_hat).all():
            raise ValueError(f"{self.name} returned non-finite values")
        # as invdiff.solve reports it: peak accelerator memory on a GPU, growth of the peak RSS on the CPU
        res.peak_memory_mb = (torch.cuda.max_memory_allocated(problem.y.device) / 2**20 if on_gpu
                              else max(peak_rss_mb() - rss0, 0.0))
        res.params = params
        return res

    def _run(self, problem, prior, *, steps, generator, params) -> Result:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class SolverMethod(Method):
    """An invdiff solver through :func:`invdiff.solve`; ``samples = K`` reports the mean of K draws."""

    solver: type | None = None
    samples: int = 1
    family: str = "invdiff"

    @property
    def preset_key(self) -> str:
        return self.name.partition(":")[0]

    @property
    def volumes(self) -> bool:
        return self.solver.couples_batch

    def _run(self, problem, prior, *, steps, generator, params) -> Result:
        return solve(problem, prior, self.solver(**params), steps=steps, num_samples=self.samples,
                     generator=generator, progress=False, record=())


def _seed(generator) -> int:
    return 0 if generator is None else generator.initial_seed()


@dataclass(frozen=True)
class DeepinvMethod(Method):
    """One of deepinv's samplers, given the problem's prior through :func:`invdiff.priors.to_deepinv`
    and counted by the same :class:`~invdiff.solve.CountingPrior` as invdiff's solvers."""

    family: str = "deepinv"
    sampler: str = ""

    def _build(self, denoiser, problem, steps: int, seed: int, params: dict):
        """``run()`` of the sampler on ``problem``'s device: deepinv draws its noise there (DPS from a
        generator on that device, DDRM and DiffPIR from the global one seeded with ``seed``), so
        its draws differ from device to device, unlike invdiff's solvers."""
        import deepinv
        import numpy as np

        device = problem.y.device
        if self.sampler == "DPS":
            sampler = deepinv.sampling.DPS(denoiser, num_steps=steps + 1, dtype=problem.y.dtype, device=device,
                                           rng=torch.Generator(device).manual_seed(seed), **params)
            shape = (problem.y.shape[0],) + tuple(problem.img_shape)
            return lambda: sampler(problem.y, problem.physics, x_init=shape)
        if self.sampler == "DDRM":
            sampler = deepinv.sampling.DDRM(denoiser, sigmas=np.linspace(1, 0, steps), **params)
        else:
            sampler = deepinv.sampling.DiffPIR(denoiser, deepinv.optim.data_fidelity.L2(),
                                               sigma=max(problem.sigma_y, 1e-3), max_iter=steps, device=device,
                                               **params)

        def run():
            torch.manual_seed(seed)  # deepinv's DDRM and DiffPIR draw from the global generator
            with torch.no_grad():
                return sampler(problem.y, problem.physics)

        return run

    def _run(self, problem, prior, *, steps, generator, params) -> Result:
        from .priors import to_deepinv

        counted = CountingPrior(prior)
        run = self._build(to_deepinv(counted), problem, steps, _seed(generator), params)
        synchronize(problem.y)
        t0 = time.perf_counter()
        x = run().detach()
        synchronize(x)
        return Result(x_hat=x, nfe=counted.nfe, vjp=counted.vjp, seconds=time.perf_counter() - t0,
                      network_seconds=counted.network_seconds)


@dataclass(frozen=True)
class ClassicalMethod(Method):
    """A classical reconstruction ``fn(problem, **params)`` (no prior, no network)."""

    fn: object = None
    uses_prior: bool = False
    sigma_y2_grid: bool = False  # grid values are multiples of sigma_y² (regularisation weights)
    requires: object = None  # optional physics -> True | reason (a module-level function: methods are pickled)

    def applicable(self, physics) -> bool | str:
        ok = super().applicable(physics)
        if ok is True and self.requires is not None:
            ok = self.requires(physics)
        return ok

    def grid_points(self, problem) -> list[dict]:
        points = super().grid_points(problem)
        if self.sigma_y2_grid:
            scale = max(problem.sigma_y, 1e-3) ** 2
            points = [{k: v * scale for k, v in p.items()} for p in points]
        return points

    def _run(self, problem, prior, *, steps, generator, params) -> Result:
        synchronize(problem.y)
        t0 = time.perf_counter()
        x = self.fn(problem, **params)
        synchronize(x)
        return Result(x_hat=x, seconds=time.perf_counter() - t0)


def _tv(problem, lam=None, iters: int = 300):
    from .solvers.baselines import tv

    return tv(problem, lam, iters=iters)


def _pinv(problem):
    from .solvers.baselines import pinv

    return pinv(problem)


def _wavelet(problem, lam=None, iters: int = 200):
    from .solvers.wavelet import wavelet_l1

    return wavelet_l1(problem, lam, iters=iters)


def _wavelet_requires(physics) -> bool | str:
    """wavelet_l1's default 3 scales need image sides divisible by 8."""
    shape = getattr(physics, "img_shape", None)
    if shape is not None and (shape[-2] % 8 or shape[-1] % 8):
        return f"needs image sides divisible by 8 (3 wavelet scales), got {tuple(shape[-2:])}"
    return True


def _bm3d(problem, **params):
    from .solvers.bm3d import bm3d_restore

    return bm3d_restore(problem, **params)


def _bm3d_requires(physics) -> bool | str:
    """BM3D denoises grey or RGB images of at least 16×16 pixels."""
    from .solvers.bm3d import bm3d_applicable

    shape = getattr(physics, "img_shape", None)
    return True if shape is None else bm3d_applicable(shape)


_OTHERS = (
    DeepinvMethod("deepinv-dps", "deepinv.sampling.DPS on the same prior", sampler="DPS",
                  grid={"weight": [30.0, 100.0, 300.0, 1000.0, 3000.0]}),
    DeepinvMethod("deepinv-ddrm", "deepinv.sampling.DDRM on the same prior", sampler="DDRM", needs_svd=True),
    DeepinvMethod("deepinv-diffpir", "deepinv.sampling.DiffPIR on the same prior", sampler="DiffPIR",
                  grid={"lambda_": [0.3, 1.0, 3.0, 10.0], "zeta": [0.3, 1.0]}),
    ClassicalMethod("pinv", "A†y (FBP for CT, zero-filled for MRI)", fn=_pinv),
    ClassicalMethod("tv", "total variation (PDHG), weight tuned on the validation split", fn=_tv,
                    grid={"lam": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]}, sigma_y2_grid=True),
    ClassicalMethod("wavelet", "wavelet-ℓ1 (FISTA), weight tuned on the validation split", fn=_wavelet,
                    grid={"lam": [1.0, 3.0, 10.0, 30.0, 100.0, 300.0]}, sigma_y2_grid=True,
                    requires=_wavelet_requires),
    ClassicalMethod("bm3d", "BM3D restoration (plug-and-play HQS), tuned on the validation split", fn=_bm3d,
                    grid={"rho": [0.1, 0.15, 0.25, 0.4, 0.6]}, requires=_bm3d_requires),
)


def _solver_method(name: str, cls, samples: int = 1) -> SolverMethod:
    description = cls.summary() + (f" (mean of {samples} samples)" if samples > 1 else "")
    return SolverMethod(name if samples == 1 else f"{name}:{samples}", description, grid=dict(cls.grid),
                        needs_svd=cls.needs_svd, default=cls.benchmark_default and samples == 1,
                        solver=cls, samples=samples)


class _Registry(Mapping):
    """``name -> Method``: the posterior solvers of ``SOLVERS`` (looked up live), then deepinv's
    samplers and the classical baselines."""

    def _all(self) -> dict:
        from .solvers import SOLVERS

        rows = {n: _solver_method(n, cls) for n, cls in SOLVERS.items() if cls.posterior}
        rows.update({m.name: m for m in _OTHERS})
        return rows

    def __getitem__(self, name):
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())


METHODS: Mapping = _Registry()


def get_method(name) -> Method:
    """The method called ``name`` (or ``name`` itself if it is a :class:`Method`).

    ``"SOLVER:K"`` is the posterior mean of ``K`` samples of an invdiff sampling solver (one
    batch of ``K·n``; NFE unchanged, time ≈ K times). Unknown names raise ``ValueError``.
    """
    if isinstance(name, Method):
        return name
    if not isinstance(name, str):
        raise TypeError(f"method must be a name or a Method, got {type(name).__name__}")
    base, _, k = name.partition(":")
    if base not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)} "
                         f"(SOLVER:K averages K samples of an invdiff solver)")
    m = METHODS[base]
    if not k and ":" not in name:
        return m
    if not isinstance(m, SolverMethod) or not k.isdigit() or int(k) < 1 or not m.solver.samples:
        raise ValueError(f"{name!r}: SOLVER:K needs an invdiff sampling solver and an integer K >= 1")
    return _solver_method(base, m.solver, int(k))


def default_methods() -> list[str]:
    """The methods ``invdiff bench`` runs when none is named (each method's ``default`` flag)."""
    return [n for n, m in METHODS.items() if m.default]
