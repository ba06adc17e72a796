"""The :class:`Prior` interface: a denoiser in the variance-exploding form.

Every prior in invdiff, exact or learned, answers one question: given a noisy image
``x = x0 + sigma * eps`` with ``eps ~ N(0, I)`` and ``x0`` in [0, 1] intensity units, what is the
minimum mean squared error estimate ``E[x0 | x]``? The score follows from Tweedie's formula,

.. math:: \\nabla_x \\log p_\\sigma(x) = (E[x_0 \\mid x] - x) / \\sigma^2 ,

so solvers only ever call :meth:`Prior.denoise` (one network forward, one NFE).
"""

from __future__ import annotations


import torch

__all__ = ["Prior", "as_sigma"]


def as_sigma(sigma, x: torch.Tensor, *, owner: str = "prior") -> torch.Tensor:
    """Validate ``sigma`` and return it as a tensor of shape ``(B, 1, 1, ...)`` matching ``x``.

    Accepts a Python number, a 0-d tensor, or a tensor with one value per batch element
    (shaped ``(B,)`` or ``(B, 1, ..., 1)``).
    Raises ``TypeError`` for a ``sigma`` that is not real numbers (a string, a bool, ``None``,
    complex) or an ``x`` that is not a real floating tensor, and ``ValueError`` for non-positive
    or non-finite values or a wrong batch length, naming ``owner``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: x must be a real floating-point tensor, got dtype {x.dtype}; convert images "
                        f"to float with values in [0, 1] first (invdiff does not guess a 0-255 scale)")
    dtype = getattr(sigma, "dtype", None)  # tensors and NumPy arrays or scalars
    if (sigma is None or isinstance(sigma, (str, bytes, bool, complex)) or type(sigma).__name__ == "bool_"
            or dtype == torch.bool or getattr(dtype, "kind", None) in ("b", "c", "U", "S", "O")
            or (isinstance(sigma, torch.Tensor) and sigma.is_complex())):
        raise TypeError(f"{owner}: sigma must be a positive real number or a real tensor with one value per "
                        f"batch element, got {type(sigma).__name__} {sigma!r}")
    try:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{owner}: sigma must be a positive real number or a real tensor with one value per "
                        f"batch element, got {type(sigma).__name__} {sigma!r}") from None
    if s.numel() not in (1, x.shape[0]) or s.ndim > x.ndim:
        raise ValueError(f"{owner}: sigma must be a scalar or have one value per batch element "
                         f"({x.shape[0]}), got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"{owner}: sigma must be finite and > 0, got {s.detach().cpu().tolist()}")
    s = s.reshape(-1).expand(x.shape[0])
    return s.reshape(-1, *([1] * (x.ndim - 1)))


class Prior(torch.nn.Module):
    """A denoiser ``D(x, sigma) ~ E[x0 | x0 + sigma * eps = x]`` in [0, 1] units.

    Subclasses implement :meth:`_denoise` (called with validated inputs and ``sigma`` shaped
    ``(B, 1, ..., 1)``) and set the attributes below.

    Attributes
    ----------
    sigma_min, sigma_max : float
        Range of noise levels the denoiser was built or trained for.
    img_shape : tuple of int or None
        Event shape ``(C, H, W)`` (or any shape for exact priors) that ``x`` must have after
        the batch axis; ``None`` accepts any spatial size with ``channels`` channels.
    channels : int or None
        Number of channels when ``img_shape`` is None (fully convolutional networks).
    data_range : tuple of float
        Intensity range of the training data, ``(0.0, 1.0)`` for every shipped prior.
    data_std : float
        Typical standard deviation of a pixel under the prior, in the same units: the scale that
        defaults tied to the data follow (SMC's twist tempering ``τ``). 0.25 for [0, 1] image
        priors; exact priors compute theirs.
    chunk_size : int or None
        Largest batch the prior sends through its network at once (``None``: the whole batch).
        :class:`~invdiff.priors.SliceStackPrior` sets it; solvers that apply the operator to a
        whole volume (MBIR) use the same chunk for the operator's intermediates.
    """

    sigma_min: float = 1e-3
    sigma_max: float = 80.0
    img_shape: tuple | None = None
    channels: int | None = None
    data_range: tuple = (0.0, 1.0)
    data_std: float = 0.25
    chunk_size: int | None = None

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``TypeError`` if ``x`` is not a real floating tensor (a non-tensor, an integer or
        bool image, a complex tensor) and ``ValueError`` if it does not have the shape this prior
        expects."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: x must be a real floating-point tensor, got dtype {x.dtype}; convert "
                            f"images to float with values in [0, 1] first (invdiff does not guess a 0-255 scale)")
        if self.img_shape is not None:
            if tuple(x.shape[1:]) != tuple(self.img_shape):
                raise ValueError(f"{name}: expected x of shape (B, {', '.join(map(str, self.img_shape))}), "
                                 f"got {tuple(x.shape)}")
        elif self.channels is not None:
            if x.ndim != 4 or x.shape[1] != self.channels:
                raise ValueError(f"{name}: expected x of shape (B, {self.channels}, H, W), "
                                 f"got {tuple(x.shape)}")

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """MMSE denoiser ``E[x0 | x0 + sigma * eps = x]``; same shape as ``x``.

        ``sigma`` is a positive number or a tensor with one value per batch element.
        """
        self.check_input(x)
        return self._denoise(x, as_sigma(sigma, x, owner=type(self).__name__))

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Score of the noisy marginal, ``(denoise(x, sigma) - x) / sigma**2`` (Tweedie)."""
        s = as_sigma(sigma, x, owner=type(self).__name__)
        return (self.denoise(x, s) - x) / s**2

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        shape = self.img_shape if self.img_shape is not None else f"(C={self.channels}, H, W)"
        return f"shape={shape}, sigma=[{self.sigma_min:g}, {self.sigma_max:g}]"


