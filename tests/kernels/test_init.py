"""Starting points of the MCMC chains: the likelihood-weighted ("sir") start and its pool."""

from __future__ import annotations

import math

import pytest
import torch

import posterior as ps
from posterior.kernels.init import POOL_ROUND, initial_chains


def _two_modes(noise: float = 0.02, batch: int = 1) -> ps.InverseProblem:
    # x1 observed; x2 has two modes 16 prior sds apart, which no local kernel crosses. Posterior
    # mode weights: w_k N(y; mu_k1, 1 + noise^2), 0.12 / 0.88 (the prior's are 0.5 / 0.5).
    prior = ps.GaussianMixturePrior(
        torch.tensor([0.5, 0.5]), torch.tensor([[-2.0, -8.0], [2.0, 8.0]]), torch.ones(2, 2)
    )
    y = torch.full((batch, 1), 0.5) if batch > 1 else torch.tensor([0.5])
    return ps.InverseProblem(prior, torch.tensor([[1.0, 0.0]]), y, noise)


@pytest.mark.parametrize("method", ["mala", "gibbs"])
def test_mode_weights_match_the_exact_mixture(method: str) -> None:
    # Eight independent copies: chains in the upper mode per copy, against the exact weight p.
    # The start's pool has ESS >= N, so a copy's fraction has variance at most
    # p (1 - p) (1 / N + 1 / ESS) <= 2 p (1 - p) / N (binomial error of the resampling plus the
    # pool's); the sum of the eight squared z-scores is then below the 0.999 quantile of a
    # chi-square with 8 degrees of freedom (26.12). A pool of 16 draws per chain (ESS ~ 80
    # here) gives sums of 23 to 95 over six seeds (31 at this one).
    B, N = 8, 1000
    problem = _two_modes(batch=B)
    p = float(problem.exact_posterior().weights[0, 1])
    r = ps.sample(problem, method, N, 10, seed=0)
    frac = (r.samples[..., 1] > 0).double().mean(1)  # [B]
    z = (frac - p) / math.sqrt(2 * p * (1 - p) / N)
    assert float(z.pow(2).sum()) < 26.12, (frac.tolist(), p)
    assert (r.stats["init_ess"] >= N).all(), r.stats["init_ess"]


def test_pool_grows_with_closed_form_draws_only() -> None:
    problem = _two_modes()
    N = 200
    gen = torch.Generator().manual_seed(0)
    grown = initial_chains(problem, N, gen, "sir")
    assert grown.x.shape == (1, N, 2) and float(grown.ess[0]) >= N
    fixed = initial_chains(problem, N, gen, "sir", pool=POOL_ROUND)  # one round of 16 per chain
    assert float(fixed.ess[0]) < N / 2
    problem.prior.has_closed_form_sample = False  # as a network prior: its draws are expensive
    one = initial_chains(problem, N, gen, "sir")
    assert float(one.ess[0]) < N / 2
    assert initial_chains(problem, N, gen, "prior").ess is None


def test_degenerate_start_pool_warns() -> None:
    problem = _two_modes(noise=1e-4)
    with pytest.warns(ps.ParticleDegeneracyWarning, match="mala: the init='sir' start pool"):
        ps.sample(problem, "mala", 4, 4, seed=0, init_pool=1)
    with pytest.raises(ValueError, match="init_pool"):
        ps.sample(problem, "mala", 4, 4, seed=0, init_pool=0)
