"""Particle machinery: resampling schemes, the effective sample size and the Feynman-Kac engine."""

from posterior.particles.engine import FeynmanKacModel, ParticleState, SMCOutput, run_smc
from posterior.particles.resampling import (
    RESAMPLERS,
    ess,
    multinomial,
    offspring_counts,
    residual,
    stratified,
    systematic,
)

__all__ = [
    "RESAMPLERS",
    "FeynmanKacModel",
    "ParticleState",
    "SMCOutput",
    "ess",
    "multinomial",
    "offspring_counts",
    "residual",
    "run_smc",
    "stratified",
    "systematic",
]
