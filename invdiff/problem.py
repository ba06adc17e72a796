"""The :class:`Problem`: an operator, a measurement, its noise level and (optionally) the truth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import deepinv
import torch

__all__ = ["Problem", "NoMeasurement", "check_finite", "check_sigma_y"]


class NoMeasurement(deepinv.physics.LinearPhysics):
    """The empty operator ``A x = ()`` (``m = 0``): a problem with no measurement.

    Solving it samples the prior, through the same loop and solvers as posterior sampling.
    """

    def __init__(self, img_shape):
        super().__init__()
        self.img_shape = tuple(img_shape)
        self.meas_shape = (0,)

    def A(self, x, **kwargs):
        return x.new_zeros((x.shape[0], 0))

    def A_adjoint(self, y, **kwargs):
        return y.new_zeros((y.shape[0],) + self.img_shape)

    def A_dagger(self, y, **kwargs):
        return self.A_adjoint(y)


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``t`` or raise ``ValueError`` if it is not a tensor or holds NaN/Inf."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not torch.isfinite(t).all():
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {n_bad} non-finite (NaN or Inf) value(s)")
    return t


def check_sigma_y(sigma_y) -> float:
    """Return ``sigma_y`` as a float or raise ``ValueError`` unless it is finite and >= 0."""
    try:
        s = float(sigma_y)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_y must be a finite number >= 0, got {sigma_y!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"sigma_y must be a finite number >= 0 (measurement noise std in [0, 1] units), got {sigma_y!r}")
    return s


@dataclass(frozen=True)
class Problem:
    """An inverse problem ``y = A(x) + sigma_y · ε``, ``ε ~ N(0, I)``.

    Attributes
    ----------
    physics : deepinv.physics.Physics
        The forward operator; solvers use ``physics.A`` and ``physics.A_adjoint``.
    y : torch.Tensor
        The measurement, batched like the images ``(B, ...)``; each batch element is an
        independent problem.
    sigma_y : float
        Standard deviation of the Gaussian measurement noise, in the [0, 1] intensity units of
        the images (for CT: of the scaled sinogram, see :mod:`invdiff.operators.ct`).
    x_true : torch.Tensor or None
        The ground truth when known (simulated problems), ``(B, C, H, W)``.
    """

    physics: deepinv.physics.Physics
    y: torch.Tensor
    sigma_y: float
    x_true: torch.Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.physics, deepinv.physics.Physics):
            raise ValueError(f"physics must be a deepinv.physics.Physics, got {type(self.physics).__name__}")
        check_finite(self.y, "y (measurement)")
        object.__setattr__(self, "sigma_y", check_sigma_y(self.sigma_y))
        if self.x_true is not None:
            check_finite(self.x_true, "x_true")
            if self.x_true.shape[0] != self.y.shape[0]:
                raise ValueError(f"x_true has batch {self.x_true.shape[0]} but y has batch {self.y.shape[0]}")
        check_y = getattr(self.physics, "_check_y", None)
        if check_y is not None:
            check_y(self.y)

    @classmethod
    def simulate(cls, x: torch.Tensor, physics, sigma_y: float, *,
                 generator: torch.Generator | None = None) -> "Problem":
        """Measure ``x`` through ``physics`` and add Gaussian noise of std ``sigma_y``.

        ``x`` is ``(B, C, H, W)`` (or a volume ``(D, C, H, W)``) in [0, 1]. The noise is drawn
        from ``generator``; ``x`` is not modified.
        """
        check_finite(x, "x")
        s = check_sigma_y(sigma_y)
        with torch.no_grad():
            y_clean = physics.A(x)
        noise = torch.randn(y_clean.shape, generator=generator, dtype=y_clean.dtype,
                            device="cpu" if generator is None else generator.device).to(y_clean.device)
        return cls(physics=physics, y=y_clean + s * noise, sigma_y=s, x_true=x.clone())

    @classmethod
    def unconditional(cls, img_shape, batch: int = 1, *, dtype=torch.float32) -> "Problem":
        """A problem with no measurement (:class:`NoMeasurement`): solving it samples the prior."""
        return cls(physics=NoMeasurement(img_shape), y=torch.zeros((batch, 0), dtype=dtype), sigma_y=0.0)

    @property
    def img_shape(self) -> tuple:
        """``(C, H, W)`` of the unknown, from the operator (or ``x_true``)."""
        shape = getattr(self.physics, "img_shape", None)
        if shape is not None:
            return tuple(shape)
        if self.x_true is not None:
            return tuple(self.x_true.shape[1:])
        raise ValueError("the image shape is unknown: give the operator an img_shape or the problem an x_true")
