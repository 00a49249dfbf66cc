"""The covariance-aware twist against its dense formula and its isotropic special case."""

from __future__ import annotations

import math

import torch

import posterior as ps
from posterior.samplers.exact.covariance_twist import CovarianceTwist


def _dense(
    A: torch.Tensor, cov: torch.Tensor, abar: float, resid: torch.Tensor, noise_var: float
) -> torch.Tensor:
    """``log N(resid; 0, A Sigma_t A^T + noise_var I)`` with ``Sigma_t = (Sigma^-1 + k I)^-1``."""
    k = abar / (1 - abar)
    sigma_t = torch.linalg.inv(torch.linalg.inv(cov) + k * torch.eye(cov.shape[0], dtype=cov.dtype))
    C = A @ sigma_t @ A.T + noise_var * torch.eye(A.shape[0], dtype=cov.dtype)
    return torch.distributions.MultivariateNormal(torch.zeros(A.shape[0], dtype=cov.dtype), C).log_prob(resid)


def test_matches_the_dense_formula_and_the_isotropic_twist() -> None:
    gen = torch.Generator().manual_seed(0)
    d, m = 6, 4
    A = torch.randn(m, d, generator=gen, dtype=torch.float64)
    L = torch.randn(d, d, generator=gen, dtype=torch.float64)
    cov = L @ L.T + 0.1 * torch.eye(d, dtype=torch.float64)
    schedule = ps.VPSchedule.linear()
    op = ps.operators.Matrix(A).bind((d,))
    twist = CovarianceTwist(op, cov, (d,), schedule)
    resid = torch.randn(5, m, generator=gen, dtype=torch.float64)
    for t in (900, 500, 50):
        abar = schedule.alpha_bar(t).item()
        got = twist.log_prob(t, resid, torch.full((5,), 0.3, dtype=torch.float64))
        assert torch.allclose(got, _dense(A, cov, abar, resid, 0.3), atol=1e-8)
    # Sigma = V I: N(resid; 0, (r_t^2 A A^T + noise) ...), and with A = I the isotropic r_t^2
    V = 2.5
    iso = CovarianceTwist(
        ps.operators.Identity().bind((d,)), V * torch.eye(d, dtype=torch.float64), (d,), schedule
    )
    r = torch.randn(3, d, generator=gen, dtype=torch.float64)
    for t in (900, 100):
        abar = schedule.alpha_bar(t).item()
        r2 = V * (1 - abar) / (1 - abar + abar * V)
        expect = (-0.5 * r.pow(2) / (r2 + 0.01) - 0.5 * math.log(2 * math.pi * (r2 + 0.01))).sum(-1)
        assert torch.allclose(
            iso.log_prob(t, r, torch.full((3,), 0.01, dtype=torch.float64)), expect, atol=1e-8
        )


def gaussian_prior_problem(gen: torch.Generator) -> ps.InverseProblem:
    """A one-component (Gaussian) prior in 3-D with a random covariance, two observations."""
    d = 3
    L = torch.randn(d, d, generator=gen, dtype=torch.float64)
    cov = L @ L.T + 0.2 * torch.eye(d, dtype=torch.float64)
    mean = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    prior = ps.GaussianMixturePrior(torch.ones(1, dtype=torch.float64), mean, cov[None])
    A = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    return ps.InverseProblem(prior, A, torch.tensor([1.0, -2.0], dtype=torch.float64), 0.4)


def test_is_the_exact_likelihood_of_x_t_under_a_gaussian_prior() -> None:
    """With a one-component (Gaussian) prior, ``x0_hat`` is the exact ``E[x_0 | x_t]`` and the twist
    is exactly ``p(y | x_t)``: its value, integrated against ``p_t``, is ``p(y)``, checked here as
    ``log E_{x_t ~ p_t}[twist] = log p(y)`` by Monte Carlo (200,000 draws, within 5 standard errors)."""
    gen = torch.Generator().manual_seed(1)
    problem = gaussian_prior_problem(gen)
    prior = problem.prior
    twist = CovarianceTwist(problem.operator, prior.covariance(), (3,), prior.schedule)
    t, n = 600, 200_000
    x_t = prior.sample_marginal(n, t, gen)
    x0_hat = prior.denoise(x_t, t).x0
    values = twist.log_prob(
        t, problem.y - problem.operator.A(x0_hat), torch.full((n,), 0.16, dtype=torch.float64)
    )
    w = (values - values.max()).exp()
    estimate = values.max() + w.mean().log()
    se = w.std() / w.mean() / n**0.5
    assert abs(estimate.item() - problem.exact_log_evidence().item()) < 5 * se.item() + 1e-6
