"""SDEdit (Meng et al., ICLR 2022)."""

import pytest
import torch

import posterior as ps
from posterior.samplers.approximate._loop import time_pairs
from tests.samplers.approximate._baselines import (
    NoSVD,
    check_closer_than_prior,
    check_near_y,
    small_prior,
)


def test_near_y_for_small_t0() -> None:
    # t0 = 0.01 noises y by sqrt(1 - abar_9) ~ 0.04 per coordinate: the output stays near y.
    check_near_y("sdedit", tol=0.15, t0=0.01)


def test_starts_from_pseudo_inverse_at_t0() -> None:
    # eta = 0 and one step: x = DDIM(t0 -> clean) of sqrt(abar) A^+ y + noise, so the samples'
    # spread shrinks with t0 and their mean tracks A^+ y.
    problem = ps.InverseProblem(small_prior(), ps.operators.Identity(), torch.tensor([1.5, 0.3]), 0.1)
    near = ps.sample(problem, "sdedit", num_particles=2000, num_steps=20, seed=0, t0=0.02).samples
    far = ps.sample(problem, "sdedit", num_particles=2000, num_steps=20, seed=0, t0=0.9).samples
    assert (near.mean(0) - problem.y).norm() < 0.1
    assert near.std(0).max() < far.std(0).min()


def test_time_grid_starts_at_t0() -> None:
    sched = ps.VPSchedule.linear()
    pairs = time_pairs(sched, 10, 499)
    assert pairs[0][0] == 499 and pairs[-1] == (0, -1) and len(pairs) == 10
    assert all(t > s for t, s in pairs)


@pytest.mark.slow
def test_closer_to_posterior_mean_than_prior() -> None:
    check_closer_than_prior("sdedit")


def test_bad_input() -> None:
    prior = small_prior()
    nonlinear = ps.InverseProblem(prior, lambda x: x**3, torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="needs a linear operator"):
        ps.sample(nonlinear, "sdedit", num_particles=2, num_steps=2)
    nosvd = ps.InverseProblem(prior, NoSVD(), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="needs an operator with an SVD"):
        ps.sample(nosvd, "sdedit", num_particles=2, num_steps=2)
    assert ps.sample(nosvd, "sdedit", num_particles=2, num_steps=2, init="adjoint").samples.shape == (2, 2)
