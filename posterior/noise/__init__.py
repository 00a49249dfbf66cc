"""Observation models ``p(y | A(x))``: the fourth argument of :class:`~posterior.InverseProblem`.

>>> import posterior as ps
>>> ps.noise.Gaussian(0.1)              # the same as passing 0.1
>>> ps.noise.Poisson(gain=20.0)          # counts with mean 20 * A(x), A(x) >= 0
>>> ps.noise.StudentT(df=3.0, scale=0.1)
>>> ps.noise.Laplace(scale=0.1)
>>> ps.noise.from_pyro(lambda m: pyro.distributions.Poisson(3 * softplus(m)))

Methods that only need ``log p(y | x)`` and its gradient (``tds``, ``mala``, ``dps``, ...) take any
of them; methods built on linear-Gaussian closed forms ask ``noise.gaussian_std`` and refuse the
others with a one-line error.
"""

from posterior.noise.base import NoiseModel
from posterior.noise.models import Gaussian, Laplace, Poisson, StudentT, as_noise_model
from posterior.noise.pyro import PyroNoise, from_pyro

__all__ = [
    "Gaussian",
    "Laplace",
    "NoiseModel",
    "Poisson",
    "PyroNoise",
    "StudentT",
    "as_noise_model",
    "from_pyro",
]
