"""The solver contract: ``init → step … step → finalize``, driven by :func:`invdiff.solve`.

A concrete solver is a frozen dataclass of hyperparameters (no mutable state); everything that
changes during a solve lives in its :class:`State`.

* ``init(problem, prior, x_T, sigma, generator)`` receives the starting iterate ``x_T``
  (``num_samples · B`` draws of ``0.5 + σ_0 ε``) and the starting noise level ``σ_0`` and
  builds the *whole* state (a particle system, an optimiser's moments, spectral data, …).
* ``step(state, sigma, sigma_next, problem, prior, generator)`` returns a new state and a
  :data:`StepInfo` dict of scalars or per-image tensors to record (``loss``, ``ess``, …).
* ``finalize(state, batch)`` returns a :class:`Final`: draws shaped ``(S, B, C, H, W)`` and
  the point estimate ``(B, C, H, W)`` that the solver declares (the mean of its draws unless
  it says otherwise, e.g. SMC's weighted particle mean).

Capabilities are class attributes, read by :func:`invdiff.solve`, the method registry and the
listings — never guessed from names:

==================  ==============================================================
attribute           meaning
==================  ==============================================================
``samples``         draws posterior samples (``False``: a point estimate, RED-Diff)
``posterior``       uses the measurement (``False``: unconditional samplers)
``needs_svd``       needs an operator with an SVD (:func:`invdiff.operators.has_svd`)
``uses_vjp``        back-propagates through the network (DPS, ΠGDM, SMC's twist)
``couples_batch``   couples the batch elements (the slices of one volume, MBIR)
``schedule``        its default noise levels (:data:`invdiff.schedules.RANGE_SCHEDULES`)
``grid``            hyperparameter grid tuned per named problem on its validation split
``benchmark_default``  run by ``invdiff bench`` when no method is named (cheap enough)
``step_params``     hyperparameters that set step sizes or weights (named when a run diverges)
``presets``         the paper's official configs, keyed by operator name
==================  ==============================================================
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, is_dataclass
from typing import NamedTuple

import torch

from .kernel import ancestral_sigmas, ancestral_step, noise_like

__all__ = ["Solver", "State", "StepInfo", "Final", "noise_like", "ancestral_sigmas", "ancestral_step",
           "check_hyperparameters"]

StepInfo = dict


@dataclass
class State:
    """Iterate ``x`` (batch ``num_samples · B``) and the latest denoised estimate ``x0``."""

    x: torch.Tensor
    x0: torch.Tensor | None = None


class Final(NamedTuple):
    """What :meth:`Solver.finalize` returns: ``samples`` ``(S, B, C, H, W)`` and ``point`` ``(B, C, H, W)``."""

    samples: torch.Tensor
    point: torch.Tensor


def check_hyperparameters(solver) -> None:
    """Check every field of a solver against its annotation, where it enters.

    ``float`` fields must be finite real numbers (``inf`` and NaN are refused: ``DiffPIR(lam=inf)``
    would silently ignore the data), ``int`` fields integers (not ``2.5``, not ``True``),
    ``bool`` fields booleans, ``str`` fields strings; ``… | None`` also accepts ``None``. Raises
    ``TypeError``/``ValueError`` naming the solver and the field.
    """
    name = type(solver).__name__
    for f in fields(solver):
        kinds = [k.strip() for k in str(f.type).split("|")]
        value = getattr(solver, f.name)
        if value is None and "None" in kinds:
            continue
        if "bool" in kinds:
            if not isinstance(value, bool):
                raise TypeError(f"{name}: {f.name} must be True or False, got {value!r}")
        elif "int" in kinds:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}: {f.name} must be an integer, got {value!r}")
        elif "float" in kinds:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name}: {f.name} must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name}: {f.name} must be finite, got {value!r}")
        elif "str" in kinds and not isinstance(value, str):
            raise TypeError(f"{name}: {f.name} must be a string, got {value!r}")


class Solver:
    """Base class; subclasses are frozen dataclasses implementing :meth:`step` (and :meth:`init`
    when the state holds more than the iterate).

    Every subclass's hyperparameters are checked against their annotations
    (:func:`check_hyperparameters`) before its own ``__post_init__`` checks their ranges.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")

        @functools.wraps(own or (lambda self: None))
        def __post_init__(self):
            check_hyperparameters(self)
            if own is not None:
                own(self)

        cls.__post_init__ = __post_init__

    samples: bool = True
    posterior: bool = True
    needs_svd: bool = False
    uses_vjp: bool = False
    couples_batch: bool = False
    schedule: str = "karras"
    benchmark_default: bool = True
    step_params: tuple = ()
    grid: dict = {}
    presets: dict = {}

    @classmethod
    def preset(cls, operator: str, **overrides):
        """The solver configured as its paper's official config for ``operator``."""
        if operator not in cls.presets:
            raise ValueError(f"no {cls.__name__} preset for {operator!r}; presets exist for "
                             f"{', '.join(cls.presets) or 'no operator'}")
        return cls(**{**cls.presets[operator], **overrides})

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring (what ``invdiff solvers`` lists)."""
        return (cls.__doc__ or cls.__name__).strip().splitlines()[0]

    def params(self) -> dict:
        """The hyperparameters of this configuration, by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)} if is_dataclass(self) else {}

    def default_sigmas(self, prior, steps: int) -> torch.Tensor:
        """Noise levels (``steps + 1`` values ending in 0) when ``solve`` is given none: the
        ``schedule`` named by the class over the prior's noise range."""
        from ..schedules import RANGE_SCHEDULES

        return RANGE_SCHEDULES[self.schedule](steps, prior.sigma_min, prior.sigma_max)

    def cost(self, steps: int) -> tuple[int, int]:
        """``(NFE, VJP)`` of a run of ``steps`` noise levels, as the solver's paper implies."""
        return steps, (steps if self.uses_vjp else 0)

    def init(self, problem, prior, x_T: torch.Tensor, sigma: float, generator) -> State:
        """The state at the starting noise level ``sigma`` (default: the iterate ``x_T``)."""
        return State(x=x_T)

    def step(self, state: State, sigma: float, sigma_next: float, problem, prior, generator):
        raise NotImplementedError

    def finalize(self, state: State, batch: int) -> Final:
        """Draws ``(S, B, C, H, W)`` from the final iterate, and their mean as the point estimate."""
        draws = state.x.reshape((-1, batch) + tuple(state.x.shape[1:]))
        return Final(draws, draws.mean(0))
