"""The Tweedie-covariance twist: with a Gaussian prior (exact denoiser, constant Jacobian) it is
the covariance-aware twist up to a constant, and its gradient is that twist's gradient."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.samplers.exact.covariance_twist import CovarianceTwist
from posterior.samplers.exact.tweedie_twist import tweedie_twist
from tests.samplers.exact.test_covariance_twist import gaussian_prior_problem


def _gaussian_problem() -> ps.InverseProblem:
    return gaussian_prior_problem(torch.Generator().manual_seed(1))


@pytest.mark.parametrize("t", [900, 400, 60])
def test_is_the_covariance_twist_up_to_a_constant_under_a_gaussian_prior(t: int) -> None:
    """``c_t J = Sigma_t`` exactly for a Gaussian prior, so with ``m`` conjugate-gradient steps
    (exact for ``m = 2`` observations) the twists differ by the left-out ``log det`` only: the same
    constant for every particle. The gradients agree too (``J`` is constant). With one CG step the
    values are not the exact solve's (the check is not vacuous)."""
    problem = _gaussian_problem()
    prior = problem.prior
    x = prior.sample_marginal(64, t, torch.Generator().manual_seed(2))
    _, value, grad = tweedie_twist(problem, x, t, 64, cg_iters=2)
    ref = CovarianceTwist(problem.operator, prior.covariance(), (3,), prior.schedule)
    noise_var = torch.full((64,), 0.16, dtype=torch.float64)

    def log_twist(den, _x, rows):
        return ref.log_prob(t, problem.y - problem.operator.A(den.x0), noise_var[rows])

    _, expect, expect_grad = prior.denoise_with_grad(x, t, log_twist)
    gap = value - expect
    assert torch.allclose(gap, gap.mean().expand_as(gap), atol=1e-8)
    assert torch.allclose(grad, expect_grad, atol=1e-8)
    _, one_step, _ = tweedie_twist(problem, x, t, 64, cg_iters=1)
    assert not torch.allclose(one_step - expect, gap, atol=1e-4)


def test_counts_one_evaluation_and_cg_iters_plus_one_vjps() -> None:
    problem = _gaussian_problem()
    prior = problem.prior
    x = prior.sample_marginal(10, 500, torch.Generator().manual_seed(0))
    evals, vjps = prior.num_evals, prior.num_vjps
    tweedie_twist(problem, x, 500, 10, cg_iters=3)
    assert (prior.num_evals - evals, prior.num_vjps - vjps) == (10, 40)


def test_needs_a_linear_operator_and_gaussian_noise() -> None:
    problem = _gaussian_problem()
    poisson = ps.InverseProblem(problem.prior, problem.operator, problem.y.abs(), ps.noise.Poisson(5.0))
    with pytest.raises(ValueError, match="Gaussian noise"):
        ps.sample(poisson, "tds", 8, 4, twist_var="tweedie")
    with pytest.raises(ValueError, match="cg_iters"):
        ps.sample(problem, "tds", 8, 4, twist_var="tweedie", cg_iters=-1)
