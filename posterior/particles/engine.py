"""One loop that runs every exact sampler: a Feynman-Kac particle system with resampling.

A sampler is a :class:`FeynmanKacModel`: an initial distribution (with an optional initial log
potential), and at each diffusion step ``k: t -> s`` a proposal ``M_k`` that moves the particles
and returns the log potential increment ``log G_k`` (the log importance weight of the move, e.g.
``log p(x_s|x_t) + log g_s(x_s) - log q(x_s|x_t) - log g_t(x_t)`` for twisted samplers). The engine
(Del Moral, 2004; Chopin & Papaspiliopoulos, 2020, Alg. 10.1) keeps normalised log-weights in log
space, records the effective sample size, resamples adaptively, accumulates the log-evidence
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
model's per-particle ``cache``) that a resampling moves to another rank travel
(:mod:`posterior.distributed.exchange`). The final draws are all-gathered: every rank returns the
same output.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import progress_bar
from posterior.distributed.comm import Communicator
from posterior.distributed.context import current_communicator, use_communicator
from posterior.particles.resampling import RESAMPLERS, ess

__all__ = [
    "FeynmanKacModel",
    "ParticleDegeneracyWarning",
    "ParticleState",
    "SMCOutput",
    "check_resampling_options",
    "run_smc",
    "warn_if_degenerate",
]

#: ESS below which :func:`run_smc` warns: the whole particle system rests on about one particle.
DEGENERATE_ESS = 2.0


class ParticleDegeneracyWarning(UserWarning):
    """The effective sample size collapsed: the draws are far from the many-particle regime in
    which the sampler is exact (more particles, or a resample-move, are the remedies)."""


#: ``move(particles, log_target_fn, generator) -> (particles, acceptance [B])``: an MCMC kernel
#: leaving ``exp(log_target_fn(x))`` invariant, applied after each resampling.
Move = Callable[[Tensor, Callable[[Tensor], Tensor], torch.Generator], tuple[Tensor, Tensor]]


class ParticleState(NamedTuple):
    """The particle system between two steps.

    Attributes:
        particles: ``Tensor[B, N, *event_shape]``.
        log_weights: ``Tensor[B, N]``, normalised (``logsumexp`` over ``N`` is ``0``).
        log_evidence: ``Tensor[B]``, running estimate of ``log Z``.
        ancestors: ``LongTensor[B, N]`` of the last resampling (identity where none happened).
    """

    particles: Tensor
    log_weights: Tensor
    log_evidence: Tensor
    ancestors: Tensor | None = None


class FeynmanKacModel:
    """Base class of the samplers' Feynman-Kac models.

    Subclasses implement :meth:`init` and :meth:`step`; :meth:`final` and :meth:`log_target` are
    optional. Per-particle quantities cached between steps (``Tensor[B, N, ...]``) go into
    ``self.cache``: the engine resamples them together with the particles and clears the cache
    after an MCMC move (:meth:`invalidate`; the model recomputes what it needs when an entry is
    missing).

    Randomness: the ``generator`` of :meth:`init` and :meth:`step` draws what is particle-wise
    (in a distributed run it is the rank's own). A draw common to all particles (fixed directions
    inside a twist, say) must come from :attr:`shared_generator`, which the engine sets before
    :meth:`init`: the same stream on every rank (the very ``generator`` in a single process).
    """

    name: str = "smc"
    #: the generator of draws shared by all particles, identical on every rank (set by the engine)
    shared_generator: torch.Generator | None = None
    #: the communicator across ranks (set by the engine before :meth:`init`)
    comm: Communicator | None = None
    #: normalised log-weights ``[B, n]`` of the particles entering :meth:`init` / :meth:`step`
    #: (set by the engine; e.g. to temper a potential adaptively, see :mod:`posterior.particles.tempering`)
    log_weights: Tensor | None = None

    def __init__(self) -> None:
        self.cache: dict[str, Tensor] = {}

    def init(self, B: int, N: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Initial particles ``[B, N, *event_shape]`` and an optional initial log potential ``[B, N]``."""
        raise NotImplementedError

    def step(self, k: int, t: int, s: int, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Propose ``x_s`` from ``x_t`` (step ``k``); return ``(x_s, log G_k [B, N])``."""
        raise NotImplementedError

    def invalidate(self) -> None:
        """Called after an MCMC move changed the particles: drop what depends on them."""
        self.cache = {}

    def final(self, x: Tensor) -> Tensor | None:
        """An optional last log potential ``[B, N]`` (e.g. the true likelihood over the twist)."""
        return None

    def log_target(self, k: int, x: Tensor) -> Tensor:
        """Unnormalised log density ``[B, N]`` of the intermediate target after step ``k``
        (needed by MCMC moves)."""
        raise NotImplementedError(f"{self.name!r} has no intermediate log target for MCMC moves")


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
        state: the weighted :class:`ParticleState` before the final resampling (its
            ``ancestors`` are those of the final resampling).
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
    stats: dict[str, Tensor] = field(default_factory=dict)


def check_resampling_options(resampling: str, threshold: float | str) -> None:
    """``ValueError`` naming the option for an unknown scheme or a bad threshold."""
    if resampling not in RESAMPLERS:
        raise ValueError(f"unknown resampling {resampling!r}; use one of {', '.join(RESAMPLERS)}")
    if isinstance(threshold, str):
        if threshold not in ("always", "never"):
            raise ValueError(f"threshold must be a float in [0, 1], 'always' or 'never', got {threshold!r}")
    elif isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a float in [0, 1], 'always' or 'never', got {threshold!r}")


def _reweight(
    log_weights: Tensor, log_potential: Tensor, what: str, comm: Communicator
) -> tuple[Tensor, Tensor]:
    """New normalised log-weights and the log-evidence increment; errors on NaN / all-zero weights."""
    if comm.any(torch.isnan(log_potential).any() or (log_potential == math.inf).any()):
        raise FloatingPointError(f"{what}: NaN or +inf log-weight")
    unnorm = log_weights + log_potential
    increment = comm.logsumexp(unnorm)  # log sum_i W_i G_i, W normalised
    if not torch.isfinite(increment).all():
        bad = (~torch.isfinite(increment)).nonzero().flatten()[:5].tolist()
        raise FloatingPointError(f"{what}: all particle weights are zero (problems {bad})")
    return unnorm - increment[:, None], increment


#: Normalised log-weight below which a particle counts as having weight zero: ``log(1e-30)``.
NEGLIGIBLE_LOG_WEIGHT = -69.0


def _retire_non_finite(
    x: Tensor, log_g: Tensor, log_w: Tensor, what: str, comm: Communicator
) -> tuple[Tensor, Tensor]:
    """Give weight zero to particles whose new value or potential is not finite, where their weight
    already was negligible (``< 1e-30``; e.g. a particle far in the tails, thrown further by a
    gradient-shifted proposal). Their values are replaced by the heaviest particle of their problem
    (a zero-weight particle's value changes nothing in the weighted measure) so that later steps
    compute on finite numbers, and the next resampling removes them. A non-finite particle that
    still carried weight is an error: ``FloatingPointError`` naming the method and the step, raised
    on every rank when it happens on one."""
    bad = ~torch.isfinite(x.flatten(2)).all(-1) | torch.isnan(log_g) | (log_g == math.inf)  # [B, N]
    if not comm.distributed and not bad.any():  # the common case: one check, no collective
        return x, log_g
    if comm.any((bad & (log_w > NEGLIGIBLE_LOG_WEIGHT)).any()):  # every rank raises together
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
    genealogy: bool = False,
    progress: bool = False,
    warn_degenerate: bool = True,
    comm: Communicator | None = None,
) -> SMCOutput:
    """Run the Feynman-Kac model ``model`` along ``time_pairs`` for ``B`` problems at once.

    Args:
        model: proposals and potentials (see :class:`FeynmanKacModel`).
        time_pairs: ``[(t, s), ...]`` reverse transitions (``schedule.time_pairs``).
        batch_size: ``B``. num_particles: ``N`` per problem.
        generator: every random draw uses it.
        resampling: a name in :data:`~posterior.particles.resampling.RESAMPLERS`.
        threshold: resample a problem when its ESS ``< threshold * N``; ``"always"`` / ``"never"``.
        move: optional MCMC kernel applied to resampled particles (resample-move).
        genealogy: keep the ancestors of every step.
        progress: show a progress bar.
        warn_degenerate: issue a :class:`ParticleDegeneracyWarning` when the ESS of some problem
            fell below ``2`` (see :func:`warn_if_degenerate`).
        comm: the communicator across ranks (default: the active one,
            :func:`~posterior.distributed.context.current_communicator`, which is the
            single-process one outside ``ps.sample(..., distributed=True)``). With several ranks,
            ``model`` sees this rank's particles only (``init(B, count, ...)``, ``[B, count, ...]``
            tensors) and draws them with this rank's generator; the output is global.

    Returns:
        an :class:`SMCOutput`.

    Raises:
        FloatingPointError: NaN particles, NaN log-weights or all weights zero, naming the
            method and the step.
    """
    check_resampling_options(resampling, threshold)
    resample = RESAMPLERS[resampling]
    B, N, K = batch_size, num_particles, len(time_pairs)
    comm = current_communicator() if comm is None else comm
    shared, local = comm.generators(generator)  # ancestors: the same on every rank; noise: this rank's
    if N < comm.world_size:
        raise ValueError(f"num_particles ({N}) must be at least the number of ranks ({comm.world_size})")
    n = comm.split(N)[1]  # this rank's particles per problem (all N in one process)

    model.cache = {}
    model.shared_generator, model.comm = shared, comm
    model.log_weights = None  # uniform at the start
    x, log_g0 = model.init(B, n, local)
    log_w = torch.full((B, n), -math.log(N), device=x.device, dtype=x.dtype)
    log_z = torch.zeros(B, device=x.device, dtype=x.dtype)
    if log_g0 is not None:
        log_w, log_z = _reweight(log_w, log_g0, f"{model.name}: initial weights", comm)
    ess_trace = torch.empty(B, K, device=x.device, dtype=x.dtype)
    resampled = torch.zeros(B, K, dtype=torch.bool, device=x.device)
    acceptance = torch.full((B, K), math.nan, device=x.device, dtype=x.dtype) if move else None
    ancestry: list[Tensor] = []
    identity = torch.arange(N, device=x.device).expand(B, N)

    for k, (t, s) in progress_bar(enumerate(time_pairs), enabled=progress, desc=model.name, total=K):
        what = f"{model.name}: step {k} (t={t})"
        model.log_weights = log_w
        x, log_g = model.step(k, t, s, x, local)
        if k == K - 1:
            extra = model.final(x)
            if extra is not None:
                log_g = log_g + extra
        x, log_g = _retire_non_finite(x, log_g, log_w, what, comm)
        log_w, inc = _reweight(log_w, log_g, what, comm)
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
            if comm.distributed:  # the particles and their cache that change rank travel
                x, *cached = comm.resample([x, *model.cache.values()], rows, anc_rows)
                model.cache = dict(zip(model.cache, cached, strict=True))
            else:
                x = _gather_rows(x, rows, anc_rows)
                model.cache = {name: _gather_rows(v, rows, anc_rows) for name, v in model.cache.items()}
            log_w = log_w.index_fill(0, rows, -math.log(N))
            if move is not None:
                with use_communicator(comm):  # the move's averages (acceptance) span every rank
                    x_moved, acc = move(x, lambda z, k=k: model.log_target(k, z), local)
                x = torch.where(mask.view(B, *([1] * (x.dim() - 1))), x_moved, x)
                acceptance[:, k] = torch.where(mask, acc.to(x.dtype), acceptance[:, k])
                model.invalidate()
        if genealogy:
            ancestry.append(anc)

    if warn_degenerate:
        warn_if_degenerate(ess_trace, model.name)
    weighted, final_log_w = comm.all_gather(x, N), comm.all_gather(log_w, N)
    anc = resample(final_log_w, shared)
    resampled[:, K - 1] = True
    if genealogy:
        ancestry.append(anc)
    return SMCOutput(
        samples=_gather(weighted, anc),
        log_weights=final_log_w,
        particles=weighted,
        ess=ess_trace,
        resampled=resampled,
        log_evidence=log_z,
        acceptance=acceptance,
        genealogy=torch.stack(ancestry, 1) if genealogy else None,
        state=ParticleState(weighted, final_log_w, log_z, anc),
    )


def warn_if_degenerate(ess_trace: Tensor, name: str, level: float = DEGENERATE_ESS) -> bool:
    """Warn (:class:`ParticleDegeneracyWarning`) if the ESS ``[B, K]`` of any problem fell below
    ``level`` at some step; one warning for the whole batch. Returns whether it warned."""
    low = ess_trace < level  # [B, K]
    bad = low.any(-1)
    if not bad.any():
        return False
    B, K = ess_trace.shape
    worst = int(ess_trace.min(-1).values.argmin())
    steps = low[worst].nonzero().flatten().tolist()
    where = f"problem {worst}, " if B > 1 else ""
    warnings.warn(
        f"{name}: the effective sample size fell below {level:g} in {int(bad.sum())} of {B} problem(s) "
        f"({where}{len(steps)} of {K} steps, first at step {steps[0]}, minimum "
        f"{float(ess_trace[worst].min()):.2f}): the draws rest on about one particle and their spread "
        "underestimates the posterior's; use more particles or a resample-move (result.ess has the trace)",
        ParticleDegeneracyWarning,
        stacklevel=_caller_outside_package(),
    )
    return True


def _caller_outside_package() -> int:
    """The ``stacklevel`` that points a warning issued here at the first caller outside
    ``posterior`` (the user's line, not the engine's)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1  # the frame that calls warnings.warn
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


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
