"""Test-only samplers: exact posterior draws (calibrated) and an over-confident variant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from posterior.problem import InverseProblem
from posterior.samplers.base import METHODS, Sampler
from posterior.samplers.result import Result


class OracleSampler(Sampler):
    """Draws from ``problem.exact_posterior()`` (shrunk towards its draws' mean by ``shrink``)."""

    name = "test_oracle"
    exact = True
    summary = "test only: exact posterior draws"

    def __init__(self, shrink: float = 1.0) -> None:
        self.shrink = shrink

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        post = problem.exact_posterior()
        x = post.sample(num_particles, generator)  # [B, N, d]
        if not problem.batched:
            x = x[None]
        if self.shrink != 1.0:
            m = x.mean(1, keepdim=True)
            x = m + self.shrink * (x - m)
        B = x.shape[0]
        ess = torch.full((B, num_steps), float(num_particles))
        log_w = torch.full((B, num_particles), -float(torch.log(torch.tensor(float(num_particles)))))
        problem.prior.num_evals += B * num_particles * num_steps
        return Result(
            samples=x.to(problem.prior.dtype),
            method=self.name,
            log_evidence=problem.exact_log_evidence().reshape(B),
            ess=ess,
            log_weights=log_w,
            resampled=torch.zeros(B, num_steps, dtype=torch.bool),
            stats={"step_size": torch.ones(B, num_steps)},
        )


class ApproxOracleSampler(OracleSampler):
    name = "test_oracle_approx"
    exact = False
    summary = "test only: exact posterior draws, flagged approximate"


@contextmanager
def oracle_samplers_registered() -> Iterator[None]:
    """Register the test samplers for the duration of a test module, then remove them, so that
    other modules that loop over ``ps.METHODS`` never see them."""
    added = [cls for cls in (OracleSampler, ApproxOracleSampler) if cls.name not in METHODS]
    for cls in added:
        METHODS[cls.name] = cls
    try:
        yield
    finally:
        for cls in added:
            METHODS.pop(cls.name, None)
