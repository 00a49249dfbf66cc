"""The options every particle sampler shares, and the run that hands its model to the engine."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior._utils import check_bool
from posterior.particles.engine import SMCOutput, check_resampling_options, run_smc, warn_if_degenerate
from posterior.particles.feynman_kac import FeynmanKacModel, Move
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler
from posterior.samplers.result import Result

__all__ = ["ParticleSampler", "TwistedSampler", "auto_runs", "merge_runs", "to_result"]

#: ``runs="auto"``: at most this many independent runs ...
AUTO_MAX_RUNS = 32
#: ... of at least this many particles each.
AUTO_MIN_RUN = 4
#: Independent runs of at least this many particles warn when one degenerates (ESS below 2).
WARN_RUN_SIZE = 16


def auto_runs(num_particles: int) -> int:
    """The number of runs ``runs="auto"`` splits ``num_particles`` into: the largest divisor of
    ``num_particles`` not above :data:`AUTO_MAX_RUNS` that leaves each run at least
    :data:`AUTO_MIN_RUN` particles (``1`` below 8 particles). E.g. 128 -> 32 runs of 4, 2000 -> 25
    runs of 80, 4096 -> 32 runs of 128. The number of runs stays bounded, so each run grows with
    ``num_particles`` and the draws converge as one run's do."""
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
    ) -> None:
        check_resampling_options(resampling, threshold)
        if runs != "auto" and (isinstance(runs, (bool, str)) or not isinstance(runs, int) or runs < 1):
            raise ValueError(
                f"runs must be an integer >= 1 (independent particle systems) or 'auto', got {runs!r}"
            )
        check_bool(exact_start, "exact_start")
        check_bool(rejuvenate, "rejuvenate")
        if isinstance(eta, bool) or not 0.0 < float(eta) <= 1.0:
            raise ValueError(f"eta must be in (0, 1] (a stochastic reverse kernel), got {eta!r}")
        if move is not None and not callable(move):
            raise ValueError("move must be a callable move(particles, log_target_fn, generator)")
        self.resampling, self.threshold, self.eta = resampling, threshold, float(eta)
        self.exact_start, self.move, self.rejuvenate = exact_start, move, rejuvenate
        self.runs = runs

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
        pairs = self.time_pairs(problem, num_steps)
        model = self.model(problem if R == 1 else problem.repeat(R), pairs)
        if self.move is not None and getattr(model, "noiseless", False):
            raise ValueError(
                f"{self.name!r}: a move needs noise_std > 0 (with noise_std = 0 the intermediate "
                "target at the last noisy time lives on {A x = y}, where a Langevin move cannot stay)"
            )
        out = run_smc(
            model,
            pairs,
            problem.batch_size * R,
            num_particles // R,
            generator,
            resampling=self.resampling,
            threshold=self.threshold,
            move=self.move,
            rejuvenate=self.rejuvenate,
            progress=progress,
            warn_degenerate=False,  # below, naming a run where there are several
        )
        # runs of a few particles are meant to end on one or two each (the spread between runs,
        # R-hat over the runs as ArviZ chains, is then the diagnostic); one run or a larger run
        # should not
        if R == 1 or num_particles // R >= WARN_RUN_SIZE:
            warn_if_degenerate(out.ess, self.name, runs=R)
        result = to_result(out, self.name)
        result = result if R == 1 else merge_runs(result, R)
        result.options = {"runs": R}  # the number of runs as run ("auto" resolved)
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
    ) -> None:
        super().__init__(resampling, threshold, eta, exact_start, move, rejuvenate, runs)
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


def merge_runs(result: Result, runs: int) -> Result:
    """The result of ``runs`` independent particle systems per problem, run as the rows
    ``b * runs + r`` of one batch (``samples: [B * runs, n, ...]``), as one result per problem.

    ``samples``: ``[B, runs * n, ...]``, run by run. ``log_evidence``: the mean of the runs'
    evidence estimates (``log`` of the mean of ``Z_r``, still unbiased for ``Z``).
    ``log_weights``: each run's normalised weights divided by ``runs``. ``ess``: the smallest over
    the runs at each step; ``resampled``: whether any run resampled; ``acceptance``: the mean.
    ``stats["run_log_evidence"]: [B, runs]`` and ``stats["run_ess"]: [B, runs, num_steps]`` keep
    the runs apart (:meth:`Result.split_runs` and the ArviZ chains read them).
    """
    BR, n = result.samples.shape[:2]
    B = BR // runs

    def per_run(t: Tensor) -> Tensor:
        return t.reshape(B, runs, *t.shape[1:])

    log_z = per_run(result.log_evidence)
    stats = {"run_log_evidence": log_z, "run_ess": per_run(result.ess)}
    return Result(
        samples=result.samples.reshape(B, runs * n, *result.samples.shape[2:]),
        method=result.method,
        log_evidence=torch.logsumexp(log_z, 1) - math.log(runs),
        ess=per_run(result.ess).amin(1),
        log_weights=(per_run(result.log_weights) - math.log(runs)).reshape(B, runs * n),
        resampled=per_run(result.resampled).any(1),
        acceptance=None if result.acceptance is None else per_run(result.acceptance).nanmean(1),
        stats=stats,
    )
