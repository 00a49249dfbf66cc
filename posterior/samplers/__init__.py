"""Samplers: the registry, the result object, exact and approximate methods."""

from posterior.samplers.base import METHODS, Sampler, get_method, register, sample
from posterior.samplers.result import Result

# Importing the method modules registers them in METHODS.
from posterior.samplers import approximate, exact, joint  # noqa: F401  isort: skip

__all__ = ["METHODS", "Result", "Sampler", "get_method", "register", "sample"]
