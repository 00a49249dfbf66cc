"""Observation models written with pyro: a distribution of the forward model's output ``A(x)``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from posterior.noise.base import NoiseModel, with_generator

__all__ = ["PyroNoise", "from_pyro"]


def _check_variance(variance: float | None) -> float | None:
    if variance is None:
        return None
    if isinstance(variance, bool) or not isinstance(variance, (int, float)) or not 0 < variance < math.inf:
        raise ValueError(f"from_pyro: variance must be a positive finite number or None, got {variance!r}")
    return float(variance)


def _sum_to(lp: Tensor, lead: int, what: str) -> Tensor:
    """Sum the trailing dims of ``lp`` so that ``lead`` dims remain."""
    if lp.dim() < lead:
        raise ValueError(
            f"{what}: log_prob(y) has shape {list(lp.shape)}, fewer dims than the {lead} leading batch "
            "dims of the forward model's output: the distribution must be batched over them"
        )
    return lp.sum(tuple(range(lead, lp.dim()))) if lp.dim() > lead else lp


class PyroNoise(NoiseModel):
    """``p(y | mean) = fn(mean).log_prob(y)`` for a pyro (or torch) distribution; see :func:`from_pyro`."""

    def __init__(self, fn: Callable[[Tensor], Any], variance: float | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"from_pyro: fn must be a callable mean -> distribution, got {fn!r}")
        self.fn, self.fixed_variance = fn, _check_variance(variance)
        self.params = {}

    def _dist(self, mean: Tensor) -> Any:
        d = self.fn(mean)
        if not callable(getattr(d, "log_prob", None)):
            raise TypeError(f"from_pyro: fn(mean) must return a distribution, got {type(d).__name__}")
        return d

    def validate(self, y: Tensor) -> None:
        d = self._dist(torch.zeros_like(y))
        support = getattr(d, "support", None)
        if support is None:
            return
        try:
            ok = support.check(y)
        except NotImplementedError:
            return
        if not bool(torch.as_tensor(ok).all()):
            raise ValueError(f"from_pyro: y lies outside the support of fn(mean) ({support})")

    def log_prob(self, y: Tensor, mean: Tensor) -> Tensor:
        k = self._require_bound()
        return _sum_to(self._dist(mean).log_prob(y), mean.dim() - k, "from_pyro")

    def log_prob_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        lp = self._dist(mean).log_prob(y)
        if lp.shape != torch.broadcast_shapes(y.shape, mean.shape):
            raise ValueError(
                "from_pyro: fn(mean) has event dimensions, so its likelihood has no per-entry terms"
            )
        return lp

    def twist_log_prob(self, y: Tensor, mean: Tensor, extra_var: float | Tensor) -> Tensor:
        """Tempered per entry where the distribution factorises (event shape ``()``); tempered as a
        whole, with the mean of :meth:`variance`, where it has event dimensions."""
        lp = self._dist(mean).log_prob(y)
        full = torch.broadcast_shapes(y.shape, mean.shape)
        v = self.variance(y, mean).detach()
        if lp.shape != full:
            v = v.mean()
        lam = v / (v + extra_var)
        return _sum_to(lam * lp, mean.dim() - self._require_bound(), "from_pyro")

    def sample(self, mean: Tensor, generator: torch.Generator) -> Tensor:
        draw = with_generator(generator, mean.device, lambda: self._dist(mean.detach()).sample())
        return draw.to(mean.dtype)

    def variance(self, y: Tensor, mean: Tensor) -> Tensor:
        """``variance`` if given, else the delta method per entry: ``Var(y | m) / (dE[y | m] / dm)^2``
        at ``m = mean`` (the variance of ``y`` carried to the scale of ``mean``) where the
        distribution has a mean and a variance per entry; its variance alone, or 1, otherwise."""
        one = torch.ones((), dtype=mean.dtype, device=mean.device)
        if self.fixed_variance is not None:
            return one * self.fixed_variance
        with torch.enable_grad():
            m = mean.detach().requires_grad_(True)
            d = self._dist(m)
            try:
                mu, var = d.mean, d.variance
            except (NotImplementedError, AttributeError):
                return one
            var = var.detach().to(mean.dtype)
            if mu.shape != m.shape or not mu.requires_grad:
                return torch.where(torch.isfinite(var) & (var > 0), var, torch.ones_like(var))
            (slope,) = torch.autograd.grad(mu.sum(), m)
        v = var / slope.pow(2)
        return torch.where(torch.isfinite(v) & (v > 0), v, torch.ones_like(v))

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return f"from_pyro({name})"


def from_pyro(fn: Callable[[Tensor], Any], variance: float | None = None) -> PyroNoise:
    """A noise model from a distribution of the forward model's output.

    ``fn(mean)`` maps ``mean = A(x): Tensor[*lead, *obs_shape]`` (any leading batch dims: problems,
    particles) to a ``pyro.distributions`` (or ``torch.distributions``) object whose
    ``log_prob(y)`` is the likelihood; ``log p(y | x)`` sums it over the observation dims, e.g.::

        import pyro.distributions as dist
        noise = ps.noise.from_pyro(lambda m: dist.Poisson(3 * torch.nn.functional.softplus(m)))

    ``fn`` must treat the leading dims as a batch (parameters shared by all problems) and be
    differentiable in ``mean`` for gradient-based methods. ``variance`` (optional) is the
    observation's variance on the scale of ``mean``: it only tunes twisted samplers' twists.
    """
    return PyroNoise(fn, variance)
