"""One loop that runs every exact sampler: a Feynman-Kac particle system with resampling.

A sampler is a :class:`FeynmanKacModel`: an initial distribution (with an optional initial log
potential), and at each diffusion step ``k: t -> s`` a proposal ``M_k`` that moves the particles
and returns the log potential increment ``log G_k`` (the log importance weight of the move, e.g.
``log p(x_s|x_t) + log g_s(x_s) - log q(x_s|x_t) - log g_t(x_t)`` for twisted samplers). The engine
(Del Moral, 2004; Chopin & Papaspiliopoulos, 2020, Alg. 10.1) keeps normalised log-weights in log
space, records the effective sample size, resamples adaptively (the particles together with their
per-particle ``extras``), accumulates the log-evidence
``log Z = sum_k log sum_i W_i^{k-1} G_k(x_i)`` (valid under adaptive resampling because the weights
are carried over when no resampling happens), optionally rejuvenates resampled particles with an
MCMC move (resample-move, Gilks & Berzuini, 2001), and ends with a resampling to equally
weighted draws.

Everything is batched over ``B`` independent problems: particles ``[B, N, *event_shape]``,
log-weights ``[B, N]``; resampling decisions are made per problem.

Across processes (a :class:`~posterior.distributed.comm.Communicator` with several ranks, as
``ps.sample(..., distributed=True)`` sets up) each rank holds a block of the ``N`` particles of
every problem and draws their noise from its own generator; weights are normalised, the ESS and
the evidence computed over all ranks; ancestors are drawn from the all-gathered weights with a
generator shared by every rank (the same draw everywhere), and only the particles (with the
their extras) that a resampling moves to another rank travel
(:mod:`posterior.distributed.exchange`). The final draws are all-gathered: every rank returns the
same output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import progress_bar
from posterior.distributed.comm import Communicator
from posterior.distributed.context import current_communicator, use_communicator
from posterior.particles.degeneracy import (
    DEGENERATE_ESS,
    DEGENERATE_FRACTION,
    ParticleDegeneracyWarning,
    count_distinct,
    warn_if_coalesced,
    warn_if_degenerate,
    warn_if_failed,
)
from posterior.particles.feynman_kac import Extras, FeynmanKacModel, Move
from posterior.particles.resampling import RESAMPLERS, ess

__all__ = [
    "DEGENERATE_ESS",
    "DEGENERATE_FRACTION",
    "FeynmanKacModel",
    "Move",
    "ParticleDegeneracyWarning",
    "ParticleState",
    "SMCOutput",
    "check_resampling_options",
    "run_smc",
    "warn_if_degenerate",
    "warn_if_failed",
]


class ParticleState(NamedTuple):
    """The particle system between two steps.

    Attributes:
        particles: ``Tensor[B, N, *event_shape]``.
        extras: the model's per-particle quantities ``{name: Tensor[B, N, ...]}``.
        log_weights: ``Tensor[B, N]``, normalised (``logsumexp`` over ``N`` is ``0``).
        log_evidence: ``Tensor[B]``, running estimate of ``log Z``.
        ancestors: ``LongTensor[B, N]`` of the last resampling (identity where none happened).
    """

    particles: Tensor
    extras: Extras
    log_weights: Tensor
    log_evidence: Tensor
    ancestors: Tensor | None = None


@dataclass
class SMCOutput:
    """What :func:`run_smc` returns (all batched over ``B``).

    Attributes:
        samples: ``Tensor[B, N, *event_shape]``, equally weighted after the final resampling.
        log_weights: ``Tensor[B, N]``, normalised log-weights before the final resampling.
        particles: ``Tensor[B, N, *event_shape]``, the weighted particles before it.
        ess: ``Tensor[B, num_steps]``, effective sample size after each reweighting.
        resampled: ``BoolTensor[B, num_steps]``, resampling after each step (the last is the final).
        log_evidence: ``Tensor[B]``.
        acceptance: ``Tensor[B, num_steps]`` of the move (NaN where none ran), or ``None``.
        genealogy: ``LongTensor[B, num_steps, N]`` ancestors per step, when asked for.
        lineages: ``LongTensor[B]``, the number of distinct particles half way through the chain
            (before step ``num_steps // 2``) that the equally weighted ``samples`` descend from
            (path degeneracy; :func:`~posterior.particles.degeneracy.warn_if_coalesced`).
        state: the weighted :class:`ParticleState` before the final resampling (its
            ``ancestors`` are those of the final resampling).
        failed: ``BoolTensor[B]``, the problems whose every particle's weight became zero (their
            ``log_evidence`` is ``-inf``, an estimate ``Z = 0``; their ``samples`` are NaN).
    """

    samples: Tensor
    log_weights: Tensor
    particles: Tensor
    ess: Tensor
    resampled: Tensor
    log_evidence: Tensor
    acceptance: Tensor | None = None
    genealogy: Tensor | None = None
    state: ParticleState | None = None
    failed: Tensor | None = None
    lineages: Tensor | None = None


def check_resampling_options(resampling: str, threshold: float | str) -> None:
    """``ValueError`` naming the option for an unknown scheme or a bad threshold."""
    if resampling not in RESAMPLERS:
        raise ValueError(f"unknown resampling {resampling!r}; use one of {', '.join(RESAMPLERS)}")
    if isinstance(threshold, str):
        if threshold not in ("always", "never"):
            raise ValueError(f"threshold must be a float in [0, 1], 'always' or 'never', got {threshold!r}")
    elif isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a float in [0, 1], 'always' or 'never', got {threshold!r}")


def _reweight_rows(
    log_weights: Tensor, log_potential: Tensor, what: str, comm: Communicator, failed: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """New normalised log-weights and the log-evidence increment, batched over problems; NaN or
    ``+inf`` potentials are an error. A problem fails alone: where every particle's weight became zero
    it joins ``failed: BoolTensor[B]`` (its increment is ``-inf``, so its ``log Z`` is
    ``-inf``: the estimate ``Z = 0``); a failed problem is carried along at uniform weights and
    potential ``0`` so that the others go on. Returns ``(log_weights, increment, failed)``."""
    log_potential = log_potential.masked_fill(failed[:, None], 0.0)
    if comm.any(torch.isnan(log_potential).any() or (log_potential == math.inf).any()):
        raise FloatingPointError(f"{what}: NaN or +inf log-weight")
    unnorm = log_weights + log_potential
    increment = comm.logsumexp(unnorm)
    dead = ~torch.isfinite(increment)  # -inf: every weight is zero (NaN and +inf are excluded above)
    if dead.any():
        unnorm = torch.where(dead[:, None], torch.zeros_like(unnorm), unnorm)
        norm = torch.where(dead, comm.logsumexp(unnorm), increment)
        return unnorm - norm[:, None], increment, failed | dead
    return unnorm - increment[:, None], increment, failed


#: Normalised log-weight below which a particle counts as having weight zero: ``log(1e-30)``.
NEGLIGIBLE_LOG_WEIGHT = -69.0


def _retire_non_finite(
    x: Tensor, log_g: Tensor, log_w: Tensor, what: str, comm: Communicator, failed: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Give weight zero to particles whose new value or potential is not finite, where their weight
    already was negligible (``< 1e-30``; e.g. a particle far in the tails, thrown further by a
    gradient-shifted proposal). Their values are replaced by the heaviest particle of their problem
    (a zero-weight particle's value changes nothing in the weighted measure) so that later steps
    compute on finite numbers, and the next resampling removes them. A non-finite particle that
    still carried weight is an error: ``FloatingPointError`` naming the method and the step, raised
    on every rank when it happens on one; in a ``failed`` problem (``BoolTensor[B]``) no weight
    counts."""
    bad = ~torch.isfinite(x.flatten(2)).all(-1) | torch.isnan(log_g) | (log_g == math.inf)  # [B, N]
    if not comm.distributed and not bad.any():  # the common case: one check, no collective
        return x, log_g
    carried = bad & (log_w > NEGLIGIBLE_LOG_WEIGHT)
    if failed is not None:
        carried = carried & ~failed[:, None]
    if comm.any(carried.any()):  # every rank raises together
        raise FloatingPointError(f"{what}: NaN or inf encountered in the particles or their weights")
    if not bad.any():
        return x, log_g
    B = x.shape[0]
    best = x[torch.arange(B, device=x.device), log_w.argmax(-1)].unsqueeze(1)  # [B, 1, *event]
    x = torch.where(bad.view(*bad.shape, *([1] * (x.dim() - 2))), best, x)
    return x, log_g.masked_fill(bad, -math.inf)


def run_smc(
    model: FeynmanKacModel,
    time_pairs: Sequence[tuple[int, int]],
    batch_size: int,
    num_particles: int,
    generator: torch.Generator,
    *,
    resampling: str = "systematic",
    threshold: float | str = 0.5,
    move: Move | None = None,
    rejuvenate: bool = False,
    genealogy: bool = False,
    progress: bool = False,
    warn_degenerate: bool = True,
    comm: Communicator | None = None,
) -> SMCOutput:
    """Run the Feynman-Kac model ``model`` along ``time_pairs`` for ``B`` problems at once.

    Args:
        model: proposals and potentials (see :class:`~posterior.particles.feynman_kac.FeynmanKacModel`).
        time_pairs: ``[(t, s), ...]`` reverse transitions (``schedule.time_pairs``).
        batch_size: ``B``. num_particles: ``N`` per problem.
        generator: every random draw uses it.
        resampling: a name in :data:`~posterior.particles.resampling.RESAMPLERS`.
        threshold: resample a problem when its ESS ``< threshold * N``; ``"always"`` / ``"never"``.
        move: optional MCMC kernel applied to resampled particles (resample-move).
        rejuvenate: after each resampling, redraw the newest state of the resampled particles
            with the model's exact Gibbs move (:meth:`FeynmanKacModel.gibbs`), before ``move``.
        genealogy: keep the ancestors of every step.
        progress: show a progress bar.
        warn_degenerate: issue a :class:`ParticleDegeneracyWarning` when the ESS of some problem
            fell below ``2`` or below 1% of the particles (see :func:`warn_if_degenerate`), when
            its draws descend from a handful of particles half way through the chain
            (:func:`~posterior.particles.degeneracy.warn_if_coalesced`), or some problem failed
            (:func:`warn_if_failed`).
        comm: the communicator across ranks (default: the active one,
            :func:`~posterior.distributed.context.current_communicator`, which is the
            single-process one outside ``ps.sample(..., distributed=True)``). With several ranks,
            ``model`` sees this rank's particles only (``init(B, count, ...)``, ``[B, count, ...]``
            tensors) and draws them with this rank's generator; the output is global.

    The loop carries the whole particle system explicitly (particles, extras, log-weights,
    log-evidence); nothing is stored on the model.

    Returns:
        an :class:`SMCOutput`.

    Raises:
        FloatingPointError: NaN particles or NaN log-weights, naming the method and the step.
            A problem whose every particle's weight became zero is not an error: it is marked in
            ``failed`` (NaN samples, ``log_evidence = -inf``) while the others go on, and warned
            about (:func:`warn_if_failed`) where ``warn_degenerate``.
    """
    check_resampling_options(resampling, threshold)
    resample = RESAMPLERS[resampling]
    B, N, K = batch_size, num_particles, len(time_pairs)
    comm = current_communicator() if comm is None else comm
    shared, local = comm.generators(generator)  # ancestors: the same on every rank; noise: this rank's
    if N < comm.world_size:
        raise ValueError(f"num_particles ({N}) must be at least the number of ranks ({comm.world_size})")
    first, n = comm.split(N)  # this rank's particles per problem (all N in one process)

    with use_communicator(comm):  # the model's sums over particles span every rank
        x, extras, log_g0 = model.init(B, n, local, shared)
    log_w = torch.full((B, n), -math.log(N), device=x.device, dtype=x.dtype)
    log_z = torch.zeros(B, device=x.device, dtype=x.dtype)
    failed = torch.zeros(B, dtype=torch.bool, device=x.device)
    if log_g0 is not None:
        log_w, log_z, failed = _reweight_rows(log_w, log_g0, f"{model.name}: initial weights", comm, failed)
    ess_trace = torch.empty(B, K, device=x.device, dtype=x.dtype)
    resampled = torch.zeros(B, K, dtype=torch.bool, device=x.device)
    acceptance = torch.full((B, K), math.nan, device=x.device, dtype=x.dtype) if move else None
    ancestry: list[Tensor] = []
    identity = torch.arange(N, device=x.device).expand(B, N)
    # each particle's ancestor (a global index) before step K // 2, carried through resampling
    half, roots = K // 2, None

    for k, (t, s) in progress_bar(enumerate(time_pairs), enabled=progress, desc=model.name, total=K):
        what = f"{model.name}: step {k} (t={t})"
        if k == half:
            roots = torch.arange(first, first + n, device=x.device).expand(B, n).contiguous()
        with use_communicator(comm):
            x, extras, log_g = model.step(t, s, x, extras, log_w, local)
        x, log_g = _retire_non_finite(x, log_g, log_w, what, comm, failed)
        log_w, inc, failed = _reweight_rows(log_w, log_g, what, comm, failed)
        log_z = log_z + inc
        # log_w is normalised over all ranks: ESS = 1 / sum_i w_i^2
        ess_trace[:, k] = comm.sum(log_w.mul(2).exp_()).reciprocal_() if comm.distributed else ess(log_w)
        if k == K - 1:
            break  # the final resampling below
        if threshold == "always":
            mask = torch.ones(B, dtype=torch.bool, device=x.device)
        elif threshold == "never":
            mask = torch.zeros(B, dtype=torch.bool, device=x.device)
        else:
            mask = ess_trace[:, k] < float(threshold) * N
        resampled[:, k] = mask
        anc = identity
        if mask.any():
            # resample and move only the problems that need it (the rest keep their particles)
            rows = mask.nonzero().squeeze(1)
            anc_rows = resample(comm.all_gather(log_w[rows], N), shared)
            anc = identity.clone()
            anc[rows] = anc_rows
            carried = extras if roots is None else {**extras, _ROOTS: roots}
            x, extras = _resample_rows(x, carried, rows, anc_rows, comm)
            roots = extras.pop(_ROOTS, None)
            log_w = log_w.index_fill(0, rows, -math.log(N))
            if rejuvenate:
                x, extras = _rows_where(mask, model.gibbs(t, s, x, extras, local), (x, extras))
            if move is not None:
                x, extras, acc = _move(model, move, s, x, extras, mask, local, comm)
                acceptance[:, k] = torch.where(mask, acc.to(x.dtype), acceptance[:, k])
        if genealogy:
            ancestry.append(anc)

    weighted, final_log_w = comm.all_gather(x, N), comm.all_gather(log_w, N)
    anc = resample(final_log_w, shared)
    lineages = count_distinct(_gather(comm.all_gather(roots, N), anc))
    if warn_degenerate:
        warn_if_failed(failed, model.name)
        warn_if_degenerate(ess_trace.masked_fill(failed[:, None], math.inf), model.name, num_particles=N)
        warn_if_coalesced(lineages.masked_fill(failed, N), model.name, num_particles=N)
    resampled[:, K - 1] = True
    if genealogy:
        ancestry.append(anc)
    samples = _gather(weighted, anc)
    if failed.any():
        samples = samples.masked_fill(failed.view(B, *([1] * (samples.dim() - 1))), math.nan)
    return SMCOutput(
        samples=samples,
        log_weights=final_log_w,
        particles=weighted,
        ess=ess_trace,
        resampled=resampled,
        log_evidence=log_z,
        acceptance=acceptance,
        genealogy=torch.stack(ancestry, 1) if genealogy else None,
        state=ParticleState(weighted, extras, final_log_w, log_z, anc),
        failed=failed,
        lineages=lineages,
    )


#: the extras key under which the half-way ancestors travel with the particles when resampled
_ROOTS = "_half_way_ancestor"


def _resample_rows(
    x: Tensor, extras: Extras, rows: Tensor, ancestors: Tensor, comm: Communicator
) -> tuple[Tensor, Extras]:
    """The particles and their extras of problems ``rows`` replaced by their ``ancestors``
    (``[len(rows), N]``, global indices); across ranks only the particles that change rank travel."""
    if comm.distributed:
        x, *values = comm.resample([x, *extras.values()], rows, ancestors)
        return x, dict(zip(extras, values, strict=True))
    return _gather_rows(x, rows, ancestors), {k: _gather_rows(v, rows, ancestors) for k, v in extras.items()}


def _move(
    model: FeynmanKacModel,
    move: Move,
    s: int,
    x: Tensor,
    extras: Extras,
    mask: Tensor,
    generator: torch.Generator,
    comm: Communicator,
) -> tuple[Tensor, Extras, Tensor]:
    """Apply ``move`` to the problems in ``mask`` (those just resampled), with the model's target at
    ``s``; the moved particles' extras are recomputed. Returns ``(x, extras, acceptance [B])``."""
    with use_communicator(comm):  # the move's averages (acceptance) span every rank
        x_moved, acc = move(x, lambda z: model.log_target(s, z, extras), generator)
        x_moved = _rows_where(mask, (x_moved, {}), (x, {}))[0]
        fresh = model.refresh(s, x_moved, extras)
    return *_rows_where(mask, (x_moved, fresh), (x, extras)), acc


def _rows_where(
    mask: Tensor, new: tuple[Tensor, Extras], old: tuple[Tensor, Extras]
) -> tuple[Tensor, Extras]:
    """``new`` particles and extras in the problems of ``mask: [B]``, ``old`` elsewhere (the
    extras' names are those of ``new``)."""

    def pick(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)

    (x_new, e_new), (x_old, e_old) = new, old
    return pick(x_new, x_old), {k: pick(v, e_old[k]) if k in e_old else v for k, v in e_new.items()}


def _gather_rows(x: Tensor, rows: Tensor, ancestors: Tensor) -> Tensor:
    """``x`` with problems ``rows`` replaced by ``x[rows][ancestors]``; all rows at once when
    every problem resamples."""
    if rows.numel() == x.shape[0]:
        return _gather(x, ancestors)
    return x.index_copy(0, rows, _gather(x[rows], ancestors))


def _gather(x: Tensor, ancestors: Tensor) -> Tensor:
    """``x[b, ancestors[b, i]]`` for ``x: [B, N, ...]`` and ``ancestors: [B, M]``: ``[B, M, ...]``."""
    B, M = ancestors.shape
    idx = ancestors.reshape(B, M, *([1] * (x.dim() - 2))).expand(B, M, *x.shape[2:])
    return torch.gather(x, 1, idx)
