"""The kernel protocol and the one chain driver every MCMC method runs on.

A kernel is a small object holding its fixed options; everything that changes along a run lives in
its state, a :class:`typing.NamedTuple`, as in blackjax:

    state = kernel.init(x, warmup_steps)          # x: [B, N, *event]
    state, info = kernel.step(generator, state)   # one transition of every chain

The state's first field is the chains' position ``x: [B, N, *event]``; adaptation (MALA's step
size, split Gibbs' annealed ``rho`` and its likelihood step's scale) is part of the state, with
the iteration count and the number of warm-up iterations, so a kernel object can run any number
of chains and runs without carrying anything from one to the next. :func:`run_mcmc` drives a
kernel for the ``"mala"`` and ``"gibbs"`` samplers; :class:`~posterior.kernels.pyro.PyroKernel`
puts the same kernels under ``pyro.infer.MCMC``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from posterior._utils import progress_bar
from posterior.distributed.context import particle_mean, particle_sum

__all__ = ["POSITION_FIELDS", "ChainKernel", "ChainOutput", "KernelInfo", "restart", "run_mcmc"]

#: State fields that ``init`` computes from the position (the rest is adaptation and counters).
POSITION_FIELDS = ("x", "log_prob", "grad", "z")


class KernelInfo(NamedTuple):
    """What one transition did, per chain."""

    acceptance: Tensor  # [B, N] Metropolis acceptance probability (1 where no MH step)
    accepted: Tensor  # [B, N] bool
    divergent: Tensor  # [B, N] bool: proposal (or, for ULA, new state) not finite


class ChainKernel(Protocol):
    """What :func:`run_mcmc` and the pyro adapter need of a kernel."""

    def init(self, x: Tensor, warmup_steps: int = 0) -> Any:
        """The state (a NamedTuple whose field ``x`` is the position) of chains at ``x: [B, N,
        *event]``, whose first ``warmup_steps`` transitions adapt (or anneal)."""
        ...

    def step(self, generator: torch.Generator, state: Any) -> tuple[Any, KernelInfo]:
        """One transition of every chain; adaptation, if any, is carried in the returned state."""
        ...


class ChainOutput(NamedTuple):
    """What :func:`run_mcmc` returns."""

    samples: Tensor  # [B, N, *event] final states
    acceptance: Tensor  # [B, num_steps] mean acceptance over the chains of every rank
    stats: dict[str, Tensor]  # "divergences" [B, num_steps], traces, "chain" if kept


def restart(kernel: ChainKernel, state: Any, x: Tensor) -> Any:
    """``state`` moved to ``x: [B, N, *event]``: the fields in :data:`POSITION_FIELDS` from
    ``kernel.init(x)``, the adaptation, iteration and warm-up of ``state`` kept."""
    fresh = kernel.init(x, state.warmup_steps)
    return state._replace(**{k: getattr(fresh, k) for k in fresh._fields if k in POSITION_FIELDS})


def run_mcmc(
    name: str,
    kernel: ChainKernel,
    x0: Tensor,
    num_steps: int,
    burn_in: int,
    generator: torch.Generator,
    thin: int = 1,
    keep_chain: bool = False,
    progress: bool = False,
    trace: Mapping[str, Callable[[Any], Tensor | float]] | None = None,
) -> ChainOutput:
    """Run ``num_steps`` transitions of ``kernel`` from ``x0: [B, N, *event]``.

    The first ``burn_in`` transitions are the kernel's warm-up (``kernel.init(x0, burn_in)``). A
    chain whose state becomes NaN or inf raises ``FloatingPointError`` naming ``name`` and the
    iteration: divergent chains are reported, never returned.

    Returns the final states, the mean acceptance ``[B, num_steps]`` and stats:
    ``"divergences"`` ``[B, num_steps]`` (rejected non-finite proposals); ``"chain"``
    ``[B, N, draws, *event]`` if ``keep_chain`` (iterations ``burn_in + thin - 1, ...`` every
    ``thin``); and for each ``trace[k]``, ``trace[k](state)`` of the state each transition starts
    from (e.g. the step size it uses), a float or ``Tensor[B]``, stacked to ``[B, num_steps]``.
    """
    B, N = x0.shape[:2]
    state = kernel.init(x0, burn_in)
    acceptance = x0.new_zeros(B, num_steps)
    divergences = x0.new_zeros(B, num_steps)
    traces: dict[str, list[Tensor]] = {k: [] for k in (trace or {})}
    draws: list[Tensor] = []
    for i in progress_bar(range(num_steps), enabled=progress, desc=name):
        for k, fn in (trace or {}).items():
            traces[k].append(torch.as_tensor(fn(state), dtype=x0.dtype, device=x0.device).expand(B))
        state, info = kernel.step(generator, state)
        x = state.x
        bad = ~torch.isfinite(x.reshape(B, N, -1)).all(-1)
        if bad.any():
            raise FloatingPointError(
                f"{name}: {int(bad.sum())} of {B * N} chains diverged (NaN or inf) at iteration {i}; "
                "reduce the step size"
            )
        acceptance[:, i] = particle_mean(info.acceptance)  # over the chains of every rank
        divergences[:, i] = particle_sum(info.divergent.to(x0.dtype))
        if keep_chain and i >= burn_in and (i - burn_in + 1) % thin == 0:
            draws.append(x.clone())
    stats: dict[str, Tensor] = {"divergences": divergences}
    stats.update({k: torch.stack(v, 1) for k, v in traces.items()})
    if keep_chain:
        stats["chain"] = torch.stack(draws, 2) if draws else x0.new_zeros(B, N, 0, *x0.shape[2:])
    return ChainOutput(state.x, acceptance, stats)
