"""The active communicator: what reductions over particles inside a sampler run go through.

``ps.sample(..., distributed=True)`` runs the sampler inside :func:`use_communicator`, so code deep
in a sampler (a kernel averaging its acceptance over chains to adapt a step size, the engine) reduces
over the particles of every rank without a communicator argument on every function.
Outside it, :func:`current_communicator` is the single-process :class:`Communicator`, whose
reductions are the plain local ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from torch import Tensor

from posterior.distributed.comm import Communicator

__all__ = ["LOCAL", "current_communicator", "particle_mean", "particle_sum", "use_communicator"]

#: the single-process communicator
LOCAL = Communicator()

_ACTIVE: ContextVar[Communicator] = ContextVar("posterior_communicator", default=LOCAL)


def current_communicator() -> Communicator:
    """The communicator of the enclosing :func:`use_communicator` block (else :data:`LOCAL`)."""
    return _ACTIVE.get()


@contextmanager
def use_communicator(comm: Communicator) -> Iterator[Communicator]:
    """Make ``comm`` the active communicator inside the block."""
    token = _ACTIVE.set(comm)
    try:
        yield comm
    finally:
        _ACTIVE.reset(token)


def particle_mean(v: Tensor) -> Tensor:
    """``v: [B, n]`` averaged over the particles (chains) of every rank: ``[B]``
    (``v.mean(1)`` in a single process)."""
    return _ACTIVE.get().mean(v)


def particle_sum(v: Tensor) -> Tensor:
    """``v: [B, n]`` summed over the particles (chains) of every rank: ``[B]``."""
    return _ACTIVE.get().sum(v)
