"""Diffusion priors: the interface, the exact Gaussian mixture, diffusers models, shipped weights."""

from posterior.priors.base import Denoised, DiffusionPrior
from posterior.priors.gaussian_mixture import GaussianMixturePrior

__all__ = ["DiffusionPrior", "Denoised", "GaussianMixturePrior"]
