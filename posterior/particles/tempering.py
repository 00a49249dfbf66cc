"""Adaptive tempering: the largest exponent of a potential that keeps the conditional ESS.

With normalised weights ``W_i`` and a reweighting by ``G_i``, the conditional effective sample
size (Zhou, Johansen & Aston, "Toward automatic model comparison: an adaptive sequential Monte
Carlo approach", JCGS 2016) is ``cESS = (sum_i W_i G_i)^2 / sum_i W_i G_i^2``, a fraction in
``(0, 1]`` of the particle system that the reweighting keeps. Adaptive tempering (Jasra, Stephens,
Doucet & Tsagaris, 2011; blackjax's adaptive tempered SMC; ``particles``' AdaptiveTempering)
raises a potential to the largest exponent at which that fraction stays above a target, found
by bisection. Any exponent gives a valid intermediate target; choosing it from the particles
makes the sampler an adaptive SMC, consistent as the number of particles grows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from posterior.distributed.comm import Communicator

__all__ = ["conditional_ess", "temper_exponent"]


def conditional_ess(log_w: Tensor, log_g: Tensor, comm: Communicator) -> Tensor:
    """``(sum W G)^2 / sum W G^2`` per problem: ``log_w, log_g: [B, n] -> [B]`` (sums over every
    rank of ``comm``; ``log_w`` normalised over all of them)."""
    a = comm.logsumexp(log_w + log_g)
    b = comm.logsumexp(log_w + 2 * log_g)
    return torch.exp(2 * a - b).nan_to_num(0.0)


def temper_exponent(
    log_w: Tensor,
    base: Tensor,
    log_g: Tensor,
    low: Tensor,
    target: float,
    comm: Communicator,
    iterations: int = 30,
) -> Tensor:
    """The largest ``lam`` in ``[low, 1]`` with ``conditional_ess(log_w, base + lam * log_g) >=
    target`` per problem (``1`` where it holds at ``1``; ``low`` where it fails already at
    ``low``), by bisection.

    Args:
        log_w: ``[B, n]`` normalised log-weights of the particles.
        base: ``[B, n]`` the part of the log potential that is not tempered.
        log_g: ``[B, n]`` the log potential to temper; ``-inf`` entries count as weight zero.
        low: ``[B]`` the smallest admissible exponent (the previous one, for a rising schedule).
        target: the conditional ESS fraction to keep, in ``(0, 1]``.

    Returns:
        ``lam: Tensor[B]``, the same on every rank.
    """

    def ok(lam: Tensor) -> Tensor:
        scaled = torch.where(torch.isinf(log_g), log_g, lam[:, None] * log_g)  # 0 * -inf stays -inf
        return conditional_ess(log_w, base + scaled, comm) >= target

    low = low.to(log_g.dtype).clamp(0.0, 1.0)
    one = torch.ones_like(low)
    done = ok(one)
    lo, hi = low.clone(), one.clone()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        good = ok(mid)
        lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
    return torch.where(done, one, lo)
