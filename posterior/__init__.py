"""posterior: calibrated posterior sampling for inverse problems with diffusion priors.

>>> import posterior as ps
>>> problem = ps.problems.gmm_benchmark(dim=8, obs_dim=2, seed=0)
>>> result = ps.sample(problem, "tds", num_particles=256, num_steps=100, seed=0)
"""

from posterior import io, noise, operators, problems
from posterior.distributions import GaussianMixture
from posterior.parameters import Unknown
from posterior.particles import ParticleDegeneracyWarning
from posterior.priors import DiffusersPrior, DiffusionPrior, GaussianMixturePrior, LatentPrior, load_prior
from posterior.problem import InverseProblem
from posterior.samplers import METHODS, Result, sample
from posterior.samplers.approximate.divergence import DivergenceWarning
from posterior.schedule import EDMSchedule, FlowSchedule, NoiseSchedule, VPSchedule

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "DiffusersPrior",
    "DiffusionPrior",
    "DivergenceWarning",
    "EDMSchedule",
    "FlowSchedule",
    "GaussianMixture",
    "GaussianMixturePrior",
    "InverseProblem",
    "LatentPrior",
    "NoiseSchedule",
    "ParticleDegeneracyWarning",
    "Result",
    "Unknown",
    "VPSchedule",
    "io",
    "load_prior",
    "noise",
    "operators",
    "problems",
    "sample",
]
