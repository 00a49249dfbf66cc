"""Gaussian, Poisson, Student-t and Laplace observation noise around ``mean = A(x)``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, InverseGamma

from posterior.distributions import isotropic_normal_log_prob
from posterior.noise.base import NoiseModel, as_parameter, show_parameter, with_generator
from posterior.parameters import Unknown, check_positive_support, split_unknown

__all__ = ["Gaussian", "Laplace", "Poisson", "StudentT", "as_noise_model"]


class Gaussian(NoiseModel):
    """``y = mean + std * eps``, ``eps ~ N(0, I)``; ``std >= 0`` (0: noiseless).

    Args:
        std: a float, ``Tensor[B]`` (one per problem), or :class:`~posterior.Unknown` (a prior on
            ``(0, inf)``: the joint samplers draw it with ``x``).
        variance: instead of ``std``, the variance ``std^2``: a float, ``Tensor[B]`` or
            :class:`~posterior.Unknown` (named ``"variance"`` in ``result.parameters``). With an
            ``InverseGamma(a, b)`` prior it is conjugate: given ``x``, ``variance | x, y`` is
            ``InverseGamma(a + m / 2, b + ||y - A x||^2 / 2)`` (``m`` observed values), which
            ``"pgibbs"`` draws exactly (:meth:`conjugate`).

    >>> Gaussian(ps.Unknown(dist.LogNormal(-2.3, 0.5)))          # the std unknown
    >>> Gaussian(variance=ps.Unknown(dist.InverseGamma(3.0, 0.03)))  # the variance, conjugate
    """

    def __init__(
        self,
        std: float | Tensor | Unknown | None = None,
        *,
        variance: float | Tensor | Unknown | None = None,
        _name: str = "std",
    ) -> None:
        self._name = _name  # how errors name the std: "noise_std" when InverseProblem gets a float
        if std is not None and variance is not None:
            raise TypeError("Gaussian: pass the noise level once, as std or as variance")
        key = "std" if variance is None else "variance"
        value, unknown = split_unknown(std if variance is None else variance)
        if unknown is not None:
            check_positive_support(unknown, f"Gaussian: {key}")
        self.unknowns = {} if unknown is None else {key: unknown}
        value = as_parameter(
            value, self._arg("std") if key == "std" else "Gaussian: variance", positive=False
        )
        self.params = {"std": value if key == "std" else value.sqrt()}

    def set_parameter(self, key: str, value: Tensor) -> None:
        self.params["std"] = value.sqrt() if key == "variance" else value

    def conjugate(self, key: str, prior: Distribution, y: Tensor, mean: Tensor) -> Distribution | None:
        """``InverseGamma(a + m / 2, b + ||y - mean||^2 / 2)`` (float64, batch ``[R]``) for the
        unknown ``"variance"`` under an ``InverseGamma(a, b)`` prior; ``None`` otherwise."""
        if key != "variance" or not isinstance(prior, InverseGamma):
            return None
        k = self._require_bound()
        sq = self._sum_obs((y - mean).double().pow(2))  # [R]
        m = math.prod(mean.shape[mean.dim() - k :])
        a, b = prior.concentration.double(), prior.rate.double()
        return InverseGamma(a + m / 2, b + sq / 2)

    def _arg(self, key: str) -> str:
        return self._name if self._name != "std" else "Gaussian: std"

    @property
    def gaussian_std(self) -> Tensor:
        std = self.params["std"]
        n = self.batch_size or std.numel()
        return std.reshape(-1).expand(n).clone() if std.numel() == 1 else std.clone()

    def log_prob(self, y: Tensor, mean: Tensor) -> Tensor:
        k = self._require_bound()
        var = self.param("std", mean).pow(2)
        while var.dim() > mean.dim() - k:  # drop the observation dims: one variance per row
            var = var.squeeze(-1)
        sq = self._sum_obs((y - mean).pow(2))
        return isotropic_normal_log_prob(sq, var, math.prod(mean.shape[mean.dim() - k :]))

    def log_prob_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        std = self.param("std", mean)
        return -0.5 * ((y - mean) / std).pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)

    def twist_log_prob(self, y: Tensor, mean: Tensor, extra_var: float | Tensor) -> Tensor:
        """``log N(y; mean, std^2 + extra_var)`` per entry: the exact convolution."""
        k = self._require_bound()
        if isinstance(extra_var, Tensor):
            var = self.param("std", mean).pow(2) + extra_var
            return -0.5 * self._sum_obs((y - mean).pow(2) / var + torch.log(2 * math.pi * var))
        var = self.param("std", mean).pow(2) + extra_var
        while var.dim() > mean.dim() - k:
            var = var.squeeze(-1)
        sq = self._sum_obs((y - mean).pow(2))
        return isotropic_normal_log_prob(sq, var, math.prod(mean.shape[mean.dim() - k :]))

    def sample(self, mean: Tensor, generator: torch.Generator) -> Tensor:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.param("std", mean) * eps

    def variance(self, y: Tensor, mean: Tensor) -> Tensor:
        return self.param("std", mean).pow(2)

    def misfit(self, y: Tensor, mean: Tensor) -> Tensor:
        return self._sum_obs((y - mean).pow(2))


class Poisson(NoiseModel):
    """Photon counts ``y ~ Poisson(gain * mean + background)`` per entry: for a forward model with
    ``mean = A(x) >= 0`` (an intensity); ``gain > 0`` is the expected count at intensity 1 and
    ``background >= 0`` the expected dark counts (default 0).

    ``y`` must hold non-negative integers (as a floating-point tensor). A negative rate, or rate
    0 with ``y > 0``, has likelihood 0 (``log_prob = -inf``, zero gradient): a model whose
    ``A(x)`` can be negative restricts the posterior to a non-negative rate; use a non-negative
    forward model (e.g. ``(x + 1) / 2`` for images in ``[-1, 1]``), a background, or a link
    function via :func:`~posterior.noise.from_pyro`.

    Args:
        gain: a float, ``Tensor[B]`` (one per problem), or :class:`~posterior.Unknown` (a prior on
            ``(0, inf)``: the joint samplers draw it with ``x``).
        background: a float, or ``Tensor[B]``.
    """

    vanishes = True  # at a negative rate

    def __init__(self, gain: float | Tensor | Unknown, background: float | Tensor = 0.0) -> None:
        gain, unknown = split_unknown(gain)
        if unknown is not None:
            check_positive_support(unknown, "Poisson: gain")
        self.unknowns = {} if unknown is None else {"gain": unknown}
        self.params = {
            "gain": as_parameter(gain, "Poisson: gain", positive=True),
            "background": as_parameter(background, "Poisson: background", positive=False),
        }

    def __repr__(self) -> str:
        gain, background = self.params["gain"], self.params["background"]
        extra = "" if (background == 0).all() else f", background={show_parameter(background)}"
        return f"Poisson(gain={show_parameter(gain)}{extra})"

    def rate(self, mean: Tensor) -> Tensor:
        """``gain * mean + background``, broadcast against ``mean``."""
        return self.param("gain", mean) * mean + self.param("background", mean)

    def validate(self, y: Tensor) -> Tensor:
        """``y`` rounded to integer counts; counts off an integer by float rounding (at most
        ``1e-4 max(1, |y|)``, e.g. ``3.0000002`` after arithmetic) are accepted."""
        if (y < 0).any():
            raise ValueError(f"Poisson: y must hold counts >= 0, got a minimum of {y.min().item():g}")
        counts = y.round()
        off = (y - counts).abs() / y.abs().clamp_min(1)
        if (off > 1e-4).any():
            bad = y.reshape(-1)[off.reshape(-1).argmax()].item()
            raise ValueError(f"Poisson: y must hold integer counts, got {bad:g}")
        return counts

    def log_prob_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        rate = self.rate(mean)
        positive = rate > 0
        # log Poisson(y; rate) = y log(rate) - rate - log(y!), with rate = 1 where it is not positive
        # so that neither value nor gradient is NaN there
        safe = torch.where(positive, rate, torch.ones_like(rate))
        lp = torch.xlogy(y, safe) - rate - torch.lgamma(y + 1)
        possible = positive | ((rate == 0) & (y == 0))
        return torch.where(possible, lp, torch.full_like(lp, -math.inf))

    def twist_log_prob(self, y: Tensor, mean: Tensor, extra_var: float | Tensor) -> Tensor:
        """The tempered likelihood (see :meth:`NoiseModel.twist_log_prob`) at the smoothed rate
        ``E[max(rate + s e, 0)] = s h(rate / s)``, ``e ~ N(0, 1)``, ``s = gain sqrt(extra_var)``,
        ``h(z) = z Phi(z) + phi(z)``: the mean of a rate that cannot be negative when ``A(x_0)`` is
        uncertain by ``extra_var``. Positive and smooth everywhere, it tends to the rate where
        the rate is many ``s`` above 0 and falls off as ``exp(-z^2 / 2)`` below, as the chance that
        ``A(x_0)`` is positive does (a twist floored at a small rate would instead be flat below
        0 and jump by ``y log(rate / floor)`` when the estimate crosses it, and its particles'
        weights with it). ``extra_var = 0``: the likelihood itself."""
        if not isinstance(extra_var, Tensor) and extra_var == 0:
            return super().twist_log_prob(y, mean, extra_var)
        y, mean = torch.broadcast_tensors(y, mean)
        gain, background = self.param("gain", mean), self.param("background", mean)
        var = torch.as_tensor(extra_var, dtype=mean.dtype, device=mean.device)
        scale = (gain * var.clamp_min(0).sqrt()).clamp_min(torch.finfo(mean.dtype).tiny ** 0.5)
        log_rate = torch.log(scale) + _log_positive_part_mean((gain * mean + background) / scale)
        lp = torch.where(y > 0, y * log_rate, torch.zeros_like(y)) - log_rate.exp() - torch.lgamma(y + 1)
        v = self.variance(y, mean).detach()
        return self._sum_obs(v / (v + extra_var) * lp)

    def sample(self, mean: Tensor, generator: torch.Generator) -> Tensor:
        rate = self.rate(mean)
        if (rate < 0).any():
            raise ValueError(
                f"Poisson: the rate gain * A(x) + background must be >= 0, got {rate.min().item():g}"
            )
        return torch.poisson(rate.expand(mean.shape).contiguous(), generator=generator)

    def saturated_mean(self, y: Tensor) -> Tensor:
        return (y - self.param("background", y)) / self.param("gain", y)

    def deviance_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        # 2 [y log(y / rate) - (y - rate)] = 2 rate h(y / rate), h(u) = u log u - u + 1 >= 0, with
        # h's Taylor series near u = 1 (no cancellation) and h(0) = 1; inf where the rate is impossible
        rate = self.rate(mean)
        positive = rate > 0
        counted = y > 0
        safe = torch.where(positive, rate, torch.ones_like(rate))
        u = torch.where(counted, y / safe, torch.ones_like(y))
        t = u - 1
        series = t.pow(2) * (1 / 2 - t / 6 + t.pow(2) / 12 - t.pow(3) / 20)
        h = torch.where(t.abs() < 1e-2, series, u * torch.log(u) - t)
        h = torch.where(counted, h, torch.ones_like(h))
        dev = 2 * torch.where(positive, rate, torch.zeros_like(rate)) * h
        possible = positive | ((rate == 0) & ~counted)
        return torch.where(possible, dev, torch.full_like(dev, math.inf))

    def _continued(self, y: Tensor, mean: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(y, at, below, excess)``: ``y`` and ``mean`` broadcast, ``mean`` raised to a rate of
        ``r0 = 0.01 max(y, 1)`` where the rate is below it (``below``), and ``(y / r0 + 1) (r0 -
        rate)`` there (else 0): the continuation of ``-log p`` below ``r0`` by a line whose slope
        points back to a positive rate."""
        y, mean = torch.broadcast_tensors(y, mean)
        gain, background = self.param("gain", mean), self.param("background", mean)
        rate, r0 = gain * mean + background, 0.01 * y.clamp_min(1.0)
        below = rate < r0
        at = torch.where(below, (r0 - background) / gain, mean)
        excess = torch.where(below, (y / r0 + 1) * (r0 - rate), torch.zeros_like(rate))
        return y, at, below, excess

    def loss(self, y: Tensor, mean: Tensor) -> Tensor:
        """``-log p(y | mean)`` where the rate is at least ``r0 = 0.01 max(y, 1)``, continued below
        by a line of slope ``-(y / r0 + 1)`` in the rate: finite, with a gradient back to a
        positive rate, where ``-log p`` itself is infinite (an optimised ``A(x)`` that crosses
        below zero would otherwise stop CSGM or RED-diff with an infinite loss)."""
        y, at, _, excess = self._continued(y, mean)
        return self._sum_obs(excess - self.log_prob_elementwise(y, at))

    def misfit(self, y: Tensor, mean: Tensor) -> Tensor:
        """The variance-weighted deviance (:meth:`NoiseModel.misfit`), continued below the rate
        ``r0`` as :meth:`loss` is (twice its slope): finite, with a gradient that points guidance
        back to a positive rate, where the deviance itself is infinite."""
        y, at, _, excess = self._continued(y, mean)
        dev = self.deviance_elementwise(y, at).clamp_min(0) + 2 * excess
        return self._sum_obs(self.variance(y, mean).detach() * dev)

    def variance(self, y: Tensor, mean: Tensor) -> Tensor:
        # Var(y / gain) = rate / gain^2, with rate ~ y (at least one count)
        return y.clamp_min(1.0) / self.param("gain", y).pow(2)


class StudentT(NoiseModel):
    """``y = mean + scale * t_df`` per entry: heavy-tailed noise, robust to outliers.

    Args:
        df: degrees of freedom ``> 0`` (1: Cauchy; large: Gaussian), float or ``Tensor[B]``.
        scale: ``> 0``, float or ``Tensor[B]``.
    """

    def __init__(self, df: float | Tensor, scale: float | Tensor) -> None:
        self.params = {
            "df": as_parameter(df, "StudentT: df", positive=True),
            "scale": as_parameter(scale, "StudentT: scale", positive=True),
        }

    def log_prob_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        df, s = self.param("df", mean), self.param("scale", mean)
        z = (y - mean) / s
        norm = torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) - 0.5 * torch.log(df * math.pi)
        norm = norm - torch.log(s)
        return norm - 0.5 * (df + 1) * torch.log1p(z.pow(2) / df)

    def sample(self, mean: Tensor, generator: torch.Generator) -> Tensor:
        df, s = self.param("df", mean), self.param("scale", mean)

        def draw() -> Tensor:
            return torch.distributions.StudentT(df.expand(mean.shape)).sample()

        return mean + s * with_generator(generator, mean.device, draw).to(mean.dtype)

    def saturated_mean(self, y: Tensor) -> Tensor:
        return y

    def deviance_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        df, s = self.param("df", mean), self.param("scale", mean)
        return (df + 1) * torch.log1p(((y - mean) / s).pow(2) / df)

    def variance(self, y: Tensor, mean: Tensor) -> Tensor:
        # df / (df - 2) scale^2 where it is finite; scale^2 (the spread of the core) for df <= 2
        df, s = self.param("df", mean), self.param("scale", mean)
        return s.pow(2) * torch.where(df > 2, df / (df - 2).clamp_min(1e-12), torch.ones_like(df))


class Laplace(NoiseModel):
    """``y = mean + scale * l`` per entry, ``l`` standard Laplace (density ``exp(-|l|) / 2``).

    Args:
        scale: ``> 0``, float or ``Tensor[B]``.
    """

    def __init__(self, scale: float | Tensor) -> None:
        self.params = {"scale": as_parameter(scale, "Laplace: scale", positive=True)}

    def log_prob_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        b = self.param("scale", mean)
        return -(y - mean).abs() / b - torch.log(2 * b)

    def sample(self, mean: Tensor, generator: torch.Generator) -> Tensor:
        # inverse CDF: u ~ U(-1/2, 1/2), l = -sign(u) log(1 - 2|u|)
        u = torch.rand(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype) - 0.5
        lap = -torch.sign(u) * torch.log1p(-2 * u.abs())
        return mean + self.param("scale", mean) * lap

    def saturated_mean(self, y: Tensor) -> Tensor:
        return y

    def deviance_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        return 2 * (y - mean).abs() / self.param("scale", mean)

    def variance(self, y: Tensor, mean: Tensor) -> Tensor:
        return 2 * self.param("scale", mean).pow(2)


def _log_positive_part_mean(z: Tensor) -> Tensor:
    """``log h(z)``, ``h(z) = E[max(z + e, 0)] = z Phi(z) + phi(z)`` for ``e ~ N(0, 1)``, stable
    and differentiable for every finite ``z``: directly for ``z >= -8`` and by the asymptotic
    series ``phi(z) / z^2 (1 - 3 / z^2 + 15 / z^4 - 105 / z^6 + 945 / z^8)`` below (relative
    error below ``1e-5`` there)."""
    cut = -8.0
    near = z.clamp_min(cut)
    direct = near * 0.5 * torch.erfc(-near / math.sqrt(2)) + torch.exp(-0.5 * near.square()) / math.sqrt(
        2 * math.pi
    )
    far = z.clamp_max(cut)
    u = far.square().reciprocal()
    series = torch.log1p(u * (-3 + u * (15 + u * (-105 + 945 * u))))
    tail = -0.5 * far.square() - 0.5 * math.log(2 * math.pi) + torch.log(u) + series
    return torch.where(z >= cut, torch.log(direct), tail)


def as_noise_model(value: Any, name: str = "noise") -> NoiseModel:
    """``value`` if it is a :class:`NoiseModel`, else ``Gaussian(value)`` for a float or
    ``Tensor[B]`` standard deviation; a one-line ``TypeError`` naming ``name`` otherwise."""
    if isinstance(value, NoiseModel):
        return value
    if callable(value) and not isinstance(value, Tensor):
        raise TypeError(
            f"{name} must be a Gaussian standard deviation (float or Tensor[B]) or a noise model from "
            f"posterior.noise, got the callable {value!r}: wrap a pyro distribution with "
            "posterior.noise.from_pyro(fn)"
        )
    try:
        return Gaussian(value, _name=name)
    except TypeError:
        raise TypeError(
            f"{name} must be a Gaussian standard deviation (float or Tensor[B]) or a noise model from "
            f"posterior.noise, got {type(value).__name__} {value!r}"
        ) from None
