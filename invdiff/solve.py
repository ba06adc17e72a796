"""The single solve loop: schedule → init → step … step → finalize.

It owns everything around the algorithm — the noise schedule, the progress bar, counting of
network calls (NFE) and of vector–Jacobian products (VJP), timing, peak memory, per-step
records and the callback — so that each solver file holds only its paper's update.
"""

from __future__ import annotations

import resource
import sys
import time
import warnings

import torch
from tqdm.auto import tqdm

from .devices import module_device, randn, synchronize
from .operators.spectral import require_svd
from .problem import Problem
from .result import Result

__all__ = ["solve", "NonFiniteError", "CountingPrior", "peak_rss_mb"]


class NonFiniteError(FloatingPointError):
    """The iterate or a result became NaN or Inf during a solve."""


def _check_arguments(problem, prior, solver, generator) -> None:
    """Types of ``solve``'s arguments, and a measurement that is still finite (it may have been
    written into after the problem was built), checked before any work."""
    from .solvers.base import Solver

    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be an invdiff.Problem, got {type(problem).__name__}")
    if prior is None or not callable(getattr(prior, "denoise", None)):
        raise TypeError(f"prior must be an invdiff Prior (with a denoise method), got {type(prior).__name__}")
    if not isinstance(solver, Solver):
        hint = f" (use SOLVERS[{solver!r}]() or a named problem's spec.solver({solver!r}))" if isinstance(solver, str) else ""
        raise TypeError(f"solver must be a configured invdiff Solver, got {type(solver).__name__}{hint}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                        f"(e.g. torch.Generator().manual_seed(123))")
    y = problem.y
    if y.is_complex() or not y.is_floating_point():
        raise TypeError(f"problem.y must be a real floating tensor, got {y.dtype}")
    if not torch.isfinite(y).all():
        n_bad = int((~torch.isfinite(y)).sum())
        raise ValueError(f"problem.y contains {n_bad} non-finite (NaN or Inf) value(s); a measurement with "
                         f"missing entries needs an operator that leaves them out (e.g. a mask)")
    for name, module in (("the prior", prior), ("the operator (problem.physics)", problem.physics)):
        where = module_device(module, default=y.device)  # a module without tensors runs anywhere
        if where.type != y.device.type or where.index != y.device.index:
            raise ValueError(f"{name} is on {where} but the measurement problem.y is on {y.device}: put both on one "
                             f"device (prior.to(device), problem.to(device))")


def _hint(solver) -> str:
    """The hyperparameters most likely responsible for a diverging or implausible result."""
    shown = ", ".join(f"{k} = {getattr(solver, k)!r}" for k in solver.step_params)
    return (f"check {shown} (try a smaller step size or weight) or use more steps" if shown
            else "try a smaller step size or more steps")


def _check_result(solver, name: str, t: torch.Tensor | None) -> None:
    if t is not None and not torch.isfinite(t).all():
        raise NonFiniteError(f"{type(solver).__name__}: the returned {name} holds non-finite values after the "
                             f"last step; {_hint(solver)}")


def _check_shapes(problem: Problem, prior) -> tuple:
    img_shape = problem.img_shape
    probe = torch.zeros((1,) + tuple(img_shape), dtype=problem.y.dtype, device=problem.y.device)
    try:
        prior.check_input(probe)
    except ValueError as err:
        raise ValueError(f"problem and prior do not match: the problem's images are {tuple(img_shape)}, "
                         f"but {err}") from None
    return tuple(img_shape)


def _as_sigmas(sigmas) -> list[float]:
    s = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if s.numel() < 2 or not torch.isfinite(s).all() or (s[:-1] <= 0).any() or s[-1] < 0 or (s[1:] > s[:-1]).any():
        raise ValueError("sigmas must hold at least 2 finite values, positive and non-increasing, "
                         "the last >= 0 (usually 0)")
    return [float(v) for v in s]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def solve(problem: Problem, prior, solver, *, steps: int = 100, sigmas=None, num_samples: int = 1,
          generator: torch.Generator | None = None, progress: bool = True, record=("residual",),
          callback=None) -> Result:
    """Run ``solver`` on ``problem`` with ``prior``.

    The solve runs on the device and in the dtype of ``problem.y``; put the prior there too
    (``prior.to(device)``, ``problem.to(device)``).

    Parameters
    ----------
    problem : Problem
        Operator, measurement ``y`` (batch ``B``: independent problems) and ``sigma_y``.
        :meth:`Problem.unconditional` samples the prior.
    prior : Prior
        Denoiser in invdiff's VE [0, 1] form.
    solver : Solver
        A configured solver (frozen dataclass of hyperparameters).
    steps : int
        Number of noise levels (ignored when ``sigmas`` is given).
    sigmas : tensor, optional
        Descending noise levels ending in 0; default ``solver.default_sigmas(prior, steps)``.
    num_samples : int
        Independent samples per problem, drawn in one batch of ``num_samples · B``.
    generator : torch.Generator, optional
        The only source of randomness. It may live on another device than the problem (a CPU
        generator, the usual case): numbers are drawn on its device and moved, so one seed gives
        the same draws on every device (:mod:`invdiff.devices`).
    progress : bool
        Show a tqdm progress bar.
    record : tuple of str
        Per-step quantities to keep in ``Result.trace``: ``"residual"``
        (``‖y − A x̂0‖ / sqrt(m)`` per iterate) and any key the solver reports (``"loss"``,
        ``"ess"``, …). Each entry is ``(steps, num_samples · B)``, sample-major (column
        ``s · B + b`` is sample ``s`` of problem ``b``).
    callback : callable, optional
        ``callback(i, sigma, state)`` after each step.
    """
    _check_arguments(problem, prior, solver, generator)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if num_samples > 1 and solver.couples_batch:
        raise ValueError(f"{type(solver).__name__} couples the batch (the slices of one volume); run it with "
                         f"num_samples=1 and repeat the solve with other generators for more samples")
    img_shape = _check_shapes(problem, prior)
    if solver.needs_svd:
        require_svd(problem.physics, type(solver).__name__)
    sig = _as_sigmas(solver.default_sigmas(prior, steps) if sigmas is None else sigmas)
    if sig[0] > prior.sigma_max * (1 + 1e-6):
        raise ValueError(f"sigmas start at {sig[0]:.4g}, above the prior's sigma_max = {prior.sigma_max:.4g} "
                         f"(the noise levels it was trained for); start at or below it")
    y = problem.y
    B = y.shape[0]
    batch_problem = problem if num_samples == 1 else Problem(
        problem.physics, y.repeat((num_samples,) + (1,) * (y.ndim - 1)), problem.sigma_y,
        None if problem.x_true is None else problem.x_true.repeat(num_samples, 1, 1, 1))
    counted = CountingPrior(prior)
    noise = randn((num_samples * B,) + img_shape, generator=generator, dtype=y.dtype, device=y.device)
    x_T = sum(prior.data_range) / 2 + sig[0] * noise  # VE start: p_σmax ≈ N(mean, σ_max² I), mean: mid-range
    if y.flatten(1).shape[1] > 0:
        with torch.no_grad():
            if not torch.isfinite(problem.physics.A(x_T[:B])).all():
                raise NonFiniteError(f"the operator {type(problem.physics).__name__.lstrip('_')} returns non-finite "
                                     f"values on the starting iterate")
    rss0 = peak_rss_mb()
    if y.is_cuda:
        torch.cuda.reset_peak_memory_stats(y.device)
    trace: dict[str, list] = {k: [] for k in record}
    synchronize(y)  # on a GPU: the work queued so far is not the solve's
    t0 = time.perf_counter()
    state = solver.init(batch_problem, counted, x_T, sig[0], generator)
    bar = tqdm(total=len(sig) - 1, disable=not progress, desc=type(solver).__name__)
    for i, (s, s_next) in enumerate(zip(sig[:-1], sig[1:])):
        state, info = solver.step(state, s, s_next, batch_problem, counted, generator)
        if not torch.isfinite(state.x).all():
            raise NonFiniteError(f"{type(solver).__name__}: non-finite values at step {i} (sigma = {s:.4g}); "
                                 f"{_hint(solver)}")
        if "residual" in trace and state.x0 is not None and y.shape[-1] != 0:
            with torch.no_grad():
                x0 = state.x0.detach()
                reps = x0.shape[0] // batch_problem.y.shape[0]  # several iterates per problem (particles)
                y_rep = batch_problem.y.repeat((reps,) + (1,) * (y.ndim - 1))
                r = (batch_problem.physics.A(x0) - y_rep).flatten(1)
            trace["residual"].append(r.norm(dim=1) / r.shape[1] ** 0.5)
        for k, v in info.items():
            if k in trace:
                trace[k].append(torch.as_tensor(v).detach())  # on its device: no copy (and wait) per step
        if callback is not None:
            callback(i, s, state)
        bar.update(1)
    bar.close()
    final = solver.finalize(state, B)
    synchronize(y)  # on a GPU: the queued kernels are part of the solve's time
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(y.device) / 2**20 if y.is_cuda else peak_rss_mb() - rss0
    draws = final.samples.detach()
    _check_result(solver, "point estimate x_hat", final.point)
    _check_result(solver, "samples", draws)
    lo, hi = prior.data_range
    far = 10 * (hi - lo)
    if float(final.point.min()) < lo - far or float(final.point.max()) > hi + far:
        warnings.warn(f"{type(solver).__name__}: the result spans [{float(final.point.min()):.3g}, "
                      f"{float(final.point.max()):.3g}], far outside the prior's data range [{lo:g}, {hi:g}]; "
                      f"{_hint(solver)}", RuntimeWarning, stacklevel=2)
    return Result(x_hat=final.point.detach(), samples=draws if solver.samples else None,
                  std=draws.std(0) if (solver.samples and draws.shape[0] > 1) else None,
                  trace={k: torch.stack([torch.as_tensor(v) for v in vs]) for k, vs in trace.items() if vs},
                  nfe=counted.nfe, vjp=counted.vjp, seconds=seconds, peak_memory_mb=max(peak, 0.0),
                  network_seconds=counted.network_seconds, params=solver.params())


class CountingPrior:
    """Proxy counting ``denoise`` calls (NFE), backward passes through them (VJP), and their time.

    A VJP is counted each time a gradient travels back through a ``denoise`` call to its
    input (a tensor hook on the input), so a call back-propagated through several times (SMC's
    Jacobian twist) counts each pass, and a call never back-propagated counts none.
    ``network_seconds`` is the time spent in the network: its forward calls, plus — for each
    VJP — the backward pass through it, timed from the moment the gradient reaches the
    network's output to the moment it reaches its input (tensor hooks), so operator and solver
    arithmetic are not counted. On a GPU each of those intervals starts and ends by waiting for
    the device's queued work (:func:`invdiff.devices.synchronize`): the kernels run
    asynchronously, and the interval would otherwise time their launch only.
    """

    def __init__(self, prior):
        self._prior = prior
        self.nfe = 0
        self.vjp = 0
        self.network_seconds = 0.0

    def denoise(self, x, sigma):
        self.nfe += 1
        synchronize(x)
        t = time.perf_counter()
        out = self._prior.denoise(x, sigma)
        synchronize(out)
        self.network_seconds += time.perf_counter() - t
        if torch.is_grad_enabled() and x.requires_grad:
            start = []
            out.register_hook(lambda g: self._backward_start(g, start))
            x.register_hook(lambda g: self._backward_done(g, start))
        return out

    @staticmethod
    def _backward_start(grad, start: list) -> None:
        synchronize(grad)
        start.append(time.perf_counter())

    def _backward_done(self, grad, start: list) -> None:
        self.vjp += 1
        if start:
            synchronize(grad)
            self.network_seconds += time.perf_counter() - start.pop()

    def score(self, x, sigma):
        from .priors.prior import as_sigma

        s = as_sigma(sigma, x, owner=type(self._prior).__name__)
        return (self.denoise(x, s) - x) / s**2

    def __getattr__(self, name):
        return getattr(self._prior, name)
