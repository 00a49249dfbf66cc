"""from_pyro: a pyro distribution of the forward model's output as the observation model."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch.nn.functional import softplus

import posterior as ps

CPU = torch.device("cpu")


def test_log_prob_is_the_distribution_summed_over_observation_dims() -> None:
    nm = ps.noise.from_pyro(lambda m: dist.Poisson(3 * softplus(m))).bind(2, 1, torch.float64, CPU)
    mean = torch.randn(2, 5, 3, dtype=torch.float64)
    y = torch.tensor([[[0.0, 2.0, 7.0]], [[1.0, 0.0, 0.0]]], dtype=torch.float64)
    want = torch.distributions.Poisson(3 * softplus(mean)).log_prob(y.expand_as(mean)).sum(-1)
    torch.testing.assert_close(nm.log_prob(y, mean), want)
    # the same model as a built-in one where the link is the identity
    native = ps.noise.Poisson(3.0).bind(2, 1, torch.float64, CPU)
    wrapped = ps.noise.from_pyro(lambda m: dist.Poisson(3 * m)).bind(2, 1, torch.float64, CPU)
    torch.testing.assert_close(wrapped.log_prob(y, mean.exp()), native.log_prob(y, mean.exp()))


def test_event_dims_of_the_distribution_are_summed_once() -> None:
    """``to_event(1)`` folds the last dim into the event: the total is the same."""
    elementwise = ps.noise.from_pyro(lambda m: dist.Laplace(m, 0.5)).bind(1, 2, torch.float64, CPU)
    evented = ps.noise.from_pyro(lambda m: dist.Laplace(m, 0.5).to_event(1)).bind(1, 2, torch.float64, CPU)
    y, mean = torch.randn(1, 1, 3, 4, dtype=torch.float64), torch.randn(1, 6, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(evented.log_prob(y, mean), elementwise.log_prob(y, mean))
    assert evented.log_prob(y, mean).shape == (1, 6)
    # the tempered twist needs per-entry terms only where the distribution has them
    assert evented.twist_log_prob(y, mean, 1.0).shape == (1, 6)


def test_problem_likelihood_and_gradient_through_a_pyro_model() -> None:
    problem = ps.problems.gmm_benchmark(4, 2, 0)
    noise = ps.noise.from_pyro(lambda m: dist.StudentT(4.0, m, 0.3))
    p = ps.InverseProblem(problem.prior, problem.operator, problem.y, noise)
    x = problem.prior.sample(8, 0).unsqueeze(0).requires_grad_(True)
    ll = p.log_likelihood(x)
    want = ps.InverseProblem(problem.prior, problem.operator, problem.y, ps.noise.StudentT(4.0, 0.3))
    torch.testing.assert_close(ll, want.log_likelihood(x))
    (g,) = torch.autograd.grad(ll.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_y_outside_the_support_is_refused() -> None:
    prior = ps.problems.gmm_benchmark(2, 1, 0).prior
    noise = ps.noise.from_pyro(lambda m: dist.Poisson(softplus(m)))
    with pytest.raises(ValueError, match="outside the support"):
        ps.InverseProblem(prior, torch.eye(2), torch.tensor([1.0, 0.5]), noise)


def test_not_a_distribution_or_not_callable() -> None:
    prior = ps.problems.gmm_benchmark(2, 1, 0).prior
    with pytest.raises(TypeError, match="must return a distribution"):
        ps.InverseProblem(prior, torch.eye(2), torch.zeros(2), ps.noise.from_pyro(lambda m: m))
    with pytest.raises(TypeError, match="fn must be a callable"):
        ps.noise.from_pyro(3.0)
    with pytest.raises(ValueError, match="variance"):
        ps.noise.from_pyro(lambda m: dist.Normal(m, 1.0), variance=-1.0)


def test_samples_are_reproducible_from_the_generator() -> None:
    nm = ps.noise.from_pyro(lambda m: dist.Poisson(softplus(m))).bind(1, 1, torch.float32, CPU)
    mean = torch.zeros(1, 1000, 2)
    a = nm.sample(mean, torch.Generator().manual_seed(3))
    b = nm.sample(mean, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert abs(a.mean().item() - softplus(torch.tensor(0.0)).item()) < 0.1


def test_simulate_draws_y_from_the_noise_model() -> None:
    prior = ps.problems.gmm_benchmark(2, 1, 0).prior
    noise = ps.noise.from_pyro(lambda m: dist.Poisson(softplus(m)))
    p = ps.problems.simulate(prior, torch.eye(2), noise, 6, seed=0)
    assert p.y_batch.shape == (6, 2) and (p.y_batch == p.y_batch.round()).all() and (p.y_batch >= 0).all()
    assert "from_pyro" in repr(p)
