"""MCMC moves for resample-move SMC (Gilks & Berzuini, JRSS-B 2001).

After each resampling the particle engine (:func:`posterior.particles.engine.run_smc`) may call
``move(particles, log_target_fn, generator) -> (particles, acceptance [B])``, where
``log_target_fn(x) -> [B, N]`` is the model's intermediate target at that step. A move that leaves
that target invariant keeps the particle system exact while replacing the duplicates made by
resampling with distinct particles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import check_bool, check_fraction, check_positive, check_positive_int
from posterior.distributed.context import particle_mean
from posterior.kernels.langevin import MALA, FunctionTarget, as_step_size
from posterior.problem import InverseProblem

__all__ = ["MALAMove", "MoveState", "mala_move", "rejuvenate"]


class MoveState(NamedTuple):
    """The adaptation of a :class:`MALAMove` along one particle run."""

    step_size: Tensor  # [B]: the step size of the next call
    calls: int  # moves done in this run


class MALAMove:
    """``num_steps`` MALA steps on the engine's intermediate target; see :func:`mala_move`.

    The options are fixed; the step size adapted from one call to the next lives in a
    :class:`MoveState`. Functional use: ``state = move.init(particles)``, then
    ``particles, acceptance, state = move.step(generator, state, particles, log_target_fn)``.
    As the engine's ``move(particles, log_target_fn, generator)`` callable, the state belongs to
    the run the generator is drawing for: a call with another generator (a new run) starts again
    from ``step_size``, so reusing a move object never carries one run's adaptation into the next.
    """

    def __init__(
        self,
        num_steps: int = 1,
        step_size: float = 0.1,
        adapt: bool = True,
        target_accept: float = 0.574,
        gradient: bool = True,
    ) -> None:
        self.num_steps = check_positive_int(num_steps, "num_steps")
        self.initial_step_size = check_positive(step_size, "step_size")
        self.target_accept = check_fraction(target_accept, "target_accept", open_interval=True)
        self.adapt, self.gradient = check_bool(adapt, "adapt"), check_bool(gradient, "gradient")
        self._run: tuple[torch.Generator, MoveState] | None = None

    @property
    def step_size(self) -> Tensor | None:
        """``Tensor[B]``: the adapted step size after the last call (``None`` before any)."""
        return None if self._run is None else self._run[1].step_size

    def init(self, particles: Tensor) -> MoveState:
        """The state of a new run on ``particles: [B, N, *event]``."""
        return MoveState(as_step_size(self.initial_step_size, particles.shape[0], particles), 0)

    def step(
        self,
        generator: torch.Generator,
        state: MoveState,
        particles: Tensor,
        log_target_fn: Callable[[Tensor], Tensor],
    ) -> tuple[Tensor, Tensor, MoveState]:
        """Move ``particles: [B, N, *event]``; returns the moved particles, the acceptance ``[B]``
        and the state of the next call (step size scaled by ``exp(acceptance - target)`` if
        ``adapt``: the step size is fixed within a call, so each call is an exact MH kernel)."""
        B = particles.shape[0]
        if self.gradient:
            target = FunctionTarget(log_target_fn)
        else:  # zero drift: a symmetric Gaussian random walk, accepted by the same MH rule
            target = FunctionTarget(log_target_fn, grad_fn=torch.zeros_like)
        kernel = MALA(target, state.step_size)
        chains = kernel.init(particles)
        acc = particles.new_zeros(B)
        for _ in range(self.num_steps):
            chains, info = kernel.step(generator, chains)
            acc = acc + particle_mean(info.acceptance)
        acc = acc / self.num_steps
        h = state.step_size * torch.exp(acc - self.target_accept) if self.adapt else state.step_size
        return chains.x, acc, MoveState(h, state.calls + 1)

    def __call__(
        self, particles: Tensor, log_target_fn: Callable[[Tensor], Tensor], generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """The engine's move: :meth:`step` with the state of the run ``generator`` belongs to."""
        state = self._run[1] if self._run is not None and self._run[0] is generator else None
        if state is None or state.step_size.shape[0] != particles.shape[0]:
            state = self.init(particles)
        moved, acc, state = self.step(generator, state, particles, log_target_fn)
        self._run = (generator, state)
        return moved, acc


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
