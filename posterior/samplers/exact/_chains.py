"""What the MCMC samplers (``"mala"``, ``"gibbs"``) share: chain options, the start, the driver.

A :class:`ChainSampler` builds its kernel (:meth:`ChainSampler.kernel`, a
:class:`~posterior.kernels.chains.ChainKernel`), starts ``N`` chains per problem
(:func:`~posterior.kernels.initial_chains`) and runs them with
:func:`~posterior.kernels.chains.run_mcmc`.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from posterior._utils import check_bool, check_choice, check_int, check_positive_int
from posterior.kernels.chains import ChainKernel, run_mcmc
from posterior.kernels.init import INITS, initial_chains
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler
from posterior.samplers.result import Result

__all__ = ["ChainSampler"]


class ChainSampler(Sampler):
    """A sampler running ``num_particles`` MCMC chains per problem for ``num_steps`` iterations.

    Options shared by every chain sampler (validated here): ``burn_in`` (warm-up iterations,
    default ``num_steps // 2``), ``thin``, ``init`` (``"sir"``, ``"prior"`` or a tensor),
    ``init_pool``, ``keep_chain``. Subclasses implement :meth:`kernel` and may name traces.
    """

    exact = True
    particle_stats = ("chain",)

    def _chain_options(
        self, burn_in: int | None, thin: int, init: str | Tensor, init_pool: int | None, keep_chain: bool
    ) -> None:
        self.burn_in = check_int(burn_in, "burn_in", allow_none=True)
        self.thin = check_positive_int(thin, "thin")
        if not isinstance(init, Tensor):
            check_choice(init, "init", INITS)
        self.init = init
        self.init_pool = check_positive_int(init_pool, "init_pool", allow_none=True)
        self.keep_chain = check_bool(keep_chain, "keep_chain")

    @abstractmethod
    def kernel(self, problem: InverseProblem) -> ChainKernel:
        """The kernel on ``problem``'s posterior."""

    def traces(self, kernel: Any) -> dict[str, Callable[[Any], Tensor | float]]:
        """``{stat: fn(state)}`` recorded before every transition (``Result.stats``, ``[B, num_steps]``)."""
        return {}

    def shard(self, problem: InverseProblem, start: int, count: int) -> Sampler:
        """A tensor ``init`` (``[N, *event]`` or ``[B, N, *event]``) cut to chains
        ``start .. start + count - 1``, for a run whose chains are split across ranks."""
        init = self.init
        dim = init.dim() - len(problem.event_shape) - 1 if isinstance(init, Tensor) else -1
        if dim not in (0, 1):
            return self  # a named init, or a shape that initial_chains will reject
        out = copy.copy(self)
        out.init = init.narrow(dim, start, count)
        return out

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        burn_in = num_steps // 2 if self.burn_in is None else self.burn_in
        if burn_in >= num_steps:
            raise ValueError(f"burn_in ({burn_in}) must be smaller than num_steps ({num_steps})")
        kernel = self.kernel(problem)
        x0, init_ess = initial_chains(problem, num_particles, generator, self.init, self.init_pool, self.name)
        out = run_mcmc(
            self.name,
            kernel,
            x0,
            num_steps,
            burn_in,
            generator,
            thin=self.thin,
            keep_chain=self.keep_chain,
            progress=progress,
            trace=self.traces(kernel),
        )
        stats = out.stats
        if init_ess is not None:
            stats["init_ess"] = init_ess
        return Result(samples=out.samples, method=self.name, acceptance=out.acceptance, stats=stats)
