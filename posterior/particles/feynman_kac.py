"""The Feynman-Kac model: what a particle sampler tells the engine, holding no particle state.

A model describes a sequence of targets through an initial distribution and, for each diffusion
step ``k: t -> s``, a proposal ``M_k`` and a log potential ``log G_k`` (the log importance weight
of the move, e.g. ``log p(x_s|x_t) + log g_s(x_s) - log q(x_s|x_t) - log g_t(x_t)`` for twisted
samplers), as in Chopin & Papaspiliopoulos (2020, ch. 5) and the ``particles`` library.

Everything a particle carries lives in the arguments: the particles ``x: [B, N, *event]`` and
``extras``, a dict of per-particle tensors ``[B, N, ...]`` (the denoiser's predictions at ``x``,
the twist's value and gradient there, a pseudo-observation path, a tempering exponent). The engine
resamples ``extras`` with the particles (the ancestors index both), so a particle's extras always
describe that particle. The model itself holds only the problem and its options: the same model
can run twice, in any order, with the same result for the same generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Extras", "FeynmanKacModel", "Move"]

#: Per-particle quantities ``{name: Tensor[B, N, ...]}`` resampled with the particles.
Extras = dict[str, Tensor]

#: ``move(particles, log_target_fn, generator) -> (particles, acceptance [B])``: an MCMC kernel
#: leaving ``exp(log_target_fn(x))`` invariant, applied after each resampling.
Move = Callable[[Tensor, Callable[[Tensor], Tensor], torch.Generator], tuple[Tensor, Tensor]]


class FeynmanKacModel:
    """Base class of the samplers' Feynman-Kac models.

    Subclasses implement :meth:`init` and :meth:`step`; :meth:`log_target` and :meth:`refresh` are
    needed only by MCMC moves (resample-move), :meth:`gibbs` only by rejuvenation.

    Randomness: ``generator`` draws what is particle-wise (in a distributed run it is the rank's
    own); ``shared`` (in :meth:`init`) draws what every particle has in common, identically on every
    rank (the very ``generator`` in a single process). A model runs under the engine's communicator
    (:func:`~posterior.distributed.context.current_communicator`), so sums over particles it needs
    span every rank.
    """

    name: str = "smc"

    def init(
        self, B: int, N: int, generator: torch.Generator, shared: torch.Generator
    ) -> tuple[Tensor, Extras, Tensor | None]:
        """Initial particles ``[B, N, *event]``, their extras and an optional initial log
        potential ``[B, N]``."""
        raise NotImplementedError

    def step(
        self, t: int, s: int, x: Tensor, extras: Extras, log_weights: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Extras, Tensor]:
        """Propose ``x_s`` from ``x_t``; return ``(x_s, extras at x_s, log G [B, N])``.

        ``log_weights: [B, N]`` are the normalised weights of the incoming particles (adaptive
        choices, such as a tempering exponent, may depend on them)."""
        raise NotImplementedError

    def gibbs(
        self, t: int, s: int, x: Tensor, extras: Extras, generator: torch.Generator
    ) -> tuple[Tensor, Extras]:
        """An exact Gibbs move of the path target after the step ``t -> s``: each particle's
        ``x_s`` redrawn from its conditional given the rest of its path (with the extras that go
        with it). The engine applies it after a resampling, where copies of one particle would
        otherwise stay identical. Default: no move."""
        return x, extras

    def log_target(self, s: int, x: Tensor, extras: Extras) -> Tensor:
        """Unnormalised log density ``[B, N]`` of the intermediate target at time ``s`` (the
        particles' law after the step into ``s``), differentiable in ``x``; ``extras`` are those
        of the particles before the move (for what does not depend on ``x``)."""
        raise NotImplementedError(f"{self.name!r} has no intermediate log target for MCMC moves")

    def refresh(self, s: int, x: Tensor, extras: Extras) -> Extras:
        """The extras of particles ``x`` at time ``s`` that an MCMC move has just changed,
        recomputed from ``x`` (what does not depend on ``x`` is kept from ``extras``)."""
        raise NotImplementedError(f"{self.name!r} cannot recompute its extras after an MCMC move")

    def start_at(self, x: Tensor) -> tuple[Extras, Tensor]:
        """The extras and the initial log potential ``[B, M]`` of given start states
        ``x: [B, M, *event]`` (conditional SMC's reference)."""
        raise NotImplementedError(f"{self.name!r} cannot start at a given state (conditional SMC)")

    def weigh(self, t: int, s: int, x: Tensor, extras: Extras, x_s: Tensor) -> tuple[Extras, Tensor]:
        """The extras at a given ``x_s: [B, M, *event]`` and the log potential ``[B, M]`` of the
        move ``x -> x_s`` that :meth:`step` would have weighed (conditional SMC's reference)."""
        raise NotImplementedError(f"{self.name!r} cannot weigh a given move (conditional SMC)")

    def log_transition(self, t: int, s: int, x: Tensor, extras: Extras, x_s: Tensor) -> Tensor | None:
        """``log f(x_s | x_t^i) - log g_t(x_t^i)`` up to a constant, ``[B, N]``, for a given
        ``x_s: [B, 1, *event]``: the path target's factor joining ``x_s`` to particle ``i``'s past
        (ancestor sampling), or ``None`` where the step is deterministic."""
        raise NotImplementedError(f"{self.name!r} has no transition density (ancestor sampling)")
