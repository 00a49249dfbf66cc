"""Joint samplers of unknown parameters and ``x``: particle marginal Metropolis-Hastings and
particle Gibbs."""

from posterior.samplers.joint.pgibbs import ParticleGibbsTheta
from posterior.samplers.joint.pmmh import PMMH

__all__ = ["PMMH", "ParticleGibbsTheta"]
