"""MALA (or ULA) with its step size adapted during warm-up, the adaptation carried in the state.

Dual averaging (Hoffman & Gelman, JMLR 2014, Algorithm 5) of ``log step_size`` towards a target
acceptance rate, per problem, during the first ``warmup_steps`` transitions; afterwards the step
size is frozen at the averaged value, so the post-warm-up chain is a time-homogeneous,
``pi``-invariant Markov chain.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import check_bool, check_fraction, check_int
from posterior.distributed.context import particle_mean
from posterior.kernels.chains import KernelInfo
from posterior.kernels.langevin import MALA, LangevinState, Target, as_step_size

__all__ = ["AdaptiveMALA", "AdaptiveMALAState", "DualAveraging", "DualAveragingState"]


class DualAveragingState(NamedTuple):
    """Per-problem dual-averaging state (all ``Tensor[B]``) and the iteration count."""

    log_step: Tensor
    log_step_avg: Tensor
    h_bar: Tensor
    mu: Tensor
    count: int


class DualAveraging:
    """Nesterov dual averaging of ``log step_size`` to a target acceptance rate, per problem.

    Algorithm 5 of Hoffman & Gelman (JMLR 2014, the NUTS paper), with their defaults. The
    statistic is the mean acceptance probability of the ``N`` chains of each problem.

    Args:
        target_accept: desired mean acceptance (0.574 is optimal for MALA: Roberts & Rosenthal, 1998).
    """

    def __init__(
        self, target_accept: float = 0.574, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75
    ) -> None:
        check_fraction(target_accept, "target_accept", open_interval=True)
        self.target_accept, self.gamma, self.t0, self.kappa = target_accept, gamma, t0, kappa

    def init(self, step_size: Tensor) -> DualAveragingState:
        log_h = step_size.log()
        return DualAveragingState(log_h, log_h.clone(), torch.zeros_like(log_h), math.log(10.0) + log_h, 0)

    def update(self, state: DualAveragingState, acceptance: Tensor) -> DualAveragingState:
        """One update from the mean acceptance ``Tensor[B]`` of the last step."""
        m = state.count + 1
        w = 1.0 / (m + self.t0)
        h_bar = (1 - w) * state.h_bar + w * (self.target_accept - acceptance.nan_to_num(0.0))
        log_h = state.mu - math.sqrt(m) / self.gamma * h_bar
        eta = m ** (-self.kappa)
        avg = eta * log_h + (1 - eta) * state.log_step_avg
        return DualAveragingState(log_h, avg, h_bar, state.mu, m)

    @staticmethod
    def step_size(state: DualAveragingState, final: bool = False) -> Tensor:
        """The step size to use next (``final``: the averaged one, for after warm-up)."""
        return (state.log_step_avg if final else state.log_step).exp()


class AdaptiveMALAState(NamedTuple):
    """Chains of :class:`AdaptiveMALA`: the Langevin state and the adaptation."""

    x: Tensor  # [B, N, *event]
    log_prob: Tensor | None  # [B, N]
    grad: Tensor  # [B, N, *event]
    step_size: Tensor  # [B]: the step size the next transition uses
    averaging: DualAveragingState | None  # None without adaptation
    iteration: int  # transitions done
    warmup_steps: int  # the first ones adapt the step size


class AdaptiveMALA:
    """MALA (or ULA) with per-problem step-size adaptation during warm-up.

    The kernel of the ``"mala"`` sampler and of the pyro adapter:
    ``state = kernel.init(x, warmup_steps)``, then ``state, info = kernel.step(generator, state)``.
    During the first ``warmup_steps`` transitions the step size of each problem follows dual
    averaging towards ``target_accept``; after them it is frozen at the averaged value.

    Args:
        target: the :class:`~posterior.kernels.Target`.
        step_size: initial step size ``> 0`` (float or ``Tensor[B]``).
        metropolis: MALA (``True``, exact) or ULA (``False``, biased).
        adapt: adapt the step size during warm-up.
        target_accept: acceptance rate aimed at by the adaptation.
    """

    def __init__(
        self,
        target: Target,
        step_size: float | Tensor = 0.1,
        metropolis: bool = True,
        adapt: bool = True,
        target_accept: float = 0.574,
    ) -> None:
        self.kernel = MALA(target, step_size, metropolis)
        self.adapt = check_bool(adapt, "adapt")
        self.averager = DualAveraging(target_accept)
        self.initial_step_size = step_size

    @property
    def metropolis(self) -> bool:
        return self.kernel.metropolis

    def init(self, x: Tensor, warmup_steps: int = 0) -> AdaptiveMALAState:
        """Chains at ``x: [B, N, *event]``, the first ``warmup_steps`` transitions adapting."""
        check_int(warmup_steps, "warmup_steps")
        h = as_step_size(self.initial_step_size, x.shape[0], x)
        averaging = self.averager.init(h) if self.adapt else None
        return AdaptiveMALAState(*self.kernel.init(x), h, averaging, 0, warmup_steps)

    def step(
        self, generator: torch.Generator, state: AdaptiveMALAState
    ) -> tuple[AdaptiveMALAState, KernelInfo]:
        """One transition of every chain (adapting the step size while warming up)."""
        moved, info = self.kernel.step(generator, LangevinState(*state[:3]), state.step_size)
        h, averaging = state.step_size, state.averaging
        if averaging is not None and state.iteration < state.warmup_steps:
            averaging = self.averager.update(averaging, particle_mean(info.acceptance))
            h = DualAveraging.step_size(averaging, final=state.iteration == state.warmup_steps - 1)
        return AdaptiveMALAState(*moved, h, averaging, state.iteration + 1, state.warmup_steps), info
