"""tds and mala under Poisson, Student-t and Laplace noise against the importance-sampling oracle.

The oracle (:func:`tests.oracles.importance_posterior`) weighs 4 * 10^6 exact prior draws by the
likelihood; its effective sample size is checked to be at least 10x the particles compared.
"""

from __future__ import annotations

import math

import pytest
import torch

import posterior as ps
from posterior.operators import Nonlinear
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
    6.6-9.6x, and with only tds's last weight halved the tds cases fail too. mala's chains keep the
    mode weights of their importance-resampled start, so a fault in its kernel alone hides behind
    the mode-weight noise of these multimodal posteriors: the unimodal test below catches it. tds
    runs on the matrix problems only here (benchmarks/README.md has its nonlinear results)."""
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


def unimodal(name: str) -> ps.InverseProblem:
    """B = 8 problems with a single-Gaussian prior ``N(0, 4 I)`` in 2-D: Poisson counts of
    ``softplus(x)`` at gain 3, Student-t through a 3 x 2 matrix with an outlier (+6, 12 scales),
    Laplace through a 2 x 2 matrix."""
    prior = ps.GaussianMixturePrior(torch.ones(1), torch.zeros(1, 2), 4 * torch.ones(1, 2))
    if name == "poisson":
        op, noise = Nonlinear(lambda x: torch.nn.functional.softplus(x)), ps.noise.Poisson(3.0)
    elif name == "studentt":
        op, noise = torch.tensor([[1.0, 0.5], [0.0, 1.0], [1.0, -1.0]]), ps.noise.StudentT(3.0, 0.5)
    else:
        op, noise = torch.tensor([[1.0, 0.5], [0.3, -1.0]]), ps.noise.Laplace(0.5)
    problem = ps.problems.simulate(prior, op, noise, 8, seed=1)
    if name == "studentt":
        y = problem.y_batch.clone()
        y[:, 1] += 6.0
        problem = ps.InverseProblem(prior, op, y, noise)
    return problem


@pytest.mark.parametrize("name", ["poisson", "studentt", "laplace"])
def test_mala_chains_from_prior_draws_reach_unimodal_posteriors(name: str) -> None:
    """With one mode the distance is the shape of the posterior, not mode weights: 1000 MALA chains
    started at prior draws (no importance-resampled start), 200 iterations, within 3x the floor.
    Measured 0.8-1.1x; with the kernel's log-likelihood halved 5.5-11x."""
    problem = unimodal(name)
    ref = importance_posterior(problem, 10**6)
    assert (ref.ess > 10 * N).all(), ref.ess
    res = ps.sample(problem, "mala", num_particles=N, num_steps=200, seed=0, init="prior")
    dist, floor = distance_and_floor(ref, res.samples)
    assert dist.mean() < 3 * floor.mean(), (dist, floor)
