"""Reference posteriors for testing samplers, each exact for a stated target.

- :meth:`InverseProblem.exact_posterior` (closed form): a Gaussian-mixture prior, a linear
  operator and Gaussian noise; the posterior of the *continuous* prior.
- :func:`chain_posterior` (this module): the posterior of the ``K``-step reverse chain a particle
  sampler simulates (start distribution included), by self-normalised importance sampling of
  many independent chain draws weighted by the likelihood ``p(y | x_0)``. Exact as the number of
  draws grows, for any prior whose noised marginal at the chain's first time can be drawn exactly
  (``prior.sample_marginal``) or for the ``N(0, I)`` start, and for any likelihood
  ``problem.log_likelihood``. This is what the exact SMC samplers converge to as particles grow
  at fixed ``num_steps``; at small ``K`` it visibly differs from the continuous posterior.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import as_generator
from posterior.problem import InverseProblem
from posterior.schedule import CLEAN, DEFAULT_TIME_GRID, TimeGrid

__all__ = ["ChainPosterior", "chain_draws", "chain_posterior"]


class ChainPosterior(NamedTuple):
    """Importance-sampling reference for the ``K``-step chain's posterior.

    Attributes:
        samples: ``Tensor[B, n, *event_shape]`` equally weighted draws (multinomial resampling).
        log_evidence: ``Tensor[B]``, ``log`` of the mean likelihood over the chain draws.
        ess: ``Tensor[B]``, the importance sampling effective sample size (trust the reference
            only where it is large against ``n``).
    """

    samples: Tensor
    log_evidence: Tensor
    ess: Tensor


def chain_draws(
    prior,
    num_steps: int,
    num_draws: int,
    generator: torch.Generator,
    *,
    eta: float = 1.0,
    exact_start: bool = True,
    time_grid: TimeGrid = DEFAULT_TIME_GRID,
    kernel_var: str = "ddim",
) -> Tensor:
    """Independent draws of the ``num_steps``-step DDIM(``eta``) chain: ``Tensor[n, *event_shape]``.

    The chain starts from the prior's exact noised marginal at its first time when
    ``exact_start`` and the prior can draw it (``prior.sample_marginal``), else from ``N(0, I)``;
    it walks ``prior.schedule.time_pairs(num_steps, time_grid)`` with the prior's reverse kernel,
    the last step (to ``CLEAN``) being the deterministic denoiser. Give the sampler's
    ``time_grid`` and ``kernel_var`` (``"analytic"``: Analytic-DPM's variance around the same
    mean, :mod:`posterior.samplers.exact.analytic_variance`) to compare with it.
    """
    from posterior.samplers.exact.analytic_variance import kernel_variances

    pairs = prior.schedule.time_pairs(num_steps, time_grid)
    variances = None if kernel_var == "ddim" else kernel_variances(prior, pairs, eta, kernel_var)
    t0 = pairs[0][0]
    if exact_start and prior.has_exact_marginal:
        x = prior.sample_marginal(num_draws, t0, generator)
    else:
        shape = (num_draws, *prior.event_shape)
        x = torch.randn(shape, generator=generator, device=prior.device, dtype=prior.dtype)
    for t, s in pairs:
        mean, std, _ = prior.reverse_kernel(x, t, s, eta)
        std = std if variances is None else variances[(t, s)] ** 0.5
        x = mean
        if s != CLEAN and float(std) > 0:
            x = mean + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


def chain_posterior(
    problem: InverseProblem,
    num_steps: int,
    num_draws: int = 10**6,
    num_samples: int = 4096,
    seed: int | torch.Generator = 0,
    *,
    eta: float = 1.0,
    exact_start: bool = True,
    time_grid: TimeGrid = DEFAULT_TIME_GRID,
    kernel_var: str = "ddim",
) -> ChainPosterior:
    """The posterior of the ``num_steps``-step chain by importance sampling of its draws.

    ``num_draws`` chain draws (shared by the ``B`` problems of ``problem``) are weighted by
    ``exp(problem.log_likelihood(x_0))``; the log-evidence is the log of their mean weight and
    ``num_samples`` reference draws are resampled from them per problem. The estimate is
    consistent as ``num_draws`` grows; its accuracy is set by :attr:`ChainPosterior.ess`. The
    chain walks ``time_grid`` (the grid of ``ps.sample(..., time_grid=)``) with the kernel
    variance ``kernel_var`` (the samplers' option of that name).
    """
    gen = as_generator(seed, problem.prior.device)
    x = chain_draws(
        problem.prior,
        num_steps,
        num_draws,
        gen,
        eta=eta,
        exact_start=exact_start,
        time_grid=time_grid,
        kernel_var=kernel_var,
    )
    B = problem.batch_size
    log_w = problem.log_likelihood(x.unsqueeze(0).expand(B, *x.shape)).double()  # [B, n]
    log_z = torch.logsumexp(log_w, -1) - math.log(num_draws)
    w = torch.softmax(log_w, -1)
    ess = 1.0 / w.pow(2).sum(-1)
    idx = torch.multinomial(w, num_samples, replacement=True, generator=gen)  # [B, num_samples]
    return ChainPosterior(x[idx], log_z.to(x.dtype), ess.to(x.dtype))
