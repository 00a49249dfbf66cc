"""Conditional SMC with ancestor sampling: the Markov kernel of particle Gibbs.

Andrieu, Doucet & Holenstein, "Particle Markov chain Monte Carlo methods", JRSS B 2010 (conditional
SMC, particle Gibbs); Lindsten, Jordan & Schön, "Particle Gibbs with ancestor sampling", JMLR 2014.

A Feynman-Kac model defines a path target ``gamma(x_{T:0})``: for the diffusion samplers the
``K``-step reverse chain times the likelihood of its end, ``p(x_T) prod_k p(x_s | x_t) p(y | x_0)``.
Given a reference path ``x'`` drawn from it, one sweep runs the particle system with particle ``0``
held on ``x'``: at each step ``t -> s`` the ``N - 1`` other particles move by the model's proposal
and the reference keeps its state ``x'_s``. Where the ESS falls below ``threshold * N`` (adaptive
resampling; the decision is symmetric in the particles, so the sweep stays a conditional SMC),
the other particles first pick their ancestors among all ``N`` by their weights (multinomially)
and the reference redraws its ancestor with probability

    W_t^i f(x'_s | x_t^i) / g_t(x_t^i)        (ancestor sampling),

the path target's factor joining ``x'_s`` to particle ``i``'s past (``f`` the prior's reverse
kernel, ``g_t`` the twist at ``t``). At the end one particle is drawn by its weight and its path
traced back: the next reference. The sweep leaves the path target invariant for any ``N >= 2``, so a
chain of sweeps is an exact MCMC at a fixed particle count: it converges as its iterations grow.
How fast depends on the weights' spread: a free particle replaces the reference only where it
outweighs it, and ancestor sampling only where ``f`` is wide enough to join ``x'_s`` to another
past. Resampling only when needed keeps the free particles' pasts apart (each resampling tends to
merge them into the reference's), so a sweep can replace the whole path.

Without a reference the same loop is a plain SMC with adaptive multinomial resampling whose traced
path is a draw to start a chain with.

The model needs, besides :meth:`~posterior.particles.feynman_kac.FeynmanKacModel.init` and ``step``:
``start_at(x)`` (the extras and initial log potential of given start states), ``weigh(t, s, x,
extras, x_s)`` (the extras at a given ``x_s`` and the potential of the move to it) and
``log_transition(t, s, x, extras, x_s)`` (``log f(x_s | x_t^i) - log g_t(x_t^i)`` up to a constant,
``None`` where the step is deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from posterior.distributed.context import LOCAL
from posterior.particles.engine import _gather, _reweight_rows
from posterior.particles.feynman_kac import Extras, FeynmanKacModel
from posterior.particles.resampling import ess

__all__ = ["Sweep", "conditional_smc"]


class Sweep(NamedTuple):
    """One sweep's output.

    Attributes:
        path: ``Tensor[B, K + 1, *event]``, the drawn path, ``x_T`` first and ``x_0`` last.
        log_evidence: ``Tensor[B]``, the sweep's estimate of ``log Z`` (conditional on the
            reference: not unbiased for ``Z``).
        ess: ``Tensor[B, K]`` after each step's reweighting.
        changed: ``BoolTensor[B, K + 1]``, which states of the path differ from the reference's
            (all ``True`` without one).
        failed: ``BoolTensor[B]``, the problems whose every particle's weight became zero (their
            path is not a draw of the target; see :func:`~posterior.particles.engine.run_smc`).
    """

    path: Tensor
    log_evidence: Tensor
    ess: Tensor
    changed: Tensor
    failed: Tensor | None = None


def conditional_smc(
    model: FeynmanKacModel,
    time_pairs: Sequence[tuple[int, int]],
    batch_size: int,
    num_particles: int,
    generator: torch.Generator,
    reference: Tensor | None = None,
    ancestor_sampling: bool = True,
    threshold: float = 0.5,
    name: str | None = None,
) -> Sweep:
    """One conditional SMC sweep of ``B`` problems at once (module docstring).

    Args:
        model: the Feynman-Kac model (with ``start_at``, ``weigh`` and ``log_transition``).
        time_pairs: ``[(t, s), ...]``, ``K`` reverse transitions.
        batch_size: ``B``. num_particles: ``N >= 2`` (``>= 1`` without a reference).
        generator: every random draw uses it.
        reference: ``Tensor[B, K + 1, *event]``, the current path, or ``None`` for a plain SMC.
        ancestor_sampling: redraw the reference's ancestor at each resampling (else it keeps
            its own past).
        threshold: resample a problem's particles when their ESS is below ``threshold * N``
            (``1``: at every step); between resamplings the weights accumulate and every particle,
            the reference included, keeps its own past.
        name: the method named in errors (default: the model's).

    Returns:
        a :class:`Sweep`.
    """
    B, N, K = batch_size, num_particles, len(time_pairs)
    if reference is not None and N < 2:
        raise ValueError(f"conditional SMC needs num_particles >= 2 (one is the reference), got {N}")
    free = N if reference is None else N - 1
    x, extras, log_g = model.init(B, free, generator, generator)
    if log_g is None:
        log_g = x.new_zeros(B, free)
    if reference is not None:
        if reference.shape[:2] != (B, K + 1):
            raise ValueError(
                f"reference must be [B, K + 1, ...] = [{B}, {K + 1}, ...], got {list(reference.shape)}"
            )
        x, extras, log_g = _join(reference[:, :1], *model.start_at(reference[:, :1]), x, extras, log_g)
    what = name or model.name
    uniform = log_g.new_full((B, N), -math.log(N))
    failed = torch.zeros(B, dtype=torch.bool, device=x.device)
    log_w, log_z, failed = _reweight_rows(uniform, log_g, f"{what}: conditional SMC start", LOCAL, failed)
    identity = torch.arange(N, device=x.device).expand(B, N)
    states, ancestry = [x], []
    ess_trace = x.new_empty(B, K)
    for k, (t, s) in enumerate(time_pairs):
        anc, base = identity, log_w
        resample = ess(log_w) < threshold * N  # [B]
        if resample.any():
            # i.i.d. multinomial ancestors (the reference's redrawn below) where a problem resamples
            draws = torch.multinomial(log_w.exp(), N, replacement=True, generator=generator)
            if reference is not None:
                draws[:, 0] = 0  # the reference keeps its own past ...
                link = (
                    model.log_transition(t, s, x, extras, reference[:, k + 1 : k + 2])
                    if ancestor_sampling
                    else None
                )
                if link is not None:  # ... or joins another's (ancestor sampling)
                    joined = torch.softmax(log_w + link, -1)
                    draws[:, 0] = torch.multinomial(joined, 1, generator=generator).squeeze(1)
            anc = torch.where(resample[:, None], draws, identity)
            base = torch.where(resample[:, None], uniform, log_w)
        x_t, e_t = _gather(x, anc), {key: _gather(v, anc) for key, v in extras.items()}
        if reference is None:
            x, extras, log_g = model.step(t, s, x_t, e_t, base, generator)
        else:
            ref_s = reference[:, k + 1 : k + 2]
            x_new, e_new, g_new = model.step(
                t, s, x_t[:, 1:], _rows(e_t, slice(1, None)), base[:, 1:], generator
            )
            e_ref, g_ref = model.weigh(t, s, x_t[:, :1], _rows(e_t, slice(0, 1)), ref_s)
            x, extras, log_g = _join(ref_s, e_ref, g_ref, x_new, e_new, g_new)
        step = f"{what}: conditional SMC step {k} (t={t})"
        log_w, inc, failed = _reweight_rows(base, log_g, step, LOCAL, failed)
        log_z = log_z + inc
        ess_trace[:, k] = ess(log_w)
        states.append(x)
        ancestry.append(anc)
    idx = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(1)  # [B]: the drawn particle
    rows = torch.arange(B, device=x.device)
    path = [states[K][rows, idx]]
    for k in range(K - 1, -1, -1):
        idx = ancestry[k][rows, idx]
        path.append(states[k][rows, idx])
    out = torch.stack(path[::-1], 1)
    changed = (
        torch.ones(B, K + 1, dtype=torch.bool, device=x.device)
        if reference is None
        else (out != reference).flatten(2).any(-1)
    )
    return Sweep(out, log_z, ess_trace, changed, failed)


def _rows(extras: Extras, part: slice) -> Extras:
    """The extras of the particles ``part``."""
    return {key: v[:, part] for key, v in extras.items()}


def _join(
    x0: Tensor, e0: Extras, g0: Tensor, x: Tensor, extras: Extras, log_g: Tensor
) -> tuple[Tensor, Extras, Tensor]:
    """The reference particle ``[B, 1, ...]`` put in front of the free ones ``[B, N - 1, ...]``."""
    joined = {key: torch.cat([e0[key], extras[key]], 1) for key in extras}
    return torch.cat([x0, x], 1), joined, torch.cat([g0, log_g], 1)
