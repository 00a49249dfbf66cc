"""Asymptotically exact samplers built on the particle engine."""

from posterior.samplers.exact import gibbs, mala, mcgdiff, particle_gibbs, smc, tds  # noqa: F401  (registers the methods)
