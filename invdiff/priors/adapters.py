"""Adapters at the edge: other parameterisations → :class:`Prior`, and :class:`Prior` → deepinv.

Solvers only ever call ``prior.denoise(x, sigma)`` in invdiff's variance-exploding [0, 1] form
(as k-diffusion's ``external.py`` wraps every network as ``model(x, sigma)``). The conversions:

Data range
    A network trained on data in ``[lo, hi]`` sees ``z = lo + a·x`` with ``a = hi − lo``; noise
    ``σ`` on [0, 1] images is noise ``a·σ`` in its units (``a = 2`` for [−1, 1] networks).
VP (DDPM) networks with discrete ``ᾱ_t``
    ``x_t = sqrt(ᾱ) z0 + sqrt(1 − ᾱ) ε`` is ``z0 + s ε`` scaled by ``sqrt(ᾱ)`` with
    ``s = sqrt((1 − ᾱ)/ᾱ)``. For a requested ``s`` we feed ``x_t = z / sqrt(1 + s²)`` and the
    timestep ``t`` whose ``s_t`` matches (fractional, by linear interpolation of ``log s_t``, or the
    nearest integer with ``timestep="nearest"``), then read ``ẑ0`` from the output:
    eps: ``ẑ0 = z − s ε̂``; v: ``ẑ0 = α x_t − σ_t v̂`` with ``α = 1/sqrt(1+s²)``, ``σ_t = s α``;
    x0: ``ẑ0`` directly. Guided-diffusion models that also predict a variance return ``2C``
    channels; the first ``C`` are used.
"""

from __future__ import annotations

from pathlib import Path

import deepinv
import torch

from .prior import Prior

__all__ = ["VPPrior", "DenoiserPrior", "from_diffusers", "from_deepinv_diffunet", "PriorDenoiser",
           "to_deepinv", "load_state_dict_file", "ddpm_linear_alphas_cumprod"]

_PREDICTIONS = ("eps", "v", "x0")


def _range(data_range) -> tuple[float, float]:
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {data_range!r}")
    return lo, hi


class VPPrior(Prior):
    """A VP diffusion network with discrete ``alphas_cumprod`` as a :class:`Prior`.

    Parameters
    ----------
    model : callable
        ``model(x_t, t) -> output`` with ``t`` a float tensor of timesteps ``(B,)``.
    alphas_cumprod : tensor (T,)
        ``ᾱ_t`` of the training schedule, decreasing in ``t``.
    prediction : {"eps", "v", "x0"}
        What the network predicts.
    data_range : (lo, hi)
        Range of the training data, ``(-1, 1)`` for guided-diffusion / DDPM / DPS checkpoints.
    timestep : {"continuous", "nearest"}
        Fractional timesteps (networks with sinusoidal embeddings accept them) or the nearest
        integer timestep.
    channels : int, optional
        Image channels; a network output with ``2 * channels`` channels (learned variance)
        is cut to the first ``channels``.
    img_shape : tuple, optional
        ``(C, H, W)`` the network requires, if any.
    """

    def __init__(self, model, alphas_cumprod, *, prediction: str = "eps", data_range=(-1.0, 1.0),
                 timestep: str = "continuous", channels: int | None = None, img_shape=None):
        super().__init__()
        if prediction not in _PREDICTIONS:
            raise ValueError(f"prediction must be one of {_PREDICTIONS}, got {prediction!r}")
        if timestep not in ("continuous", "nearest"):
            raise ValueError(f"timestep must be 'continuous' or 'nearest', got {timestep!r}")
        a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if a.numel() < 2 or not ((a > 0) & (a < 1)).all() or (a[1:] > a[:-1]).any():
            raise ValueError("alphas_cumprod must be a decreasing sequence in (0, 1)")
        self.model = model
        self.prediction = prediction
        self.timestep = timestep
        self.lo, hi = _range(data_range)
        self.scale = hi - self.lo
        self.register_buffer("log_s", 0.5 * torch.log((1 - a) / a))  # log s_t, increasing in t
        self.sigma_min = float(self.log_s[0].exp()) / self.scale
        self.sigma_max = float(self.log_s[-1].exp()) / self.scale
        self.img_shape = tuple(img_shape) if img_shape is not None else None
        self.channels = channels if channels is not None else (img_shape[0] if img_shape else None)

    def sigma_to_t(self, s_net: torch.Tensor) -> torch.Tensor:
        """Timestep(s) of the network's noise level ``s_net`` (its own units)."""
        log_s = torch.log(s_net.to(torch.float64)).clamp(self.log_s[0], self.log_s[-1])
        idx = torch.searchsorted(self.log_s, log_s).clamp(1, len(self.log_s) - 1)
        lo, hi = self.log_s[idx - 1], self.log_s[idx]
        t = (idx - 1) + (log_s - lo) / (hi - lo)
        return t.round() if self.timestep == "nearest" else t

    def _denoise(self, x, sigma):
        s = self.scale * sigma  # noise level in network units, (B, 1, 1, 1)
        z = self.lo + self.scale * x
        alpha = 1 / torch.sqrt(1 + s**2)
        t = self.sigma_to_t(s.reshape(-1)).to(x.dtype)
        out = self.model((z * alpha).to(x.dtype), t)
        out = getattr(out, "sample", out)  # diffusers returns an object with .sample
        c = x.shape[1]
        if out.shape[1] == 2 * c:
            out = out[:, :c]
        if self.prediction == "eps":
            z0 = z - s * out
        elif self.prediction == "v":
            z0 = alpha * (z * alpha) - (s * alpha) * out
        else:
            z0 = out
        return (z0 - self.lo) / self.scale


class DenoiserPrior(Prior):
    """Any Gaussian denoiser ``model(x, sigma)`` (e.g. a deepinv denoiser) as a :class:`Prior`.

    ``data_range`` is the range the denoiser works in (deepinv denoisers: ``(0, 1)``); inputs and
    noise levels are converted from invdiff's [0, 1] units.
    """

    def __init__(self, model, *, data_range=(0.0, 1.0), sigma_min: float = 1e-3, sigma_max: float = 1.0,
                 channels: int | None = None, img_shape=None):
        super().__init__()
        self.model = model
        self.lo, hi = _range(data_range)
        self.scale = hi - self.lo
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.img_shape = tuple(img_shape) if img_shape is not None else None
        self.channels = channels if channels is not None else (img_shape[0] if img_shape else None)

    def _denoise(self, x, sigma):
        out = self.model(self.lo + self.scale * x, (self.scale * sigma).reshape(-1))
        return (out - self.lo) / self.scale


def from_diffusers(unet, scheduler=None, *, alphas_cumprod=None, prediction: str | None = None,
                   timestep: str = "continuous") -> VPPrior:
    """A diffusers ``UNet2DModel`` (with its DDPM/DDIM scheduler) as a :class:`Prior`.

    diffusers is not a dependency: the model is called as ``unet(x_t, t).sample`` and the
    scheduler is read for ``alphas_cumprod`` and ``config.prediction_type`` ("epsilon",
    "v_prediction", "sample"). Pass ``alphas_cumprod``/``prediction`` to override.
    """
    if alphas_cumprod is None:
        if scheduler is None or not hasattr(scheduler, "alphas_cumprod"):
            raise ValueError("give a scheduler with alphas_cumprod, or alphas_cumprod itself")
        alphas_cumprod = scheduler.alphas_cumprod
    if prediction is None:
        kind = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
        prediction = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}.get(kind)
        if prediction is None:
            raise ValueError(f"unsupported diffusers prediction_type {kind!r}")
    config = getattr(unet, "config", None)
    channels = getattr(config, "in_channels", None)
    size = getattr(config, "sample_size", None)
    img_shape = None
    if channels is not None and size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        img_shape = (channels,) + hw
    return VPPrior(unet, alphas_cumprod, prediction=prediction, data_range=(-1.0, 1.0),
                   timestep=timestep, channels=channels, img_shape=img_shape)


def ddpm_linear_alphas_cumprod(timesteps: int = 1000, beta_min: float = 1e-4, beta_max: float = 0.02):
    """``ᾱ_t`` of the DDPM linear β schedule (Ho et al. 2020), used by guided-diffusion / DPS checkpoints."""
    return torch.cumprod(1 - torch.linspace(beta_min, beta_max, timesteps, dtype=torch.float64), 0)


def from_deepinv_diffunet(path=None, *, net=None, in_channels: int = 3, large_model: bool = False,
                          timestep: str = "continuous") -> VPPrior:
    """deepinv's ``DiffUNet`` (guided-diffusion eps-network, DDPM linear schedule) as a :class:`Prior`.

    Give either ``path`` to a local weights file (``.safetensors``, or a torch file read with
    ``weights_only=True`` — deepinv's own ``pretrained=PATH`` unpickles it) or an existing
    ``net``. The network predicts ε (and a variance, ignored) on [−1, 1] images.
    """
    if net is None:
        if path is None:
            raise ValueError("give the path of the DiffUNet weights or the network itself")
        state = load_state_dict_file(path)
        net = deepinv.models.DiffUNet(in_channels=in_channels, out_channels=in_channels,
                                      large_model=large_model, pretrained=None)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{str(path)!r} does not hold DiffUNet weights (in_channels={in_channels}, "
                             f"large_model={large_model}): {err}") from err
    net.eval().requires_grad_(False)
    prior = VPPrior(lambda x, t: net.forward_diffusion(x, t), ddpm_linear_alphas_cumprod(), prediction="eps",
                    data_range=(-1.0, 1.0), timestep=timestep, channels=in_channels)
    prior.net = net  # registers the network as a submodule (device moves, state dict)
    return prior


class PriorDenoiser(deepinv.models.Denoiser):
    """A :class:`Prior` as a deepinv denoiser ``forward(x, sigma)`` in [0, 1] units.

    deepinv's samplers (``deepinv.sampling.DPS``, ``DDRM``, ``DiffPIR``) call their denoiser on
    [0, 1] images with noise levels in the same units, which is exactly ``prior.denoise``.
    """

    def __init__(self, prior: Prior):
        super().__init__()
        self.prior = prior

    def forward(self, x, sigma, *args, **kwargs):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sigma = sigma.reshape(-1)
        return self.prior.denoise(x, sigma.clamp_min(self.prior.sigma_min * 1e-3))


def to_deepinv(prior: Prior) -> PriorDenoiser:
    """Wrap ``prior`` for deepinv (see :class:`PriorDenoiser`)."""
    return PriorDenoiser(prior)


def load_state_dict_file(path) -> dict:
    """Weights from a local ``.safetensors`` file, or a torch file read with ``weights_only=True``.

    Never unpickles arbitrary objects. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for one that cannot be read.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(p)!r}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read checkpoint {str(p)!r}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(p)!r} does not hold a state dict")
    return state
