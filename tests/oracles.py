"""Reference posteriors for tests and benchmarks where no closed form exists.

:func:`importance_posterior` is the oracle for non-Gaussian noise models and nonlinear operators
on priors that sample exactly (the Gaussian mixture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein


@dataclass
class ImportancePosterior:
    """Prior draws weighted by the likelihood, per problem.

    Attributes:
        draws: ``Tensor[M, *event_shape]``, exact prior draws shared by the problems.
        log_weights: ``Tensor[B, M]``, normalised: ``logsumexp = 0`` per problem.
        ess: ``Tensor[B]``, the importance effective sample size ``1 / sum w^2``.
        log_evidence: ``Tensor[B]``, ``log mean_j p(y | x_j)``, an unbiased estimate of ``p(y)``
            (on the natural scale).
    """

    draws: Tensor
    log_weights: Tensor
    ess: Tensor
    log_evidence: Tensor

    def sample(self, n: int, seed: int) -> Tensor:
        """``Tensor[B, n, *event_shape]``: multinomial resampling of the weighted draws. Close to
        ``n`` independent posterior draws when ``ess >> n``."""
        gen = torch.Generator(self.draws.device).manual_seed(seed)
        idx = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=gen)  # [B, n]
        return self.draws[idx]

    def mean(self) -> Tensor:
        """``Tensor[B, *event_shape]``: the self-normalised posterior mean."""
        w = self.log_weights.exp()
        return torch.einsum("bm,m...->b...", w, self.draws)


def importance_posterior(
    problem: ps.InverseProblem, num_draws: int = 10**6, seed: int = 0, chunk: int = 2**17
) -> ImportancePosterior:
    """Self-normalised importance sampling of ``p(x | y)`` with the prior as proposal.

    ``num_draws`` exact draws ``x_j ~ p(x)`` (``problem.prior.sample``, exact for the
    Gaussian-mixture prior), weights ``w_j ∝ p(y | x_j)`` from ``problem.log_likelihood`` (any noise
    model, any operator), computed in float64.

    Exact for: the posterior of the continuous model, prior times likelihood, as ``num_draws``
    grows (consistent, with error ``O(1 / sqrt(ess))``); not for the posterior of a ``K``-step
    diffusion chain (a sampler with ``num_steps`` steps targets that one, within the
    discretisation error of its prior). Trust it where ``ess`` is large against the number of
    draws compared (check ``ess`` in the caller).
    """
    prior = problem.prior
    gen = torch.Generator(prior.device).manual_seed(seed)
    draws = prior.sample(num_draws, gen)
    B = problem.batch_size
    logl = []
    for start in range(0, num_draws, chunk):
        x = draws[start : start + chunk]
        ll = problem.log_likelihood(x.unsqueeze(0).expand(B, *x.shape))
        logl.append(ll.double())
    logl_all = torch.cat(logl, 1)  # [B, M]
    if not torch.isfinite(logl_all.logsumexp(-1)).all():
        raise ValueError("importance_posterior: every prior draw has likelihood 0 for some problem")
    log_z = logl_all.logsumexp(-1)
    log_w = logl_all - log_z[:, None]
    ess = 1 / log_w.mul(2).exp().sum(-1)
    return ImportancePosterior(draws.double(), log_w, ess, log_z - math.log(num_draws))


def distance_and_floor(
    reference: ImportancePosterior, samples: Tensor, seed: int = 0, repeats: int = 4
) -> tuple[Tensor, Tensor]:
    """Sliced W1 of ``samples`` (``[B, N, d]``, or ``[N, d]`` for one problem) to ``N`` reference
    draws, and the floor: the same distance between two independent sets of ``N`` reference draws.
    Each is averaged over ``repeats`` fresh reference sets (the statistic is noisy where the
    posterior has several modes: its spread comes from the mode weights of ``N`` draws). ``[B]``."""
    if samples.dim() == reference.draws.dim():  # one problem, unbatched
        samples = samples.unsqueeze(0)
    N = samples.shape[1]
    refs = [reference.sample(N, seed + k) for k in range(2 * repeats)]
    dist = torch.stack([sliced_wasserstein(samples.double(), refs[k]) for k in range(repeats)]).mean(0)
    floor = torch.stack([sliced_wasserstein(refs[2 * k], refs[2 * k + 1]) for k in range(repeats)]).mean(0)
    return dist, floor
