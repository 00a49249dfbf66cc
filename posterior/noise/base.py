"""The observation-model protocol: ``p(y | A(x))`` as a noise model around the forward model.

A noise model turns the forward model's output ``mean = A(x)`` into a likelihood ``p(y | mean)``.
Samplers never test a noise model's class: they ask it what it can do (``gaussian_std`` is
``None`` unless the noise is Gaussian, which linear-Gaussian methods need).

Parameters (a standard deviation, a gain, ...) are floats or ``Tensor[B]``, one per problem of a
batch. Inside :class:`~posterior.InverseProblem` the model is *bound*: its parameters become
``Tensor[1]`` or ``Tensor[B]`` on the prior's device and dtype, and it knows how many trailing
dimensions of ``y`` are observation dimensions. A parameter of length ``B`` lines up with the first
dimension of ``y`` and ``mean`` (the problem dimension ``B`` of ``[B, N, *obs_shape]``, or the rows
picked by :meth:`NoiseModel.select`).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["NoiseModel", "as_parameter", "show_parameter", "with_generator"]

_N = TypeVar("_N", bound="NoiseModel")


def as_parameter(value: Any, name: str, positive: bool) -> Tensor:
    """A float or ``Tensor[B]`` parameter as a float64 tensor of dim 0 or 1, validated.

    Raises a one-line ``TypeError`` (not a number) or ``ValueError`` (NaN, inf, sign, shape)
    naming ``name``.
    """
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real number or a Tensor[B] of them, got {value!r}")
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        t = value.detach().to(torch.float64)
    elif isinstance(value, numbers.Real):
        t = torch.tensor(float(value), dtype=torch.float64)
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{name} must be a real number or a Tensor[B] of them, got {type(value).__name__} {value!r}"
            ) from None
    if t.dim() > 1:
        raise ValueError(f"{name} must be a scalar or a Tensor[B], got shape {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and (t <= 0).any():
        raise ValueError(f"{name} must be > 0, got {value}")
    if not positive and (t < 0).any():
        raise ValueError(f"{name} must be >= 0, got {value}")
    return t


def with_generator(generator: torch.Generator, device: torch.device, fn: Callable[[], Tensor]) -> Tensor:
    """Run ``fn`` (which draws from torch's global generator) seeded from ``generator``, leaving the
    global state as it was: same ``generator`` state, same draws."""
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return fn()


class NoiseModel:
    """``p(y | mean)`` with ``mean = A(x)``: the base class of the models in :mod:`posterior.noise`.

    Subclasses set :attr:`params` (name -> float64 ``Tensor`` of dim 0 or 1) in ``__init__`` and
    implement :meth:`log_prob_elementwise`, :meth:`sample` and :meth:`variance`; a model whose
    likelihood does not factorise over observation entries overrides :meth:`log_prob` instead.

    Shapes: ``y`` and ``mean`` are ``Tensor[*lead, *obs_shape]`` (broadcastable); ``*lead`` is
    any number of leading batch dimensions whose first, when the model holds ``Tensor[B]``
    parameters, is the problem dimension.
    """

    params: dict[str, Tensor]
    obs_ndim: int | None = None  # set by bind()
    batch_size: int | None = None
    #: the likelihood is zero on part of the space (Poisson: a negative rate), which a method that
    #: never weighs its draws by it (``"gibbs"``'s prior step) cannot respect
    vanishes: bool = False

    # ------------------------------------------------------------------ binding to a problem
    def bind(self: _N, batch_size: int, obs_ndim: int, dtype: torch.dtype, device: torch.device) -> _N:
        """A copy for ``batch_size`` problems with ``obs_ndim`` observation dimensions, its
        parameters on ``device`` / ``dtype``. ``ValueError`` if a parameter has another length."""
        for k, p in self.params.items():
            if p.dim() == 1 and p.shape[0] not in (1, batch_size):
                raise ValueError(
                    f"{self._arg(k)} must be a scalar or a Tensor[{batch_size}] (one per problem), "
                    f"got shape {list(p.shape)}"
                )
        out = copy.copy(self)
        out.params = {k: p.to(device=device, dtype=dtype).reshape(-1) for k, p in self.params.items()}
        out.obs_ndim, out.batch_size = obs_ndim, batch_size
        return out

    def _arg(self, key: str) -> str:
        """How error messages name parameter ``key``."""
        return f"{type(self).__name__}: {key}"

    def select(self: _N, index: slice | Tensor) -> _N:
        """The model for the rows ``index`` of the first dimension (a slice or ``LongTensor``):
        parameters of length ``> 1`` are indexed, shared ones kept. E.g.
        ``noise.select(torch.arange(B).repeat_interleave(N))`` lines up with flat particles
        ``[B * N, *obs_shape]``."""
        out = copy.copy(self)
        out.params = {k: (p[index] if p.dim() == 1 and p.shape[0] > 1 else p) for k, p in self.params.items()}
        return out

    def param(self, key: str, like: Tensor) -> Tensor:
        """Parameter ``key`` shaped to broadcast against ``like: [*lead, *obs]`` (aligned at dim 0)."""
        p = self.params[key]
        if p.dim() == 0 or p.shape[0] == 1:
            return p.reshape(()).to(like.dtype)
        return p.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def _require_bound(self) -> int:
        if self.obs_ndim is None:
            raise ValueError(
                f"{self!r} is not bound to a problem: pass it to InverseProblem and use problem.noise"
            )
        return self.obs_ndim

    def _sum_obs(self, elementwise: Tensor) -> Tensor:
        k = self._require_bound()
        return elementwise.sum(tuple(range(-k, 0))) if k else elementwise

    # ------------------------------------------------------------------ the protocol
    def validate(self, y: Tensor) -> Tensor | None:
        """A one-line ``ValueError`` if ``y: [B, *obs_shape]`` cannot come from this model; else
        the observations to use (``y`` cleaned, e.g. counts rounded) or ``None`` (``y`` as is)."""

    def log_prob_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        """``log p(y_i | mean_i)`` per observation entry, broadcast of ``y`` and ``mean``."""
        raise NotImplementedError

    def log_prob(self, y: Tensor, mean: Tensor) -> Tensor:
        """``log p(y | mean)`` summed over the observation dimensions: ``Tensor[*lead]``.

        Differentiable in ``mean``. ``-inf`` where ``mean`` is impossible for ``y`` (e.g. a
        negative Poisson rate), with a zero (not NaN) gradient there.
        """
        y, mean = torch.broadcast_tensors(y, mean)
        return self._sum_obs(self.log_prob_elementwise(y, mean))

    def sample(self, mean: Tensor, generator: torch.Generator) -> Tensor:
        """A draw ``y ~ p(y | mean)``, same shape as ``mean``."""
        raise NotImplementedError

    def variance(self, y: Tensor, mean: Tensor) -> Tensor:
        """A positive variance of the observation per entry on the scale of ``mean`` (broadcastable
        to ``mean``): the Gaussian that this model resembles near ``y``. Only tunes twists and
        step sizes (:meth:`twist_log_prob`); no method's exactness depends on it."""
        raise NotImplementedError

    def saturated_mean(self, y: Tensor) -> Tensor | None:
        """The ``mean`` that maximises ``p(y_i | mean_i)`` per entry (``None`` if unknown)."""
        return None

    def deviance_elementwise(self, y: Tensor, mean: Tensor) -> Tensor:
        """``2 [log p(y_i | saturated_i) - log p(y_i | mean_i)] >= 0`` per entry. Models override it
        with a form free of cancellation (a difference of two log-densities loses all digits
        near the saturated mean, where guidance divides by it)."""
        sat = self.saturated_mean(y)
        if sat is None:
            raise ValueError(f"{self!r} has no saturated mean, so no misfit for guidance")
        return 2 * (self.log_prob_elementwise(y, sat) - self.log_prob_elementwise(y, mean))

    def loss(self, y: Tensor, mean: Tensor) -> Tensor:
        """``-log p(y | mean)`` summed over the observation dims, ``Tensor[*lead]``: the data term
        of optimisation-based methods (CSGM, RED-diff). Models whose likelihood vanishes (Poisson
        at a negative rate) continue it finitely, with a gradient back into its support."""
        return -self.log_prob(y, mean)

    def misfit(self, y: Tensor, mean: Tensor) -> Tensor:
        """A squared misfit on the scale of ``mean``, summed over the observation dims:
        ``Tensor[*lead]``. ``||y - mean||^2`` for Gaussian noise; otherwise the deviance weighted
        by :meth:`variance`, which is close to ``||y - mean||^2`` where the noise is nearly
        Gaussian. For guidance-based methods (DPS); ``ValueError`` if the model has no
        :meth:`saturated_mean`."""
        y, mean = torch.broadcast_tensors(y, mean)
        dev = self.deviance_elementwise(y, mean).clamp_min(0)
        return self._sum_obs(self.variance(y, mean).detach() * dev)

    @property
    def gaussian_std(self) -> Tensor | None:
        """``Tensor[B]`` standard deviations if the noise is Gaussian ``N(mean, std^2 I)``, else
        ``None``: what linear-Gaussian methods ask before using closed forms."""
        return None

    def twist_log_prob(self, y: Tensor, mean: Tensor, extra_var: float | Tensor) -> Tensor:
        """An approximation of ``log E[p(y | mean + sqrt(extra_var) e)]``, ``e ~ N(0, I)``, summed
        over the observation dimensions: ``Tensor[*lead]``.

        Twisted samplers use it as ``log p~_t(y | x_t)`` with ``mean = A(x0_hat(x_t))`` (or the
        mean of ``A(x_0)`` around it) and ``extra_var`` the remaining uncertainty of ``A(x_0)`` (a
        float, or per entry: a tensor broadcastable to ``mean``); any finite function keeps them
        exact.
        Default: the likelihood tempered per entry by ``lambda = v / (v + extra_var)`` with
        ``v`` = :meth:`variance` (for Gaussian noise the same as the Gaussian convolution up to a
        constant): flat where ``x_t`` says nothing about ``y``, the likelihood itself at the end.
        """
        y, mean = torch.broadcast_tensors(y, mean)
        lp = self.log_prob_elementwise(y, mean)
        if not isinstance(extra_var, Tensor) and extra_var == 0:
            return self._sum_obs(lp)
        v = self.variance(y, mean).detach()
        lam = v / (v + extra_var)
        # lambda * (-inf) stays -inf: impossible means stay impossible under the twist
        return self._sum_obs(lam * lp)

    # ------------------------------------------------------------------ unknown parameters
    def set_parameter(self, key: str, value: Tensor) -> None:
        """Hold ``value`` (``Tensor[R]``, one per row) for the unknown ``key`` (a key of
        ``unknowns``): how the joint samplers put a parameter value into the model. Models whose
        unknown is a function of a stored parameter (a variance for a std) override it."""
        self.params[key] = value

    def conjugate(self, key: str, prior: Distribution, y: Tensor, mean: Tensor) -> Distribution | None:
        """The exact conditional ``p(theta | y, mean)`` of the unknown ``key`` under ``prior``
        given ``mean = A(x)``, for ``y, mean: Tensor[R, *obs_shape]`` (a distribution of batch
        shape ``[R]``), where ``prior`` is conjugate to this model; ``None`` otherwise (the joint
        samplers then take Metropolis-Hastings steps). Default: ``None``."""
        return None

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={show_parameter(p)}" for k, p in self.params.items())
        return f"{type(self).__name__}({args})"


def show_parameter(p: Tensor) -> str:
    """A parameter as ``repr`` shows it: its value, or ``Tensor[B]``."""
    return f"{p.item():g}" if p.numel() == 1 else f"Tensor[{p.shape[0]}]"
