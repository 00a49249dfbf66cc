"""MCMC moves for resample-move SMC (Gilks & Berzuini, JRSS-B 2001).

After each resampling the particle engine (:func:`posterior.particles.engine.run_smc`) may call
``move(particles, log_target_fn, generator) -> (particles, acceptance [B])``, where
``log_target_fn(x) -> [B, N]`` is the model's intermediate target at that step. A move that leaves
that target invariant keeps the particle system exact while replacing the duplicates made by
resampling with distinct particles.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from posterior.distributed.context import particle_mean
from posterior.kernels.langevin import MALA, FunctionTarget, as_step_size
from posterior.problem import InverseProblem

__all__ = ["MALAMove", "mala_move", "rejuvenate"]


class MALAMove:
    """``num_steps`` MALA steps on the engine's intermediate target; see :func:`mala_move`."""

    def __init__(
        self,
        num_steps: int = 1,
        step_size: float = 0.1,
        adapt: bool = True,
        target_accept: float = 0.574,
        gradient: bool = True,
    ) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        if (
            isinstance(step_size, bool)
            or not isinstance(step_size, (int, float))
            or not 0 < step_size < float("inf")
        ):
            raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
        self.num_steps, self.initial_step_size = num_steps, float(step_size)
        self.adapt, self.target_accept, self.gradient = adapt, target_accept, gradient
        self.step_size: Tensor | None = None  # [B], adapted across calls
        self.history: list[Tensor] = []  # mean acceptance [B] of each call

    def __call__(
        self, particles: Tensor, log_target_fn: Callable[[Tensor], Tensor], generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Move ``particles: [B, N, *event]``; returns the moved particles and acceptance ``[B]``."""
        B = particles.shape[0]
        if self.step_size is None or self.step_size.shape[0] != B:
            self.step_size = as_step_size(self.initial_step_size, B, particles)
        if self.gradient:
            target = FunctionTarget(log_target_fn)
        else:  # zero drift: a symmetric Gaussian random walk, accepted by the same MH rule
            target = FunctionTarget(log_target_fn, grad_fn=torch.zeros_like)
        kernel = MALA(target, self.step_size)
        state = kernel.init(particles)
        acc = particles.new_zeros(B)
        for _ in range(self.num_steps):
            state, info = kernel.step(state, generator)
            acc = acc + particle_mean(info.acceptance)
        acc = acc / self.num_steps
        if self.adapt:  # Robbins-Monro on log step size, used from the next call on
            self.step_size = self.step_size * torch.exp(acc - self.target_accept)
        self.history.append(acc)
        return state.x, acc


def mala_move(
    num_steps: int = 1,
    step_size: float = 0.1,
    adapt: bool = True,
    target_accept: float = 0.574,
    gradient: bool = True,
) -> MALAMove:
    """A resample-move kernel: ``num_steps`` MALA steps leaving ``exp(log_target_fn)`` invariant.

    Inside the particle samplers the intermediate target is ``p_t(x) g_t(x)`` with the prior's
    *continuous* marginal ``p_t``, where the particles target the K-step chain's marginal (which
    has no tractable density): with a move the sampler is consistent only as ``num_steps`` grows
    (measured in the README, "What exact means here").

    Args:
        num_steps: MALA steps per call (``k``).
        step_size: initial step size ``> 0``, one per problem.
        adapt: after each call, scale each problem's step size by ``exp(acceptance - target)``
            (the step size is fixed within a call, so each call is an exact MH kernel).
        target_accept: acceptance rate aimed at (0.574).
        gradient: ``True``: the gradient of ``log_target_fn`` by autograd (it must be
            differentiable); ``False``: zero drift, i.e. random-walk Metropolis (gradient-free).

    Returns:
        a callable ``move(particles [B, N, *event], log_target_fn, generator) -> (particles,
        acceptance [B])``, e.g. ``ps.sample(problem, "smc", move=mala_move(2))``.
    """
    return MALAMove(num_steps, step_size, adapt, target_accept, gradient)


def rejuvenate(
    samples: Tensor,
    problem: InverseProblem,
    move: Callable[..., tuple[Tensor, Tensor]],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Apply ``move`` to final equally weighted samples, on the posterior ``p(x) p(y | x)``.

    The engine moves particles after each intermediate resampling, not after the final one, so
    the returned samples keep that resampling's duplicates; this helper is the final move of
    resample-move. ``samples: [B, N, *event]`` (or ``[N, *event]`` for one problem); needs a
    prior with ``log_prob``. Returns the moved samples (same shape) and acceptance ``[B]``.
    """
    if not problem.prior.has_log_prob:
        raise ValueError(f"{type(problem.prior).__name__} has no log density: the final move needs one")
    unbatched = samples.dim() == len(problem.event_shape) + 1
    x = samples[None] if unbatched else samples
    prior = problem.prior

    def log_post(z: Tensor) -> Tensor:
        B, N = z.shape[:2]
        return prior.log_prob(z.reshape(B * N, *z.shape[2:])).reshape(B, N) + problem.log_likelihood(z)

    moved, acc = move(x, log_post, generator)
    return (moved[0] if unbatched else moved), acc
