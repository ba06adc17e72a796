"""Priors: the :class:`Prior` interface, exact Gaussian priors, adapters and shipped checkpoints."""

from .adapters import (DenoiserPrior, PriorDenoiser, VPPrior, from_deepinv_diffunet, from_diffusers,
                       load_state_dict_file, to_deepinv)
from .gaussian import Gaussian, GaussianMixture, GaussianMixturePrior, GaussianPrior
from .patch import PatchPrior
from .prior import Prior
from .slices import SliceStackPrior
from .unet import EDMPrior, UNet, UNetConfig
from .zoo import available_priors, load_checkpoint, load_prior

__all__ = ["Prior", "SliceStackPrior", "GaussianPrior", "GaussianMixturePrior", "Gaussian", "GaussianMixture", "VPPrior",
           "DenoiserPrior", "from_diffusers", "from_deepinv_diffunet", "PriorDenoiser", "to_deepinv", "load_state_dict_file",
           "EDMPrior", "PatchPrior", "UNet", "UNetConfig", "load_prior", "load_checkpoint", "available_priors"]
