"""Starting points for MCMC chains on ``B`` problems at once."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import check_finite, check_positive_int
from posterior.particles.engine import DEGENERATE_ESS, ParticleDegeneracyWarning
from posterior.problem import InverseProblem

__all__ = ["INITS", "MAX_POOL_ROUNDS", "Start", "initial_chains"]

INITS = ("sir", "prior")

#: Prior draws per chain in one round of the ``"sir"`` pool.
POOL_ROUND = 16
#: Most rounds of the automatic ``"sir"`` pool (``POOL_ROUND * MAX_POOL_ROUNDS`` draws per chain).
MAX_POOL_ROUNDS = 64


class Start(NamedTuple):
    """Chains' starting points ``x: [B, N, *event]`` and, for ``"sir"``, the importance ESS of the
    pool they were resampled from, ``ess: [B]`` (``None`` otherwise)."""

    x: Tensor
    ess: Tensor | None


def initial_chains(
    problem: InverseProblem,
    num_chains: int,
    generator: torch.Generator,
    init: str | Tensor = "sir",
    pool: int | None = None,
    name: str = "chains",
) -> Start:
    """Starting points for ``N = num_chains`` chains per problem.

    * ``"prior"``: independent prior draws.
    * ``"sir"``: sampling-importance-resampling (Rubin, 1988): prior draws weighted by the
      likelihood, ``N`` of them drawn by multinomial resampling. The start's mode proportions are
      the pool's self-normalised importance estimates, whose Monte Carlo error is that of
      ``ESS`` independent posterior draws (``ESS`` = the pool's importance effective sample size),
      and a local kernel cannot correct them across separated modes. So the pool is sized by its
      ESS: ``pool=None`` (default) draws rounds of ``16 N`` prior draws until the ESS reaches
      ``N`` (the error of ``N`` independent draws), at most ``1024 N`` draws, when the prior draws
      exactly in closed form (``prior.has_closed_form_sample``); one round otherwise (each draw
      of a network prior costs a full reverse process). An int ``pool`` draws ``pool * N`` once.
      The start converges to the posterior as ``N`` grows either way; ``Start.ess`` reports the
      ESS, and an ESS below 2 (every chain starts at about one draw) issues a
      :class:`~posterior.ParticleDegeneracyWarning` naming ``name``.
    * a tensor ``[N, *event]`` (shared by all problems) or ``[B, N, *event]``.
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
        return Start(x.clone(), None)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS} or a tensor, got {init!r}")
    if init == "prior":
        return Start(prior.sample(B * num_chains, generator).reshape(B, num_chains, *event), None)
    check_positive_int(pool, "init_pool", allow_none=True)
    if pool is None:
        per_round, rounds = POOL_ROUND, MAX_POOL_ROUNDS if prior.has_closed_form_sample else 1
    else:
        per_round, rounds = pool, 1
    x, ess = _sir(problem, num_chains, per_round * num_chains, rounds, generator, name)
    if (ess < DEGENERATE_ESS).any():
        warnings.warn(
            f"{name}: the init='sir' start pool has an importance ESS of {float(ess.min()):.2f} for "
            f"{num_chains} chains: the chains start from about one prior draw, and modes they cannot "
            "cross keep that start's proportions; raise init_pool, or pass init='prior' or a tensor",
            ParticleDegeneracyWarning,
            stacklevel=3,
        )
    return Start(x, ess)


def _sir(
    problem: InverseProblem, N: int, M: int, max_rounds: int, generator: torch.Generator, name: str
) -> tuple[Tensor, Tensor]:
    """``N`` draws per problem by multinomial resampling of rounds of ``M`` likelihood-weighted
    prior draws, until the pool's ESS reaches ``N`` or ``max_rounds`` rounds are drawn.

    Rounds are merged as they come (memory of one round): each chain keeps its pick or takes the
    new round's with probability ``W_new / (W_old + W_new)`` (``W`` the rounds' total weights),
    which is multinomial resampling from the union of the rounds. Returns ``x: [B, N, *event]``
    and the pool's ESS ``(sum w)^2 / sum w^2``: ``[B]``. Non-finite prior draws are a
    ``FloatingPointError`` naming ``name``.
    """
    B, event = problem.batch_size, problem.event_shape
    x = log_w = log_w2 = None
    for _ in range(max_rounds):
        draws = problem.prior.sample(B * M, generator).reshape(B, M, *event)
        check_finite(draws, f"{name}: init='sir' prior draws")
        logw = problem.log_likelihood(draws).double()  # [B, M]
        idx = torch.multinomial(torch.softmax(logw, -1), N, replacement=True, generator=generator)
        picks = torch.gather(draws, 1, idx.reshape(B, N, *([1] * len(event))).expand(B, N, *event))
        lse, lse2 = torch.logsumexp(logw, -1), torch.logsumexp(2 * logw, -1)  # [B]
        if x is None or log_w is None or log_w2 is None:
            x, log_w, log_w2 = picks, lse, lse2
        else:
            total = torch.logaddexp(log_w, lse)
            take = torch.rand(B, N, generator=generator, device=logw.device, dtype=torch.float64)
            take = take < torch.exp(lse - total)[:, None]
            x = torch.where(take.reshape(B, N, *([1] * len(event))), picks, x)
            log_w, log_w2 = total, torch.logaddexp(log_w2, lse2)
        ess = torch.exp(2 * log_w - log_w2)
        if (ess >= N).all():
            break
    assert x is not None
    return x, ess.to(x.dtype)
