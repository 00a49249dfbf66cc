"""Score-ALD (Jalal et al., NeurIPS 2021)."""

import pytest
import torch

import posterior as ps
from tests.samplers.approximate._baselines import (
    check_closer_than_prior,
    check_near_y,
    small_prior,
)


def test_near_y() -> None:
    # With 3 Langevin steps on the last level (sigma ~ 0.01) the chains are still contracting
    # toward y (measured median distance ~0.3 at 50 levels, ~0.1 at 200).
    check_near_y("score_ald", tol=0.5)


def test_samples_prior_without_measurement() -> None:
    # gamma -> inf switches the measurement off: annealed Langevin then samples the prior.
    prior = small_prior()
    problem = ps.InverseProblem(prior, torch.eye(2), torch.zeros(2), 0.5)
    x = ps.sample(problem, "score_ald", num_particles=4000, num_steps=100, seed=0, gamma_scale=1e4).samples
    # Prior: mean (0, 0), variances (1 + 4, 1); se(mean) = sd / sqrt(N), se(var) ~ var sqrt(2 / N)
    # (the bimodal first coordinate has a larger kurtosis: use 2x).
    assert x.mean(0).abs().max() < 4.4 * (5 / 4000) ** 0.5
    assert (x.var(0) - torch.tensor([5.0, 1.0])).abs().max() < 4.4 * 2 * 5 * (2 / 4000) ** 0.5


@pytest.mark.slow
def test_closer_to_posterior_mean_than_prior() -> None:
    check_closer_than_prior("score_ald")


def test_bad_input() -> None:
    prior = small_prior()
    nonlinear = ps.InverseProblem(prior, lambda x: x**3, torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="needs a linear operator"):
        ps.sample(nonlinear, "score_ald", num_particles=2, num_steps=2)
