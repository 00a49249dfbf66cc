"""The options every particle sampler shares, the run that hands its model to the engine, and the
merge of independent runs.

Independent runs (``runs = R``) are combined as the "island" particle filters combine their
islands (Vergé, Dubarry, Del Moral & Moulines, "On parallel implementation of sequential Monte
Carlo methods: the island particle model", Statistics and Computing 2015): run ``r``'s normalised
weights ``w_ri`` are scaled by its evidence estimate ``Z_r``. Since ``E[Z_r sum_i w_ri f(x_ri)] = Z
E_post[f]``, the pooled estimate ``sum_r Z_r sum_i w_ri f(x_ri) / sum_r Z_r`` converges to the
target as the runs grow in number at any fixed run size, and as each run grows. Weighting every
run equally instead (each run's draws count ``1 / R``) converges only as each run grows: at a
fixed run size it keeps the bias of one run of that size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from posterior._utils import check_bool
from posterior.distributed.context import current_communicator
from posterior.particles.degeneracy import (
    ParticleDegeneracyWarning,
    caller_outside_package,
    warn_if_coalesced,
    warn_if_degenerate,
    warn_if_failed,
)
from posterior.particles.engine import SMCOutput, _gather, check_resampling_options, run_smc
from posterior.particles.feynman_kac import FeynmanKacModel, Move
from posterior.particles.resampling import RESAMPLERS, ess
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler
from posterior.samplers.exact.analytic_variance import check_kernel_var
from posterior.samplers.result import Result

__all__ = ["MERGES", "ParticleSampler", "TwistedSampler", "auto_runs", "merge_runs", "to_result"]

#: ``runs="auto"``: at most this many independent runs ...
AUTO_MAX_RUNS = 32
#: ... of at least this many particles each.
AUTO_MIN_RUN = 4
#: Independent runs of at least this many particles warn when one degenerates (ESS below 2).
WARN_RUN_SIZE = 16
#: How independent runs are merged (:func:`merge_runs`).
MERGES = ("evidence", "equal")
#: The evidence-weighted merge warns when fewer than this many runs carry its weight (the
#: effective number of runs ``(sum Z_r)^2 / sum Z_r^2``), out of at least ``2 *`` as many runs.
MIN_EFFECTIVE_RUNS = 2.0


def auto_runs(num_particles: int) -> int:
    """The number of runs ``runs="auto"`` splits ``num_particles`` into: the largest divisor of
    ``num_particles`` not above :data:`AUTO_MAX_RUNS` that leaves each run at least
    :data:`AUTO_MIN_RUN` particles (``1`` below 8 particles). E.g. 128 -> 32 runs of 4, 2000 -> 25
    runs of 80, 4096 -> 32 runs of 128. The number of runs stays bounded, so each run grows with
    ``num_particles``."""
    top = min(AUTO_MAX_RUNS, num_particles // AUTO_MIN_RUN)
    return max((r for r in range(1, top + 1) if num_particles % r == 0), default=1)


class ParticleSampler(Sampler):
    """Options shared by the particle samplers (documented on each subclass). A subclass builds
    its Feynman-Kac model in :meth:`model`; :meth:`run` builds the time grid once and runs the
    engine on it."""

    exact = True
    interacting = True

    def __init__(
        self,
        resampling: str = "systematic",
        threshold: float | str = 0.5,
        eta: float = 1.0,
        exact_start: bool = True,
        move: Move | None = None,
        rejuvenate: bool = False,
        runs: int | str = 1,
        merge: str = "evidence",
        kernel_var: str = "ddim",
    ) -> None:
        check_resampling_options(resampling, threshold)
        check_kernel_var(kernel_var)
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES} (how independent runs combine), got {merge!r}")
        if runs != "auto" and (isinstance(runs, (bool, str)) or not isinstance(runs, int) or runs < 1):
            raise ValueError(
                f"runs must be an integer >= 1 (independent particle systems) or 'auto', got {runs!r}"
            )
        check_bool(exact_start, "exact_start")
        check_bool(rejuvenate, "rejuvenate")
        low_ok = kernel_var == "analytic"  # the analytic variance is positive at eta = 0 too
        if isinstance(eta, bool) or not (0.0 <= float(eta) <= 1.0 and (float(eta) > 0 or low_ok)):
            raise ValueError(
                "eta must be in (0, 1] (a stochastic reverse kernel; [0, 1] with "
                f"kernel_var='analytic'), got {eta!r}"
            )
        if move is not None and not callable(move):
            raise ValueError("move must be a callable move(particles, log_target_fn, generator)")
        self.resampling, self.threshold, self.eta = resampling, threshold, float(eta)
        self.exact_start, self.move, self.rejuvenate = exact_start, move, rejuvenate
        self.runs, self.merge, self.kernel_var = runs, merge, kernel_var

    def model(self, problem: InverseProblem, pairs: list[tuple[int, int]]) -> FeynmanKacModel:
        """The Feynman-Kac model of this sampler on ``problem``, along the time grid ``pairs``."""
        raise NotImplementedError

    def auto_runs(self, problem: InverseProblem, num_particles: int) -> int:
        """The number of runs ``runs="auto"`` resolves to on ``problem`` (:func:`auto_runs`)."""
        return auto_runs(num_particles)

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        R = self.auto_runs(problem, num_particles) if self.runs == "auto" else self.runs
        if num_particles % R:
            raise ValueError(
                f"{self.name!r}: runs={R} must divide num_particles={num_particles} (each run holds "
                "num_particles / runs particles)"
            )
        n = num_particles // R
        if R > 1 and n == 1 and self.merge == "equal":
            raise ValueError(
                f"{self.name!r}: runs={R} with merge='equal' leaves one particle per run, whose draws "
                "are the proposal itself, never reweighted by the likelihood: use fewer runs, or "
                "merge='evidence' (importance sampling over the runs)"
            )
        pairs = self.time_pairs(problem, num_steps)
        model = self.model(problem if R == 1 else problem.repeat(R), pairs)
        model.use_kernel_var(self.kernel_var)
        if self.move is not None and getattr(model, "noiseless", False):
            raise ValueError(
                f"{self.name!r}: a move needs noise_std > 0 (with noise_std = 0 the intermediate "
                "target at the last noisy time lives on {A x = y}, where a Langevin move cannot stay)"
            )
        out = run_smc(
            model,
            pairs,
            problem.batch_size * R,
            n,
            generator,
            resampling=self.resampling,
            threshold=self.threshold,
            move=self.move,
            rejuvenate=self.rejuvenate,
            progress=progress,
            warn_degenerate=False,  # below, naming a run where there are several
        )
        # runs of a few particles are meant to end on one or two each (the merge's weights then
        # decide); one run or a larger run should not
        if R == 1 or n >= WARN_RUN_SIZE:
            ess_trace = out.ess.masked_fill(out.failed[:, None], math.inf)
            warn_if_degenerate(ess_trace, self.name, runs=R, num_particles=n)
            warn_if_coalesced(out.lineages.masked_fill(out.failed, n), self.name, num_particles=n, runs=R)
        if R == 1:
            result = to_result(out, self.name)
            result.stats["lineages"] = out.lineages
        else:
            shared, _ = current_communicator().generators(generator)  # the same draw on every rank
            result = merge_runs(out, self.name, R, self.merge, RESAMPLERS[self.resampling], shared)
        failed = out.failed if R == 1 else result.stats.get("failed")
        if failed is not None and failed.any():
            result.stats["failed"] = failed
            warn_if_failed(failed, self.name)
        result.options = {"runs": R} if R == 1 else {"runs": R, "merge": self.merge}
        return result


class TwistedSampler(ParticleSampler):
    """A particle sampler whose twist assumes a Gaussian prior on each coordinate: the prior's own
    per-coordinate mean (``prior.moments()``) and a variance ``V`` (``prior_var``: ``"auto"``, a
    positive float or ``math.inf``), documented on each subclass."""

    def __init__(
        self,
        resampling: str = "systematic",
        threshold: float | str = 0.5,
        eta: float = 1.0,
        exact_start: bool = True,
        move: Move | None = None,
        prior_var: float | str = "auto",
        rejuvenate: bool = False,
        runs: int | str = 1,
        merge: str = "evidence",
        kernel_var: str = "ddim",
    ) -> None:
        super().__init__(resampling, threshold, eta, exact_start, move, rejuvenate, runs, merge, kernel_var)
        if prior_var != "auto" and (isinstance(prior_var, (bool, str)) or not float(prior_var) > 0):
            raise ValueError(f"prior_var must be 'auto', a positive float or math.inf, got {prior_var!r}")
        self.prior_var = prior_var

    def prior_gaussian(self, problem: InverseProblem) -> tuple[Tensor | None, float]:
        """The twist's Gaussian stand-in for the prior: per-coordinate mean ``Tensor[*event]``
        (``None`` with ``V = inf``, where it does not enter) and variance ``V``. ``"auto"``: the
        mean of the prior's per-coordinate variances (``prior.moments()``: exact for the Gaussian
        mixture, estimated once from the prior's own draws otherwise)."""
        auto = self.prior_var in ("auto", "covariance")  # "covariance": TDS's full twist; V for the rest
        if not auto and float(self.prior_var) == math.inf:
            return None, math.inf
        mean, var = problem.prior.moments()
        V = float(var.mean()) if auto else float(self.prior_var)
        return mean, V


def to_result(out: SMCOutput, name: str) -> Result:
    """A batched :class:`Result` from the engine's output."""
    return Result(
        samples=out.samples,
        method=name,
        log_evidence=out.log_evidence,
        ess=out.ess,
        log_weights=out.log_weights,
        resampled=out.resampled,
        acceptance=out.acceptance,
    )


def merge_runs(
    out: SMCOutput,
    name: str,
    runs: int,
    merge: str = "evidence",
    resample: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Result:
    """One result per problem from ``runs`` independent particle systems run as the rows
    ``b * runs + r`` of one batch (``out.particles: [B * runs, n, ...]``).

    ``merge="evidence"`` (module docstring): particle ``i`` of run ``r`` weighs ``Z_r w_ri / sum_s
    Z_s``; a run with ``Z_r = 0`` (every weight zero) weighs nothing, and a problem fails only when
    every run of it does. ``merge="equal"``: it weighs ``w_ri / R'`` over the ``R'`` runs that did
    not fail, an approximation that keeps each run's bias at a fixed run size.

    ``samples``: ``[B, runs * n, ...]``, equally weighted, resampled from the pooled weighted
    particles with ``resample`` (systematic by default; with ``"equal"`` and a scheme with
    exact counts each run keeps its ``n`` draws). ``log_weights``: the pooled weights
    ``[B, runs * n]``. ``log_evidence``: ``log`` of the mean of the runs' ``Z_r`` (unbiased for
    ``Z``, whatever the merge). ``ess``: the smallest over the runs at each step; ``resampled``:
    whether any run resampled; ``acceptance``: the mean. ``stats``: ``"run_log_evidence": [B,
    runs]``, ``"run_ess": [B, runs, num_steps]`` and ``"run_samples": [B, runs * n, ...]`` (each
    run's own equally weighted draws, run by run: :meth:`Result.split_runs` and the ArviZ chains
    read them), ``"merge_ess": [B]`` (the ESS of the pooled weights, out of ``runs * n``),
    ``"effective_runs": [B]`` (``(sum Z_r)^2 / sum Z_r^2``, the runs that carry the evidence
    weights) and ``"failed": BoolTensor[B]`` where some problem failed.
    """
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    resample = RESAMPLERS["systematic"] if resample is None else resample
    BR, n = out.samples.shape[:2]
    B, event = BR // runs, out.samples.shape[2:]

    def per_run(t: Tensor) -> Tensor:
        return t.reshape(B, runs, *t.shape[1:])

    log_z = per_run(out.log_evidence)  # [B, R]; -inf where a run failed
    alive = torch.isfinite(log_z)
    failed = ~alive.any(1)
    log_w = per_run(out.log_weights)  # [B, R, n], each run normalised
    if merge == "evidence":
        run_weight = torch.log_softmax(log_z.masked_fill(failed[:, None], 0.0), 1)
    else:
        count = alive.sum(1, keepdim=True).clamp_min(1)
        run_weight = torch.where(alive | failed[:, None], -torch.log(count.to(log_z.dtype)), -math.inf)
        run_weight = run_weight.masked_fill(failed[:, None], -math.log(runs))
    pooled = (log_w + run_weight[..., None]).reshape(B, runs * n)
    ancestors = resample(pooled, generator)
    particles = out.particles.reshape(B, runs * n, *event)
    samples = _gather(particles, ancestors)
    if failed.any():
        samples = samples.masked_fill(failed.view(B, *([1] * (samples.dim() - 1))), math.nan)
    stats = {
        "run_log_evidence": log_z,
        "run_ess": per_run(out.ess),
        "run_samples": out.samples.reshape(B, runs * n, *event),
        "merge_ess": ess(pooled),
        "effective_runs": ess(log_z.masked_fill(failed[:, None], 0.0)).masked_fill(failed, 0.0),
    }
    if out.lineages is not None:
        stats["run_lineages"] = per_run(out.lineages)  # [B, R], see SMCOutput.lineages
    if failed.any():
        stats["failed"] = failed
    _warn_if_collapsed(stats, name, runs, merge)
    return Result(
        samples=samples,
        method=name,
        log_evidence=torch.logsumexp(log_z, 1) - math.log(runs),
        ess=per_run(out.ess).amin(1),
        log_weights=pooled,
        resampled=per_run(out.resampled).any(1),
        acceptance=None if out.acceptance is None else per_run(out.acceptance).nanmean(1),
        stats=stats,
    )


def _warn_if_collapsed(stats: dict[str, Tensor], name: str, runs: int, merge: str) -> None:
    """Warn (:class:`ParticleDegeneracyWarning`) where the runs' evidence estimates spread so far
    that fewer than :data:`MIN_EFFECTIVE_RUNS` runs carry the evidence weights (out of at least
    twice as many runs): the evidence-weighted draws then rest on one run's particles, and
    equally weighted runs, whose weights ignore it, are far from the target."""
    if runs < 2 * MIN_EFFECTIVE_RUNS:
        return
    eff = stats["effective_runs"]
    low = (eff < MIN_EFFECTIVE_RUNS) & ~stats.get("failed", torch.zeros_like(eff, dtype=torch.bool))
    if not low.any():
        return
    worst = int(eff.masked_fill(~low, math.inf).argmin())
    log_z = stats["run_log_evidence"][worst]
    log_z = log_z[torch.isfinite(log_z)]
    spread = float(log_z.max() - log_z.median())
    consequence = (
        f"the draws rest on about one run (merge ESS {float(stats['merge_ess'][worst]):.1f})"
        if merge == "evidence"
        else "equal weights ignore this, so the draws are far from the posterior"
    )
    warnings.warn(
        f"{name}: the best run's log-evidence exceeds the median run's by {spread:.1f} nats in "
        f"{int(low.sum())} of "
        f"{eff.numel()} problem(s) (problem {worst}: {float(eff[worst]):.2f} effective runs of {runs}): "
        f"{consequence}; use more particles per run (fewer runs)",
        ParticleDegeneracyWarning,
        stacklevel=caller_outside_package(),
    )
