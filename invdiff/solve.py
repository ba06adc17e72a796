"""The single solve loop: schedule → init → step … step → finalize.

It owns everything around the algorithm — the noise schedule, the progress bar, counting of
network calls (NFE) and of vector–Jacobian products (VJP), timing, peak memory, per-step
records and the callback — so that each solver file holds only its paper's update.
"""

from __future__ import annotations

import resource
import sys
import time

import torch
from tqdm.auto import tqdm

from .problem import Problem
from .result import Result
from .solvers.base import CountingPrior

__all__ = ["solve", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """The iterate became NaN or Inf during a solve."""


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


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def solve(problem: Problem, prior, solver, *, steps: int = 100, sigmas=None, num_samples: int = 1,
          generator: torch.Generator | None = None, progress: bool = True, record=("residual",),
          callback=None) -> Result:
    """Run ``solver`` on ``problem`` with ``prior``.

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
        The only source of randomness.
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
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if num_samples > 1 and getattr(solver, "couples_batch", False):
        raise ValueError(f"{type(solver).__name__} couples the batch (the slices of one volume); run it with "
                         f"num_samples=1 and repeat the solve with other generators for more samples")
    img_shape = _check_shapes(problem, prior)
    sig = _as_sigmas(solver.default_sigmas(prior, steps) if sigmas is None else sigmas)
    y = problem.y
    B = y.shape[0]
    batch_problem = problem if num_samples == 1 else Problem(
        problem.physics, y.repeat((num_samples,) + (1,) * (y.ndim - 1)), problem.sigma_y,
        None if problem.x_true is None else problem.x_true.repeat(num_samples, 1, 1, 1))
    counted = CountingPrior(prior)
    noise = torch.randn((num_samples * B,) + img_shape, generator=generator, dtype=y.dtype,
                        device="cpu" if generator is None else generator.device).to(y.device)
    x_T = 0.5 + sig[0] * noise  # VE start: p_σmax ≈ N(mean, σ_max² I), mean taken as mid-grey
    rss0 = _peak_rss_mb()
    if y.is_cuda:
        torch.cuda.reset_peak_memory_stats(y.device)
    trace: dict[str, list] = {k: [] for k in record}
    t0 = time.perf_counter()
    state = solver.init(batch_problem, counted, x_T, generator)
    bar = tqdm(total=len(sig) - 1, disable=not progress, desc=type(solver).__name__)
    for i, (s, s_next) in enumerate(zip(sig[:-1], sig[1:])):
        state, info = solver.step(state, s, s_next, batch_problem, counted, generator)
        if not torch.isfinite(state.x).all():
            raise NonFiniteError(f"{type(solver).__name__}: non-finite values at step {i} (sigma = {s:.4g}); "
                                 f"try a smaller step size or more steps")
        if "residual" in trace and state.x0 is not None and y.shape[-1] != 0:
            with torch.no_grad():
                x0 = state.x0.detach()
                reps = x0.shape[0] // batch_problem.y.shape[0]  # SMC: K particles per problem
                y_rep = batch_problem.y.repeat((reps,) + (1,) * (y.ndim - 1))
                r = (batch_problem.physics.A(x0) - y_rep).flatten(1)
            trace["residual"].append(r.norm(dim=1) / r.shape[1] ** 0.5)
        for k, v in info.items():
            if k in trace:
                trace[k].append(torch.as_tensor(v).detach().cpu())
        if callback is not None:
            callback(i, s, state)
        bar.update(1)
    bar.close()
    out = solver.finalize(state).detach()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(y.device) / 2**20 if y.is_cuda else _peak_rss_mb() - rss0
    if out.ndim == len(img_shape) + 1:  # (S·B, C, H, W) → (S, B, C, H, W); SMC returns K·S draws
        out = out.reshape((-1, B) + img_shape)
    samples = out if solver.samples else None
    point = getattr(solver, "point_estimate", None)  # e.g. SMC's weighted particle mean
    x_hat = point(state).detach().reshape((-1, B) + img_shape).mean(0) if point else out.mean(0)
    std = out.std(0) if (solver.samples and out.shape[0] > 1) else None
    result = Result(x_hat=x_hat, samples=samples, std=std,
                    trace={k: torch.stack([torch.as_tensor(v) for v in vs]) for k, vs in trace.items() if vs},
                    nfe=counted.nfe, vjp=counted.vjp, seconds=seconds, peak_memory_mb=max(peak, 0.0))
    result.network_seconds = counted.network_seconds
    return result
