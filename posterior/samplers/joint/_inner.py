"""The inner particle run of the joint samplers: evidence estimates and draws at given parameters."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from posterior.parameters import Parameters
from posterior.particles import ParticleDegeneracyWarning
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler, get_method
from posterior.samplers.exact.particle_sampler import ParticleSampler
from posterior.samplers.result import Result

__all__ = ["InnerRun", "draw_one", "inner_sampler"]


def inner_sampler(inner: str, options: dict[str, Any] | None, owner: str) -> ParticleSampler:
    """The exact particle sampler ``inner`` (a registered name, e.g. ``"tds"``) with ``options``
    (resampling at every step unless ``options`` set ``threshold``); a one-line ``ValueError``
    naming ``owner``'s option otherwise."""
    if not isinstance(inner, str):
        raise ValueError(f"{owner}: inner must be the name of an exact particle sampler, got {inner!r}")
    try:
        cls = get_method(inner)
    except ValueError as err:
        raise ValueError(f"{owner}: inner: {err}") from None
    if not issubclass(cls, ParticleSampler):
        raise ValueError(
            f"{owner}: inner must be an exact particle sampler with an unbiased evidence estimate "
            f"(e.g. 'tds', 'smc', 'mcgdiff'), got {inner!r}"
        )
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"{owner}: inner_options must be a dict of {inner!r}'s options, got {options!r}")
    unknown = set(options or {}) - set(cls.option_names())
    if unknown:
        raise ValueError(f"{owner}: inner_options: {inner!r} has no option {', '.join(sorted(unknown))}")
    # resampling at every step keeps the evidence estimate unbiased (an ESS-triggered schedule
    # depends on the particles, and its estimate is only consistent: Del Moral, Doucet & Jasra 2012)
    fixed = {"threshold": "always"} if "threshold" in cls.option_names() else {}
    return cls(**{**fixed, **(options or {})})  # type: ignore[return-value]


def draw_one(result: Result, generator: torch.Generator) -> Tensor:
    """One draw per problem row of a batched particle result: ``Tensor[rows, *event]``.

    The draw is a particle of the final (resampled, equally weighted) population picked uniformly;
    where the result holds ``R`` independent runs each weighted ``1 / R``
    (``stats["run_log_evidence"]`` without the evidence-weighted merge), the run is first picked
    with probability ``Z_r / sum Z`` (then a particle of its own draws), so that the draw goes
    with the mean-of-``Z`` evidence estimate as particle marginal MH needs (Andrieu, Doucet &
    Holenstein 2010, Theorem 4).
    """
    samples = result.samples  # [rows, N, *event]
    rows, N = samples.shape[:2]
    dev = samples.device
    if "run_log_evidence" in result.stats and result.options.get("merge") != "evidence":
        samples = result.stats.get("run_samples", samples)  # each run's own draws, run by run
        log_z = result.stats["run_log_evidence"].double()  # [rows, R]
        R = log_z.shape[1]
        n = N // R
        probs = torch.softmax(log_z, 1).cpu()
        run = torch.multinomial(probs, 1, generator=_cpu(generator))[:, 0].to(dev)
        pick = run * n + torch.randint(n, (rows,), generator=generator, device=generator.device).to(dev)
    else:
        pick = torch.randint(N, (rows,), generator=generator, device=generator.device).to(dev)
    return samples[torch.arange(rows, device=dev), pick]


def _cpu(generator: torch.Generator) -> torch.Generator:
    """``generator`` if on the CPU, else a CPU generator seeded from it (``torch.multinomial`` on
    CPU probabilities needs one)."""
    if generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


class InnerRun:
    """Runs ``sampler`` on a problem at ``B x R`` parameter values: the log-evidence estimates
    ``Tensor[B, R]`` (float64, on the CPU as the parameters) and one draw of ``x`` per value,
    ``Tensor[B, R, *event]``.

    Noise parameters only: one batched run of ``B * R`` problems. Operator parameters: one run per
    value (an operator per value). No unknowns: ``R`` independent runs per problem. A non-finite
    inner run is a ``FloatingPointError`` naming ``owner`` (the joint sampler) first.
    """

    def __init__(
        self, sampler: ParticleSampler, parameters: Parameters, problem: InverseProblem, owner: str
    ) -> None:
        self.sampler, self.parameters, self.problem, self.owner = sampler, parameters, problem, owner

    def __call__(
        self,
        values: dict[str, Tensor],
        shape: tuple[int, int],
        particles: int,
        num_steps: int,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        B, R = shape
        if self.parameters:
            problems = self.parameters.instantiate(self.problem, values)
        else:  # nothing unknown: R independent runs per problem
            problems = [self.problem.repeat(R)]
        log_z, draws = [], []
        for sub in problems:
            try:
                res = run_quietly(self.sampler, sub, particles, num_steps, generator)
            except FloatingPointError as err:  # named by the joint sampler, then the inner one
                raise FloatingPointError(f"{self.owner}: inner {err}") from None
            log_z.append(res.log_evidence.double().cpu())
            draws.append(draw_one(res, generator))
        x = torch.cat(draws)
        return torch.cat(log_z).reshape(B, R), x.reshape(B, R, *x.shape[1:])


def run_quietly(
    sampler: Sampler, problem: InverseProblem, particles: int, num_steps: int, generator: torch.Generator
) -> Result:
    """``sampler.run`` without a progress bar and without degeneracy warnings (an inner run at a
    poor parameter value is expected to degenerate: its evidence is then small, which is the
    information the outer chain uses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParticleDegeneracyWarning)
        return sampler.run(problem, particles, num_steps, generator, False)
