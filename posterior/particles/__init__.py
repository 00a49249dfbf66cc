"""Particle machinery: resampling schemes, the effective sample size and the Feynman-Kac engine."""

from posterior.particles.engine import (
    ParticleDegeneracyWarning,
    ParticleState,
    SMCOutput,
    run_smc,
    warn_if_degenerate,
)
from posterior.particles.feynman_kac import Extras, FeynmanKacModel, Move
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
    "Extras",
    "FeynmanKacModel",
    "Move",
    "ParticleDegeneracyWarning",
    "ParticleState",
    "SMCOutput",
    "ess",
    "multinomial",
    "offspring_counts",
    "residual",
    "run_smc",
    "stratified",
    "systematic",
    "warn_if_degenerate",
]
