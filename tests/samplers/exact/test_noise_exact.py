"""tds and mala under Poisson, Student-t and Laplace noise against the importance-sampling oracle.

The oracle (:func:`tests.oracles.importance_posterior`) weighs 4 * 10^6 exact prior draws by the
likelihood; its effective sample size is checked to be at least 10x the particles compared.
"""

from __future__ import annotations

import math

import pytest
import torch

import posterior as ps
from tests.noise._problems import NONLINEAR, PROBLEMS
from tests.oracles import distance_and_floor, importance_posterior

DRAWS = 4 * 10**6
N = 1000

CASES = [(name, m) for name in PROBLEMS for m in ("tds", "mala") if not (m == "tds" and name in NONLINEAR)]


def test_the_problems_have_low_counts_with_zeros_and_an_outlier() -> None:
    counts = PROBLEMS["poisson-softplus"](8).y_batch
    assert (counts == 0).any() and counts.max() <= 10
    assert (PROBLEMS["poisson-matrix"](8).y_batch == 0).any()
    t = PROBLEMS["studentt-outlier"](8)
    resid = t.y_batch - t.operator.A(t.truth)
    assert (resid[:, 1] > 6 * 0.5).all()  # the outlier entry, beyond 6 scales


def test_importance_oracle_matches_the_closed_form_posterior() -> None:
    """With Gaussian noise the oracle's draws sit at the exact-vs-exact floor of the closed-form
    posterior, and its evidence matches the closed form within 4 of its standard errors."""
    problem = ps.problems.gmm_benchmark(4, 2, seed=1)
    ref = importance_posterior(problem, 10**6)
    exact = problem.exact_posterior()
    draws = ref.sample(2000, 0)[0]
    gens = [torch.Generator().manual_seed(k) for k in range(3)]
    dist = ps.diagnostics.sliced_wasserstein(draws, exact.sample(2000, gens[0]).double())
    floor = ps.diagnostics.sliced_wasserstein(exact.sample(2000, gens[1]), exact.sample(2000, gens[2]))
    assert dist < 2 * floor, (dist, floor)
    # relative standard error of the mean of the weights: sqrt(1 / ess - 1 / M)
    se = math.sqrt(1 / ref.ess.item() - 1e-6)
    assert abs(ref.log_evidence.item() - problem.exact_log_evidence().item()) < 4 * se


@pytest.mark.slow
@pytest.mark.parametrize(("name", "method"), CASES)
def test_exact_samplers_reach_the_oracle(name: str, method: str) -> None:
    """B = 8 problems, 1000 particles or chains, 100 steps: sliced W1 to the oracle, averaged over
    problems, within 3x the floor (two independent sets of 1000 oracle draws). Measured: tds
    1.5-1.6x, mala 0.9-1.2x; with the samplers' log-likelihood halved (a tempered, wrong posterior)
    6.6-9.6x. tds runs on the matrix problems only here (benchmarks/README.md has its nonlinear
    results)."""
    problem = PROBLEMS[name](8)
    ref = importance_posterior(problem, DRAWS)
    assert (ref.ess > 10 * N).all(), ref.ess
    res = ps.sample(problem, method, num_particles=N, num_steps=100, seed=0)
    dist, floor = distance_and_floor(ref, res.samples)
    assert dist.mean() < 3 * floor.mean(), (dist, floor)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["studentt-outlier", "laplace-matrix", "poisson-matrix"])
def test_tds_evidence_is_unbiased_under_other_noise(name: str) -> None:
    """``Z_hat / Z`` averages 1 over 32 problems within 4 standard errors plus 2% for the 100-step
    chain (the oracle's ``Z`` is the continuous model's)."""
    problem = PROBLEMS[name](32, seed=1)
    ref = importance_posterior(problem, 10**6)
    res = ps.sample(problem, "tds", num_particles=256, num_steps=100, seed=0)
    ratio = (res.log_evidence.double() - ref.log_evidence).exp()
    se = ratio.std().item() / 32**0.5
    assert abs(ratio.mean().item() - 1) < 4 * se + 0.02, (ratio.mean().item(), se)
