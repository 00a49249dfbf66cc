"""Diffusion priors: the interface, the exact Gaussian mixture, diffusers models, latent priors,
shipped weights."""

from posterior.priors.base import Denoised, DiffusionPrior
from posterior.priors.diffusers import DiffusersPrior
from posterior.priors.gaussian_mixture import GaussianMixturePrior
from posterior.priors.latent import LatentPrior, LinearDecoder
from posterior.priors.shipped import available_priors, load_prior, mnist_heldout

__all__ = [
    "Denoised",
    "DiffusersPrior",
    "DiffusionPrior",
    "GaussianMixturePrior",
    "LatentPrior",
    "LinearDecoder",
    "available_priors",
    "load_prior",
    "mnist_heldout",
]
