"""Starting points for MCMC chains on ``B`` problems at once."""

from __future__ import annotations

import torch
from torch import Tensor

from posterior.problem import InverseProblem

__all__ = ["INITS", "initial_chains"]

INITS = ("sir", "prior")


def initial_chains(
    problem: InverseProblem,
    num_chains: int,
    generator: torch.Generator,
    init: str | Tensor = "sir",
    pool: int = 16,
) -> Tensor:
    """``Tensor[B, N, *event_shape]`` starting points for ``N = num_chains`` chains per problem.

    * ``"prior"``: independent prior draws.
    * ``"sir"``: sampling-importance-resampling (Rubin, 1988): ``pool * N`` prior draws per
      problem, weighted by the likelihood, ``N`` of them drawn by multinomial resampling. As
      ``pool`` grows the start approaches the posterior, so chains of a posterior-invariant kernel
      start (and stay) near stationarity, across modes a local kernel could not cross.
    * a tensor ``[N, *event]`` (shared by all problems) or ``[B, N, *event]``.

    Prior draws of a network prior cost a full reverse process each: prefer ``"prior"`` or a
    small ``pool`` there.
    """
    B, event = problem.batch_size, problem.event_shape
    prior = problem.prior
    if isinstance(init, Tensor):
        x = init.to(device=prior.device, dtype=prior.dtype)
        if tuple(x.shape) == (num_chains, *event):
            x = x.expand(B, *x.shape)
        if tuple(x.shape) != (B, num_chains, *event):
            raise ValueError(
                f"init must have shape [{num_chains}, *event] or [{B}, {num_chains}, *event], "
                f"got {list(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("init contains NaN or inf")
        return x.clone()
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS} or a tensor, got {init!r}")
    if init == "prior":
        return prior.sample(B * num_chains, generator).reshape(B, num_chains, *event)
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"init_pool must be a positive integer, got {pool!r}")
    M = pool * num_chains
    x = prior.sample(B * M, generator).reshape(B, M, *event)
    logw = problem.log_likelihood(x)  # [B, M]
    w = torch.softmax(logw.double(), dim=-1)
    idx = torch.multinomial(w, num_chains, replacement=True, generator=generator)  # [B, N]
    return torch.gather(x, 1, idx.reshape(B, num_chains, *([1] * len(event))).expand(B, num_chains, *event))
