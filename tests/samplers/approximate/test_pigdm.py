"""PiGDM (Song, Vahdat, Mardani and Kautz, ICLR 2023)."""

import pytest
import torch

import posterior as ps
from tests.samplers.approximate._baselines import (
    NoSVD,
    assert_moments_match,
    check_closer_than_prior,
    check_near_y,
    gaussian_problem,
    posterior_mean_var,
    small_prior,
)


def test_near_y() -> None:
    check_near_y("pigdm", tol=0.05)


def test_noiseless_problem() -> None:
    # noise_std = 0: (r_t^2 A A^T)^{-1} stays finite; A x matches y.
    problem = gaussian_problem(noise_std=(0.0,))
    res = ps.sample(problem, "pigdm", num_particles=200, num_steps=50, seed=0)
    resid = problem.residual(res.samples)
    assert resid.abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_exact_for_gaussian_prior(eta: float) -> None:
    # Prior N(mu, I): p(x_0 | x_t) = N(x0_hat, (1 - abar_t) I) exactly, so the PiGDM score is the
    # exact conditional score and the sampler converges to the posterior with the step count.
    # Discretisation bias at 500 steps, measured with N = 40000: variances low by 0.8-2 %
    # (eta = 0) and 0-3.6 % (eta = 1), means off by < 0.035 sd; the MC bands here are 9.8 % and
    # 0.07 sd.
    problem = gaussian_problem(noise_std=(0.3, 0.7))
    mean, var = posterior_mean_var(problem)
    res = ps.sample(problem, "pigdm", num_particles=4000, num_steps=500, seed=0, eta=eta)
    assert_moments_match(res.samples, mean, var)


@pytest.mark.slow
def test_closer_to_posterior_mean_than_prior() -> None:
    check_closer_than_prior("pigdm")


def test_bad_input() -> None:
    prior = small_prior()
    nonlinear = ps.InverseProblem(prior, lambda x: x**3, torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="'pigdm' needs a linear operator"):
        ps.sample(nonlinear, "pigdm", num_particles=2, num_steps=2)
    nosvd = ps.InverseProblem(prior, NoSVD(), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="'pigdm' needs an operator with an SVD"):
        ps.sample(nosvd, "pigdm", num_particles=2, num_steps=2)
