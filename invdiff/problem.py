"""The :class:`Problem`: an operator, a measurement, its noise level and (optionally) the truth."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import deepinv
import torch

from .devices import module_device, randn, resolve_device

__all__ = ["Problem", "NoMeasurement", "check_finite", "check_intensities", "check_sigma_y", "noise_sigma"]


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


def check_intensities(x: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``x`` or raise ``ValueError`` if it is plainly not in [0, 1] intensity units.

    Real images are in [0, 1]; values a little outside (noise, ringing, Gaussian test priors)
    are fine, but a range reaching beyond [-1, 2] means another scale (8-bit 0–255 data,
    Hounsfield units), which would make ``sigma_y`` and every tuned weight meaningless.
    """
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.0 or hi > 2.0:
        raise ValueError(f"{name} spans [{lo:.4g}, {hi:.4g}], but invdiff images are in [0, 1] intensity units: "
                         f"rescale it first (e.g. divide 8-bit images by 255)")
    return x


def check_sigma_y(sigma_y) -> float:
    """Return ``sigma_y`` as a float or raise ``ValueError`` unless it is finite and >= 0."""
    try:
        s = float(sigma_y)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_y must be a finite number >= 0, got {sigma_y!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"sigma_y must be a finite number >= 0 (measurement noise std in [0, 1] units), got {sigma_y!r}")
    return s


def noise_sigma(physics) -> float:
    """``sigma_y`` of a deepinv ``physics``'s noise model (Gaussian or none); ``ValueError`` otherwise."""
    model = getattr(physics, "noise_model", None)
    if model is None or type(model).__name__ == "ZeroNoise":
        return 0.0
    if isinstance(model, deepinv.physics.GaussianNoise):
        sigma = torch.as_tensor(model.sigma)
        if sigma.numel() != 1:
            raise ValueError(f"physics.noise_model has one sigma per image ({sigma.numel()}); invdiff needs one "
                             f"sigma_y per problem: give sigma_y explicitly")
        return float(sigma)
    raise ValueError(f"physics.noise_model is {type(model).__name__}; invdiff's solvers assume Gaussian noise: "
                     f"give sigma_y explicitly (the Gaussian std that best describes it)")


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
        if self.y.is_complex() or not self.y.is_floating_point():
            raise TypeError(f"y (measurement) must be a real floating tensor (complex k-space as real/imaginary "
                            f"channels, as the operator produces it), got {self.y.dtype}")
        check_y = getattr(self.physics, "_check_y", None)
        if check_y is not None:
            check_y(self.y)
        if self.x_true is not None:
            check_finite(self.x_true, "x_true")
            if self.x_true.shape[0] != self.y.shape[0]:
                raise ValueError(f"x_true has batch {self.x_true.shape[0]} but y has batch {self.y.shape[0]}")
            shape = getattr(self.physics, "img_shape", None)
            if shape is not None and tuple(self.x_true.shape[1:]) != tuple(shape):
                raise ValueError(f"x_true has images of shape {tuple(self.x_true.shape[1:])}, but the operator takes "
                                 f"{tuple(shape)}")

    @classmethod
    def simulate(cls, x: torch.Tensor, physics, sigma_y: float, *,
                 generator: torch.Generator | None = None, unit_range: bool = True) -> "Problem":
        """Measure ``x`` through ``physics`` and add Gaussian noise of std ``sigma_y``.

        ``x`` is ``(B, C, H, W)`` (or a volume ``(D, C, H, W)``) in [0, 1]; a range far outside it
        (e.g. 0–255) is refused (:func:`check_intensities`) unless ``unit_range=False`` (signals
        on another scale, such as samples of an exact test prior). The noise is drawn from
        ``generator``; ``x`` is not modified.
        """
        check_finite(x, "x")
        if unit_range:
            check_intensities(x, "x")
        s = check_sigma_y(sigma_y)
        with torch.no_grad():
            y_clean = physics.A(x)
        noise = randn(y_clean.shape, generator=generator, dtype=y_clean.dtype, device=y_clean.device)
        return cls(physics=physics, y=y_clean + s * noise, sigma_y=s, x_true=x.clone())

    @classmethod
    def from_physics(cls, physics, y: torch.Tensor, *, sigma_y: float | None = None,
                     x_true: torch.Tensor | None = None) -> "Problem":
        """The problem of measurement ``y`` of a deepinv ``physics``, its noise level read from
        ``physics.noise_model``: ``GaussianNoise(sigma)`` gives ``sigma_y = sigma`` (in the units of
        ``y``), no noise model or ``ZeroNoise`` gives 0. Any other noise model needs ``sigma_y``
        given explicitly (the solvers' data terms are Gaussian). ``physics`` is not modified.
        """
        if sigma_y is None:
            sigma_y = noise_sigma(physics)
        return cls(physics=physics, y=y, sigma_y=sigma_y, x_true=x_true)

    @classmethod
    def unconditional(cls, img_shape, batch: int = 1, *, dtype=torch.float32, device=None) -> "Problem":
        """A problem with no measurement (:class:`NoMeasurement`): solving it samples the prior
        (on ``device``, default the CPU: solvers follow the device of ``y``)."""
        return cls(physics=NoMeasurement(img_shape).to(device), y=torch.zeros((batch, 0), dtype=dtype, device=device),
                   sigma_y=0.0)

    def to(self, device) -> "Problem":
        """This problem on ``device``: every tensor field (``y``, ``x_true``, and those of a
        subclass) moved, and a copy of its operator moved as a ``torch.nn.Module``. ``self`` and its
        operator are not modified; a problem already on ``device`` is returned as it is.

        Parameters
        ----------
        device : str or torch.device
            Checked by :func:`invdiff.devices.resolve_device` (a ``ValueError`` naming a device this
            machine does not have, and the devices it has).
        """
        dev = resolve_device(device)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        where = [v.device if isinstance(v, torch.Tensor) else module_device(v) for v in values.values()
                 if isinstance(v, (torch.Tensor, torch.nn.Module))]
        if all(d.type == dev.type and (dev.index is None or d.index == dev.index) for d in where):
            return self
        moved = {k: v.to(dev) if isinstance(v, torch.Tensor) else copy.deepcopy(v).to(dev)
                 for k, v in values.items() if isinstance(v, (torch.Tensor, torch.nn.Module))}
        return dataclasses.replace(self, **moved)

    @property
    def img_shape(self) -> tuple:
        """``(C, H, W)`` of the unknown, from the operator (or ``x_true``)."""
        shape = getattr(self.physics, "img_shape", None)
        if shape is not None:
            return tuple(shape)
        if self.x_true is not None:
            return tuple(self.x_true.shape[1:])
        if self.y.flatten(1).shape[1] > 0:  # a deepinv physics without img_shape: the adjoint's output
            with torch.no_grad():
                return tuple(self.physics.A_adjoint(self.y[:1]).shape[1:])
        raise ValueError("the image shape is unknown: give the operator an img_shape or the problem an x_true")
