"""MMPS: exact guidance for a Gaussian prior with a linear Gaussian likelihood, errors, sampling."""

import pytest
import torch

import posterior as ps
from posterior.samplers.approximate._linear_solve import conjugate_gradient
from posterior.samplers.approximate.mmps import mmps_denoise
from tests.samplers.approximate._linear_gaussian import gaussian_problem, posterior_score


@pytest.mark.parametrize("t", [0, 10, 100, 400, 700, 999])
def test_guidance_is_the_exact_likelihood_score(t):
    """With one Gaussian component, prior score + MMPS guidance = grad log p(x_t | y) exactly."""
    problem = gaussian_problem(d=4, m=3, B=2)
    prior = problem.prior
    x = 2 * torch.randn(2, 5, 4, dtype=torch.float64)
    _, guidance = mmps_denoise(problem, x, t, cg_iters=3)  # m = 3 iterations: exact CG
    prior_score = prior.score(x.reshape(-1, 4), t).reshape(2, 5, 4)
    exact = posterior_score(problem, x, t)
    assert torch.allclose(prior_score + guidance, exact, rtol=1e-7, atol=1e-9 * exact.abs().max().item())


def test_posterior_denoiser_is_tweedie_of_the_posterior():
    """x0_post = (x_t + (1 - abar) grad log p(x_t | y)) / sqrt(abar): the exact E[x_0 | x_t, y]."""
    problem = gaussian_problem(d=3, m=2, B=2)
    t = 300
    abar = problem.prior.schedule.alpha_bar(t).item()
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    d, _ = mmps_denoise(problem, x, t, cg_iters=2)
    expected = (x + (1 - abar) * posterior_score(problem, x, t)) / abar**0.5
    assert torch.allclose(d.x0, expected, rtol=1e-7, atol=1e-9)
    # eps is consistent with x0: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
    assert torch.allclose(abar**0.5 * d.x0 + (1 - abar) ** 0.5 * d.eps, x, atol=1e-10)


def test_too_few_cg_iterations_are_not_exact():
    """One CG iteration on a 3-dimensional system is an approximation (guards the test above)."""
    problem = gaussian_problem(d=4, m=3, B=1, sigma=(0.2,))
    x = torch.randn(1, 3, 4, dtype=torch.float64)
    _, g1 = mmps_denoise(problem, x, 100, cg_iters=1)
    _, g3 = mmps_denoise(problem, x, 100, cg_iters=3)
    assert not torch.allclose(g1, g3, rtol=1e-3)


def test_bad_input():
    problem = gaussian_problem()
    nonlinear = ps.InverseProblem(problem.prior, lambda x: x[:, :2] ** 2, problem.y_batch, 0.5)
    with pytest.raises(ValueError, match="linear operator"):
        ps.sample(nonlinear, "mmps", num_particles=2, num_steps=2)
    noiseless = ps.InverseProblem(problem.prior, problem.operator, problem.y_batch, 0.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        ps.sample(noiseless, "mmps", num_particles=2, num_steps=2)


def test_conjugate_gradient_without_svd_matches_dense_solve():
    """The batched CG solver: exact after dim iterations, residual below rtol with early stopping."""
    gen = torch.Generator().manual_seed(1)
    L = torch.randn(3, 5, 5, generator=gen, dtype=torch.float64)
    M = L @ L.transpose(-1, -2) + 0.1 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    x = conjugate_gradient(lambda v: (M @ v[..., None])[..., 0], b, iters=5)
    assert torch.allclose(x, torch.linalg.solve(M, b), rtol=1e-8, atol=1e-10)
    x = conjugate_gradient(lambda v: (M @ v[..., None])[..., 0], b, iters=50, rtol=1e-3)
    r = b - (M @ x[..., None])[..., 0]
    assert (r.norm(dim=-1) <= 1e-3 * b.norm(dim=-1)).all()
    zero = conjugate_gradient(lambda v: (M @ v[..., None])[..., 0], torch.zeros_like(b), iters=5)
    assert torch.equal(zero, torch.zeros_like(b))
