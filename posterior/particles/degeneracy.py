"""The warnings of a particle system far from the many-particle regime: a collapsed effective
sample size, draws that descend from a handful of particles half way through the chain (path
degeneracy), and problems whose every particle's weight became zero."""

from __future__ import annotations

import os
import sys
import warnings

from torch import Tensor

__all__ = [
    "DEGENERATE_ESS",
    "DEGENERATE_FRACTION",
    "LINEAGE_FRACTION",
    "LINEAGE_MIN",
    "ParticleDegeneracyWarning",
    "caller_outside_package",
    "count_distinct",
    "lineage_level",
    "warn_if_coalesced",
    "warn_if_degenerate",
    "warn_if_failed",
]

#: ESS below which :func:`run_smc` warns: the whole particle system rests on about one particle.
DEGENERATE_ESS = 2.0
#: ... or below this share of the particles: thousands of particles resting on a handful.
DEGENERATE_FRACTION = 0.01
#: Distinct ancestors half way through the chain below which the draws are path-degenerate:
#: ``LINEAGE_FRACTION`` of the particles, at most ``LINEAGE_MIN`` and at least 2
#: (:func:`lineage_level`). On the Gaussian-mixture grid (d = 8, 80; 256-2000 particles; 25-100
#: steps) tds, mcgdiff and smc keep 6.6-84% of the particles as lineages there; on 16x16 and
#: 28x28 images with 128 particles they keep 1-3.
LINEAGE_FRACTION = 0.05
LINEAGE_MIN = 10


class ParticleDegeneracyWarning(UserWarning):
    """The effective sample size collapsed: the draws are far from the many-particle regime in
    which the sampler is exact (more particles, or a resample-move, are the remedies)."""


def warn_if_degenerate(
    ess_trace: Tensor,
    name: str,
    level: float = DEGENERATE_ESS,
    runs: int = 1,
    num_particles: int | None = None,
) -> bool:
    """Warn (:class:`ParticleDegeneracyWarning`) if the ESS ``[B, K]`` of any problem fell below
    ``level`` at some step, or below :data:`DEGENERATE_FRACTION` of ``num_particles`` (the size
    of one particle system; thousands of particles resting on a handful are as far from the
    many-particle regime as two resting on one); one warning for the whole batch. With
    ``runs > 1`` the rows are the independent runs ``b * runs + r`` of the problems, and the
    warning names a run. Returns whether it warned."""
    if num_particles is not None:
        level = max(level, DEGENERATE_FRACTION * num_particles)
    low = ess_trace < level  # [B, K]
    bad = low.any(-1)
    if not bad.any():
        return False
    B, K = ess_trace.shape
    worst = int(ess_trace.min(-1).values.argmin())
    steps = low[worst].nonzero().flatten().tolist()
    if runs > 1:
        where, rows = f"run {worst % runs} of problem {worst // runs}, ", "runs"
    else:
        where, rows = (f"problem {worst}, " if B > 1 else ""), "problem(s)"
    of = "" if num_particles is None else f" of {num_particles} particles"
    warnings.warn(
        f"{name}: the effective sample size fell below {level:g}{of} in {int(bad.sum())} of {B} {rows} "
        f"({where}{len(steps)} of {K} steps, first at step {steps[0]}, minimum "
        f"{float(ess_trace[worst].min()):.2f}): the draws rest on a few particles and their spread "
        "underestimates the posterior's; use more particles or a resample-move (result.ess has the trace)",
        ParticleDegeneracyWarning,
        stacklevel=caller_outside_package(),
    )
    return True


def lineage_level(num_particles: int) -> float:
    """The number of distinct half-way ancestors below which :func:`warn_if_coalesced` warns:
    ``max(2, min(LINEAGE_MIN, LINEAGE_FRACTION * num_particles))``."""
    return max(2.0, min(float(LINEAGE_MIN), LINEAGE_FRACTION * num_particles))


def count_distinct(labels: Tensor) -> Tensor:
    """The number of distinct values in each row of ``labels: LongTensor[B, N]``: ``[B]`` (one
    sort, no loop over rows)."""
    ordered = labels.sort(-1).values
    return 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(-1)


def warn_if_coalesced(lineages: Tensor, name: str, num_particles: int, runs: int = 1) -> bool:
    """Warn (:class:`ParticleDegeneracyWarning`) if the draws of some problem descend from fewer
    than :func:`lineage_level` distinct particles half way through the chain (``lineages: [B]``,
    :attr:`~posterior.particles.engine.SMCOutput.lineages`). The per-step ESS can stay
    comfortable while repeated resampling funnels every draw into a few early ancestors: then
    what the chain decides in its first half (an image's content) rests on those few, and the
    draws' spread is far below the posterior's. With ``runs > 1`` the rows are the runs
    ``b * runs + r``. Returns whether it warned."""
    level = lineage_level(num_particles)
    bad = lineages < level
    if not bad.any():
        return False
    worst = int(lineages.argmin())
    if runs > 1:
        where, rows = f"run {worst % runs} of problem {worst // runs}", "runs"
    else:
        where, rows = (f"problem {worst}" if lineages.numel() > 1 else "the problem"), "problem(s)"
    warnings.warn(
        f"{name}: the draws descend from fewer than {level:g} of {num_particles} particles half way "
        f"through the chain in {int(bad.sum())} of {lineages.numel()} {rows} ({where}: "
        f"{int(lineages[worst])}): what the first half of the chain decides rests on those few "
        "(path degeneracy) and the draws' spread underestimates the posterior's; use more "
        "particles, fewer resamplings or a better twist (result.stats['lineages'] has the counts)",
        ParticleDegeneracyWarning,
        stacklevel=caller_outside_package(),
    )
    return True


def warn_if_failed(failed: Tensor, name: str) -> bool:
    """Warn (:class:`ParticleDegeneracyWarning`) naming the problems ``failed: BoolTensor[B]``
    (indices into the caller's batch) whose every particle's weight became zero. Returns whether
    it warned."""
    if not failed.any():
        return False
    index = failed.nonzero().flatten().tolist()
    shown = ", ".join(map(str, index[:10])) + (", ..." if len(index) > 10 else "")
    warnings.warn(
        f"{name}: every particle's weight became zero in {len(index)} of {failed.numel()} problem(s) "
        f"([{shown}]): no particle reached a likelihood above zero there. Their samples are NaN and "
        "result.stats['failed'] marks them (the other problems are unaffected); use more particles "
        "or check that y is possible under the prior and the noise model",
        ParticleDegeneracyWarning,
        stacklevel=caller_outside_package(),
    )
    return True


def caller_outside_package() -> int:
    """The ``stacklevel`` that points a warning issued here at the first caller outside
    ``posterior`` (the user's line, not the engine's)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1  # the frame that calls warnings.warn
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
