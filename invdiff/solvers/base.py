"""The solver protocol: ``init → step … step → finalize``, driven by :func:`invdiff.solve`.

A concrete solver is a frozen dataclass of hyperparameters (no mutable state); everything that
changes during a solve lives in its :class:`State`. ``step`` returns a new state and a
:data:`StepInfo` dict of scalars or per-image tensors to record (``loss``, ``ess``, …).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

__all__ = ["Solver", "State", "StepInfo", "CountingPrior", "require_svd", "has_svd", "real_part", "noise_like"]


def has_svd(physics) -> bool:
    """Whether ``physics`` carries an SVD over the images it takes.

    deepinv ``DecomposablePhysics`` do, except real-input MRI: its singular vectors (Fourier
    modes) live on complex images, and the real-to-complex map has no SVD of that form.
    """
    import deepinv

    return isinstance(physics, deepinv.physics.DecomposablePhysics) and not getattr(physics, "real_input", False)


def require_svd(physics, solver: str, alternatives: str):
    """Return ``physics`` if it has an SVD (:func:`has_svd`), else a clear ``ValueError``."""
    if not has_svd(physics):
        why = ("real-input MRI (its SVD acts on complex images; build it with real_input=False)"
               if getattr(physics, "real_input", False) else type(physics).__name__)
        raise ValueError(f"{solver} needs an operator with an SVD (deepinv DecomposablePhysics), got "
                         f"{why}; use {alternatives} for this operator")
    return physics


def real_part(t: torch.Tensor) -> torch.Tensor:
    """``t.real`` for complex tensors (FFT-diagonalised operators), ``t`` otherwise."""
    return t.real if t.is_complex() else t

def noise_like(x: torch.Tensor, generator: torch.Generator | None = None, shape=None) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (or ``shape``), drawn from ``generator`` on its device."""
    dev = "cpu" if generator is None else generator.device
    return torch.randn(x.shape if shape is None else shape, generator=generator, dtype=x.dtype,
                       device=dev).to(x.device)


StepInfo = dict


@dataclass
class State:
    """Iterate ``x`` (batch ``num_samples · B``) and the latest denoised estimate ``x0``."""

    x: torch.Tensor
    x0: torch.Tensor | None = None


class Solver:
    """Base class; subclasses are frozen dataclasses implementing :meth:`init` and :meth:`step`."""

    #: whether the solver draws samples (``Result.samples``) or returns a point estimate
    samples: bool = True
    #: hyperparameters of the official configs, keyed by invdiff operator name
    presets = {}
    #: True when the update couples the batch elements (the slices of one volume, e.g. MBIR)
    couples_batch: bool = False

    @classmethod
    def preset(cls, operator: str, **overrides):
        """The solver configured as its paper's official config for ``operator``."""
        if operator not in cls.presets:
            raise ValueError(f"no {cls.__name__} preset for {operator!r}; presets exist for "
                             f"{', '.join(cls.presets) or 'no operator'}")
        return cls(**{**cls.presets[operator], **overrides})

    def default_sigmas(self, prior, steps: int) -> torch.Tensor:
        """Noise levels (``steps + 1`` values ending in 0) when ``solve`` is given none."""
        from ..schedules import karras

        return karras(steps, prior.sigma_min, prior.sigma_max)

    def cost(self, steps: int) -> tuple[int, int]:
        """``(NFE, VJP)`` of a run of ``steps`` noise levels, as the solver's paper implies."""
        return steps, 0

    def init(self, problem, prior, x_T: torch.Tensor, generator) -> State:
        return State(x=x_T)

    def step(self, state: State, sigma: float, sigma_next: float, problem, prior, generator):
        raise NotImplementedError

    def finalize(self, state: State) -> torch.Tensor:
        return state.x


class CountingPrior:
    """Proxy counting ``denoise`` calls (NFE), backward passes through them (VJP), and their time.

    A VJP is counted each time a gradient travels back through a ``denoise`` call to its
    input (a tensor hook on the input), so a call back-propagated through several times (SMC's
    Jacobian twist) counts each pass, and a call never back-propagated counts none.
    ``network_seconds`` is the time spent in the network: its forward calls, plus — for each
    VJP — the backward pass through it, timed from the moment the gradient reaches the
    network's output to the moment it reaches its input (tensor hooks), so operator and solver
    arithmetic are not counted.
    """

    def __init__(self, prior):
        self._prior = prior
        self.nfe = 0
        self.vjp = 0
        self.network_seconds = 0.0

    def denoise(self, x, sigma):
        self.nfe += 1
        t = time.perf_counter()
        out = self._prior.denoise(x, sigma)
        self.network_seconds += time.perf_counter() - t
        if torch.is_grad_enabled() and x.requires_grad:
            start = []
            out.register_hook(lambda g: start.append(time.perf_counter()))
            x.register_hook(lambda g: self._backward_done(start))
        return out

    def _backward_done(self, start: list) -> None:
        self.vjp += 1
        if start:
            self.network_seconds += time.perf_counter() - start.pop()

    def score(self, x, sigma):
        from ..priors.prior import as_sigma

        s = as_sigma(sigma, x, owner=type(self._prior).__name__)
        return (self.denoise(x, s) - x) / s**2

    def __getattr__(self, name):
        return getattr(self._prior, name)
