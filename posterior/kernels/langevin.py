"""Langevin kernels on batched particles: ULA and MALA (step-size adaptation: :mod:`.adaptive`).

Particles are one tensor ``x: [B, N, *event_shape]`` (``B`` problems, ``N`` chains each). A target
is a batched log density ``log pi(x) -> [B, N]`` with its gradient ``[B, N, *event_shape]``.
One Langevin step (Roberts & Tweedie, Bernoulli 1996) proposes

    x' = x + h grad log pi(x) + sqrt(2 h) xi,        xi ~ N(0, I),

with a step size ``h`` per problem. MALA accepts ``x'`` with the Metropolis-Hastings probability
``min(1, pi(x') q(x | x') / (pi(x) q(x' | x)))`` and leaves ``pi`` exactly invariant; it needs the
density ``pi`` itself. ULA (MH switched off) always moves and is **biased**: its stationary law
differs from ``pi`` by ``O(h)``, which shows at large steps.

The kernels follow the protocol of :mod:`posterior.kernels.chains`: ``state = kernel.init(x)``,
``state, info = kernel.step(generator, state)``, with :class:`typing.NamedTuple` states.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import check_bool
from posterior.kernels.chains import KernelInfo
from posterior.problem import InverseProblem
from posterior.schedule import CLEAN

__all__ = [
    "MALA",
    "ULA",
    "FunctionTarget",
    "LangevinState",
    "PosteriorTarget",
    "Target",
    "TargetValue",
    "as_step_size",
]


# ---------------------------------------------------------------------------- targets
class TargetValue(NamedTuple):
    """A target evaluated at ``x: [B, N, *event_shape]``."""

    log_prob: Tensor | None  # [B, N], None where the target has no tractable density
    grad: Tensor  # [B, N, *event_shape]


class Target(ABC):
    """A batched unnormalised log density on particles ``x: [B, N, *event_shape]``."""

    #: whether :meth:`__call__` returns ``log_prob`` (needed for a Metropolis-Hastings correction)
    has_log_prob: bool = True

    @abstractmethod
    def __call__(self, x: Tensor, need_log_prob: bool = True) -> TargetValue:
        """Log density ``[B, N]`` (if ``need_log_prob`` and available) and gradient at ``x``."""


class FunctionTarget(Target):
    """A target from callables.

    Args:
        log_prob_fn: ``x [B, N, *event] -> [B, N]``, differentiable if ``grad_fn`` is not given
            (the gradient is then taken by autograd). ``None`` for a gradient-only target.
        grad_fn: ``x -> [B, N, *event]``, the gradient of the log density.
    """

    def __init__(
        self,
        log_prob_fn: Callable[[Tensor], Tensor] | None = None,
        grad_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if log_prob_fn is None and grad_fn is None:
            raise ValueError("a target needs a log density, a gradient, or both")
        self.log_prob_fn, self.grad_fn = log_prob_fn, grad_fn
        self.has_log_prob = log_prob_fn is not None

    def __call__(self, x: Tensor, need_log_prob: bool = True) -> TargetValue:
        if self.grad_fn is not None:
            grad = self.grad_fn(x).detach()
            lp = self.log_prob_fn(x).detach() if (need_log_prob and self.log_prob_fn) else None
            return TargetValue(lp, grad)
        assert self.log_prob_fn is not None
        return TargetValue(*_value_and_grad(self.log_prob_fn, x))


def _value_and_grad(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """``fn(x)`` and its gradient by autograd, both detached."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        value = fn(xr)
        if not value.requires_grad:
            raise ValueError(
                "the log density does not depend differentiably on x (no autograd graph); "
                "pass its gradient explicitly, or use a gradient-free move"
            )
        # Non-finite values give non-finite gradients; keep them, the kernel rejects those moves.
        (grad,) = torch.autograd.grad(value.sum(), xr)
    return value.detach(), grad


class PosteriorTarget(Target):
    """``log p_t(x) + log p(y | x)``: the posterior of ``problem`` with the prior at noise level ``t``.

    ``noise_level = -1`` (clean) targets the posterior ``p(x | y)`` itself; a small ``t >= 0`` uses
    the noised prior marginal ``p_t`` instead (smoother, and the only choice for a network prior,
    whose score exists for ``t >= 0`` only). The prior's score comes from ``prior.score(x, t)`` (one
    network evaluation per particle); at ``t = -1`` it is the autograd gradient of
    ``prior.log_prob(x, -1)``. The density, needed by MALA's correction, exists only where
    ``prior.has_log_prob`` (e.g. :class:`~posterior.GaussianMixturePrior`).

    Args:
        problem: the (batched) inverse problem; needs ``noise_std > 0``.
        noise_level: integer time ``t`` in ``-1 .. T-1``.
        likelihood: include ``log p(y | x)`` (``False``: the prior alone, for tests).
        method: the name error messages give the sampler using this target.
    """

    def __init__(
        self,
        problem: InverseProblem,
        noise_level: int = CLEAN,
        likelihood: bool = True,
        method: str = "Langevin target",
    ) -> None:
        if not isinstance(problem, InverseProblem):
            raise TypeError(f"problem must be an InverseProblem, got {type(problem).__name__}")
        prior = problem.prior
        if not callable(getattr(prior, "score", None)):
            raise ValueError(f"{type(prior).__name__} has no score: Langevin kernels need grad log p_t")
        T = prior.schedule.num_train_steps
        if isinstance(noise_level, bool) or not isinstance(noise_level, int) or not CLEAN <= noise_level < T:
            raise ValueError(f"noise_level must be an integer time in -1..{T - 1}, got {noise_level!r}")
        if noise_level == CLEAN and not prior.has_log_prob:
            raise ValueError(
                f"{type(prior).__name__} has no score at the clean level (t = -1): it has neither a "
                "log density nor a denoiser at t = -1; choose noise_level >= 0 (e.g. 0)"
            )
        if check_bool(likelihood, "likelihood"):
            problem.require_noise(method)
            problem.require_differentiable(method)
        self.problem, self.noise_level, self.likelihood = problem, noise_level, likelihood
        self.has_log_prob = prior.has_log_prob

    def __call__(self, x: Tensor, need_log_prob: bool = True) -> TargetValue:
        prior, t = self.problem.prior, self.noise_level
        B, N = x.shape[:2]
        flat = x.reshape(B * N, *x.shape[2:])
        lp: Tensor | None
        if t == CLEAN and self.likelihood:  # one autograd pass for prior and likelihood

            def log_post(z: Tensor) -> Tensor:
                prior_lp = prior.log_prob(z.reshape(B * N, *z.shape[2:]), CLEAN).reshape(B, N)
                return prior_lp + self.problem.log_likelihood(z)

            lp, grad = _value_and_grad(log_post, x)
            return TargetValue(lp if need_log_prob else None, grad)
        if t == CLEAN:
            lp, grad = _value_and_grad(lambda z: prior.log_prob(z, CLEAN), flat)
        else:
            grad = prior.score(flat, t)
            lp = prior.log_prob(flat, t) if (need_log_prob and self.has_log_prob) else None
        grad = grad.reshape(x.shape)
        lp = None if lp is None else lp.reshape(B, N)
        if self.likelihood:
            ll, g = _value_and_grad(self.problem.log_likelihood, x)
            grad = grad + g
            lp = None if lp is None else lp + ll
        return TargetValue(lp if need_log_prob else None, grad)


# ---------------------------------------------------------------------------- kernels
class LangevinState(NamedTuple):
    """Chains at ``x: [B, N, *event]`` with the target's log density ``[B, N]`` (or ``None``) and
    gradient ``[B, N, *event]`` there (cached so a rejected move costs nothing)."""

    x: Tensor
    log_prob: Tensor | None
    grad: Tensor


def as_step_size(step_size: float | Tensor, B: int, like: Tensor, name: str = "step_size") -> Tensor:
    """A positive finite step size per problem, ``Tensor[B]`` on ``like``'s device and dtype."""
    h = torch.as_tensor(step_size, device=like.device, dtype=like.dtype)
    if h.dim() > 1 or (h.dim() == 1 and h.shape[0] not in (1, B)):
        raise ValueError(f"{name} must be a float or a Tensor[{B}], got shape {list(h.shape)}")
    if not torch.isfinite(h).all() or (h <= 0).any():
        raise ValueError(f"{name} must be positive and finite, got {step_size}")
    return h.expand(B).clone()


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """``v: [B]`` or ``[B, N]`` shaped to broadcast against ``x: [B, N, *event]``."""
    return v.reshape(*v.shape, *([1] * (x.dim() - v.dim())))


def _sum_event(v: Tensor) -> Tensor:
    return v.reshape(*v.shape[:2], -1).sum(-1)


class MALA:
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie, 1996) on ``B x N`` chains.

    Args:
        target: a :class:`Target` (e.g. :class:`PosteriorTarget`).
        step_size: ``h > 0``, a float or ``Tensor[B]`` (one per problem).
        metropolis: apply the MH correction (exact; needs ``target.has_log_prob``). ``False`` gives
            ULA, which is biased by ``O(h)``.
        preconditioner: optional ``Tensor[*event]`` diagonal mass ``M``: proposal
            ``x + h M grad + sqrt(2 h M) xi`` (default: identity).
    """

    def __init__(
        self,
        target: Target,
        step_size: float | Tensor,
        metropolis: bool = True,
        preconditioner: Tensor | None = None,
    ) -> None:
        if not isinstance(target, Target):
            raise TypeError(f"target must be a Target, got {type(target).__name__}")
        if check_bool(metropolis, "metropolis") and not target.has_log_prob:
            raise ValueError(
                "MALA's Metropolis-Hastings correction needs the target's log density, which this "
                "target does not have (a network prior has a score but no density): use "
                "metropolis=False (ULA, biased by O(step_size)) or a prior with log_prob"
            )
        h = torch.as_tensor(step_size)
        if not torch.isfinite(h).all() or (h <= 0).any():
            raise ValueError(f"step_size must be positive and finite, got {step_size}")
        if preconditioner is not None and (
            not torch.isfinite(preconditioner).all() or (preconditioner <= 0).any()
        ):
            raise ValueError("preconditioner must be positive and finite")
        self.target, self.step_size, self.metropolis = target, step_size, metropolis
        self.preconditioner = preconditioner

    def init(self, x: Tensor, warmup_steps: int = 0) -> LangevinState:
        """The state at ``x: [B, N, *event]`` (``warmup_steps``: unused, MALA does not adapt)."""
        if x.dim() < 3:
            raise ValueError(f"expected particles [B, N, *event_shape], got shape {list(x.shape)}")
        lp, grad = self.target(x, need_log_prob=self.metropolis)
        return LangevinState(x, lp, grad)

    def step(
        self, generator: torch.Generator, state: LangevinState, step_size: float | Tensor | None = None
    ) -> tuple[LangevinState, KernelInfo]:
        """One transition of every chain; ``step_size`` overrides the kernel's (``Tensor[B]``)."""
        x = state.x
        B = x.shape[0]
        h = _bcast(as_step_size(self.step_size if step_size is None else step_size, B, x), x)
        m = 1.0 if self.preconditioner is None else self.preconditioner.to(x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_new = x + h * m * state.grad + (2 * h * m).sqrt() * noise
        lp_new, grad_new = self.target(x_new, need_log_prob=self.metropolis)
        finite = torch.isfinite(_sum_event(x_new)) & torch.isfinite(_sum_event(grad_new))
        if not self.metropolis:
            ones = torch.ones(B, x.shape[1], device=x.device, dtype=x.dtype)
            return LangevinState(x_new, None, grad_new), KernelInfo(ones, finite, ~finite)
        assert lp_new is not None and state.log_prob is not None
        finite = finite & torch.isfinite(lp_new)

        # log q(a | b) = -|a - b - h M g(b)|^2_{M^-1} / (4 h): the Gaussian proposal density.
        def log_q(a: Tensor, b: Tensor, g_b: Tensor) -> Tensor:
            return -_sum_event((a - b - h * m * g_b).pow(2) / m) / (4 * h.reshape(B, 1))

        log_alpha = lp_new - state.log_prob + log_q(x, x_new, grad_new) - log_q(x_new, x, state.grad)
        log_alpha = torch.where(finite, log_alpha.nan_to_num(nan=-math.inf), -math.inf)
        u = torch.rand(log_alpha.shape, generator=generator, device=x.device, dtype=x.dtype)
        accept = u.log() < log_alpha
        a = _bcast(accept, x)
        new = LangevinState(
            torch.where(a, x_new, x),
            torch.where(accept, lp_new, state.log_prob),
            torch.where(a, grad_new, state.grad),
        )
        return new, KernelInfo(log_alpha.clamp(max=0).exp(), accept, ~finite)


class ULA(MALA):
    """Unadjusted Langevin algorithm: :class:`MALA` without the MH correction.

    Needs only the gradient. **Biased**: the chain's stationary law is ``pi`` only as
    ``step_size -> 0`` (error ``O(h)``).
    """

    def __init__(
        self, target: Target, step_size: float | Tensor, preconditioner: Tensor | None = None
    ) -> None:
        super().__init__(target, step_size, metropolis=False, preconditioner=preconditioner)
