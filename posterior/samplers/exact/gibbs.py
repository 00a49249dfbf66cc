"""``"gibbs"``: split Gibbs sampling with the diffusion prior (PnP-DM, Wu et al., NeurIPS 2024).

Alternates ``z ~ pi(z | x, y)`` (closed form for linear Gaussian problems, MALA otherwise) and
``x ~ pi(x | z)``: exact draws where the prior has them (the Gaussian mixture), else the prior's
reverse process from noise level ``rho``; see :mod:`posterior.kernels.gibbs` for what each
converges to. ``N`` chains per problem run as one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from posterior._utils import check_bool, check_fraction, check_positive, check_positive_int
from posterior.kernels.gibbs import GibbsState, SplitGibbs
from posterior.problem import InverseProblem
from posterior.samplers.base import register
from posterior.samplers.exact._chains import ChainSampler
from posterior.samplers.result import Result

__all__ = ["GibbsSampler"]


@register
class GibbsSampler(ChainSampler):
    """PnP-DM split Gibbs chains; exact for linear Gaussian problems at ``rho < sigma / s_max``.

    Converges to: with a prior that draws ``p(x_0 | x_t)`` exactly (``prior.has_exact_x0_sampler``,
    the Gaussian mixture) and the exact split, the posterior ``p(x | y)`` as sweeps grow (after
    the annealing), with mode proportions from the start (modes farther apart than ``rho`` are
    not crossed; ``init="sir"`` makes them consistent as chains grow). With a network prior the
    prior step is its ``prior_steps``-step reverse chain, and the chains converge to the
    stationary law of the Gibbs kernel built on that chain (narrower than the posterior where the
    chain is narrower than ``p(x | z)``; see :mod:`posterior.kernels.gibbs`).

    Nonlinear operators and non-Gaussian noise models (:mod:`posterior.noise`) take MALA steps for
    ``z`` on PnP-DM's original split, whose ``x``-marginal is the posterior only as ``rho -> 0``
    (biased by ``O(rho^2)``). Where the likelihood is zero somewhere (``noise.vanishes``: Poisson
    at a negative rate) and some draws land there (the prior step never sees it), ``run`` refuses
    the result with a ``ValueError`` rather than return impossible draws.

    ``num_particles`` chains per problem, ``num_steps`` Gibbs sweeps (burn-in included). Each
    sweep costs up to ``prior_steps`` network evaluations per chain.

    Options:
        rho_floor: final coupling ``rho`` (default ``None``: ``0.9 sigma / s_max`` for linear
            Gaussian problems, where the split is exact; ``min sigma`` otherwise).
        rho_start: initial ``rho``, annealed geometrically to the floor during burn-in (default
            ``None``: start at the floor). A large start (PnP-DM uses 10 on images) explores
            from a poor start, but the split at ``rho > sigma / s_max`` targets a wider posterior,
            and mode proportions frozen during the annealing need not be the posterior's.
        rho_decay: annealing factor per sweep (default 0.9).
        correct_likelihood: exact split for linear Gaussian problems (default True); False is
            PnP-DM's original split, biased by ``O(rho^2)``.
        prior_steps: most reverse-process steps per prior step (default 50; ``None``: all); unused
            when the prior step is exact.
        exact_prior_step: exact draws of ``p(x | z)`` where the prior has them (default True);
            ``False`` runs the reverse chain, as with a network prior.
        z_steps: MALA steps of the likelihood step for nonlinear operators (default 10).
        burn_in, thin, init, init_pool, keep_chain: as for ``"mala"`` (``stats["chain"]`` is
            ``[B, N, draws, *event]``; ``init_pool=None``, the default, sizes the ``"sir"`` pool
            by its importance ESS, and ``stats["init_ess"]`` reports it).

    Result: ``samples`` = final states; ``acceptance`` ``[B, num_steps]`` (1 for the closed-form
    likelihood step); ``stats["rho"]`` ``[B, num_steps]``, ``stats["divergences"]``.
    """

    name = "gibbs"
    summary = "split Gibbs (PnP-DM): closed-form likelihood step; exact or reverse-diffusion prior step"

    def __init__(
        self,
        rho_floor: float | None = None,
        rho_start: float | None = None,
        rho_decay: float = 0.9,
        correct_likelihood: bool = True,
        prior_steps: int | None = 50,
        z_steps: int = 10,
        burn_in: int | None = None,
        thin: int = 1,
        init: str | Tensor = "sir",
        init_pool: int | None = None,
        keep_chain: bool = False,
        exact_prior_step: bool = True,
    ) -> None:
        self.rho_floor = check_positive(rho_floor, "rho_floor", allow_none=True)
        self.rho_start = check_positive(rho_start, "rho_start", allow_none=True)
        self.rho_decay = check_fraction(rho_decay, "rho_decay", open_interval=True)
        self.correct_likelihood = check_bool(correct_likelihood, "correct_likelihood")
        self.prior_steps = check_positive_int(prior_steps, "prior_steps", allow_none=True)
        self.z_steps = check_positive_int(z_steps, "z_steps")
        self.exact_prior_step = check_bool(exact_prior_step, "exact_prior_step")
        self._chain_options(burn_in, thin, init, init_pool, keep_chain)

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        result = super().run(problem, num_particles, num_steps, generator, progress)
        if problem.noise is not None and problem.noise.vanishes:
            impossible = problem.log_likelihood(result.samples) == -math.inf  # [B, N]
            if impossible.any():
                raise ValueError(
                    f"'gibbs' drew {float(impossible.float().mean()):.1%} of its draws where the "
                    f"likelihood is zero under {problem.noise!r} noise (a negative rate): its prior "
                    "step p(x | z) never sees where the likelihood vanishes; use 'tds' or 'mala', or a "
                    "forward model whose rate cannot be negative"
                )
        return result

    def kernel(self, problem: InverseProblem) -> SplitGibbs:
        return SplitGibbs(
            problem,
            rho_floor=self.rho_floor,
            rho_start=self.rho_start,
            rho_decay=self.rho_decay,
            correct_likelihood=self.correct_likelihood,
            prior_steps=self.prior_steps,
            z_steps=self.z_steps,
            exact_prior_step=self.exact_prior_step,
        )

    def traces(self, kernel: SplitGibbs) -> dict[str, Callable[[GibbsState], float]]:
        return {"rho": kernel.rho}  # the rho of each sweep
