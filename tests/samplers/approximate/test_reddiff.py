"""RED-diff: the stop-gradient gradient and optimum for a Gaussian prior; options and errors."""

import pytest
import torch

import posterior as ps
from posterior.samplers.approximate.reddiff import reddiff_gradient
from tests.samplers.approximate._linear_gaussian import NaNPrior, NoSVD, gaussian_problem


def _gaussian_terms(problem):
    prior = problem.prior
    abar = prior.schedule.alphas_cumprod.double()
    C, m = prior.covs[0], prior.means[0]
    d = m.shape[0]
    S_inv = torch.linalg.inv(
        abar[:, None, None] * C + (1 - abar)[:, None, None] * torch.eye(d, dtype=C.dtype)
    )
    return abar, m, S_inv


def _optimum(problem, lam, W):
    """mu* = (A^T A / s^2 + lam W)^{-1} (A^T y / s^2 + lam W m), per problem: [B, d]."""
    _, m, _ = _gaussian_terms(problem)
    A, y, s2 = problem.operator.matrix(), problem.y_batch, problem.sigma.pow(2)
    H = A.T @ A / s2[:, None, None] + lam * W
    return torch.linalg.solve(H, (y @ A / s2[:, None] + lam * (W @ m))[..., None])[..., 0]


@pytest.mark.parametrize("t", [3, 250, 600, 950])
def test_expected_gradient_is_the_closed_form(t):
    """E_eps[grad] = A^T (A mu - y) / s^2 + lam (1 - abar_t) S_t^{-1} (mu - m) for a Gaussian prior
    (the paper's stationarity relation, per time); the Monte Carlo mean over 4000 noises is within
    5 standard errors."""
    problem = gaussian_problem(d=3, m=2, B=2)
    lam, N = 0.7, 4000
    abar, m, S_inv = _gaussian_terms(problem)
    gen = torch.Generator().manual_seed(t)
    mu0 = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    mu = mu0[:, None].expand(2, N, 3)
    eps = torch.randn(2, N, 3, generator=gen, dtype=torch.float64)
    loss, grad = reddiff_gradient(problem, mu, t, eps, lam)
    A, y, s2 = problem.operator.matrix(), problem.y_batch, problem.sigma.pow(2)
    data = (mu0 @ A.T - y) @ A / s2[:, None]
    expected = data + lam * (1 - abar[t]) * (mu0 - m) @ S_inv[t]
    se = grad.std(1) / N**0.5
    assert ((grad.mean(1) - expected).abs() <= 5 * se + 1e-12).all()
    # a constant weighting lambda_t = lam (no 1/sqrt(SNR)) is far outside that band
    wrong = data + lam * ((1 - abar[t]) * abar[t]).sqrt() * (mu0 - m) @ S_inv[t]
    if t > 100:
        assert ((grad.mean(1) - wrong).abs() > 5 * se).any()
    assert loss.shape == (2, N)


@pytest.mark.slow
def test_optimum_matches_the_closed_form():
    """Algorithm 1 (uniform random times) with a Gaussian prior ends at the MAP of
    ``N(m, (lam W)^{-1})``, ``W = E_t[(1 - abar_t) S_t^{-1}]``.

    The stochastic-approximation error of the particle mean (per-particle noise plus the time draws
    all particles share) was 0.007 to 0.017 over five seeds in this configuration; the tolerance is
    a quarter of the distance to the optimum of the nearest wrong weighting."""
    problem = gaussian_problem(d=3, m=1, B=2, sigma=(0.5, 1.0))
    lam = 2.0
    abar, _, S_inv = _gaussian_terms(problem)
    mu_star = _optimum(problem, lam, ((1 - abar)[:, None, None] * S_inv).mean(0))
    alternatives = [
        _optimum(problem, lam, (((1 - abar) * abar).sqrt()[:, None, None] * S_inv).mean(0)),  # lambda_t const
        _optimum(problem, lam, ((1 - abar) / abar)[:, None, None].mul(S_inv).mean(0)),  # lambda_t = 1/SNR
        _optimum(problem, 1.0, torch.linalg.inv(problem.prior.covs[0])),  # the plain MAP
    ]
    gap = min((alt - mu_star).abs().max().item() for alt in alternatives)
    res = ps.sample(
        problem,
        "reddiff",
        num_particles=32,
        num_steps=2500,
        seed=0,
        time_sampling="random",
        lr=0.005,
        lam=lam,
    )
    err = (res.samples.mean(1) - mu_star).abs().max().item()
    assert err < gap / 4, (err, gap)


def test_loss_trace_and_nonlinear_operators():
    problem = gaussian_problem(d=3, m=2, B=2)
    res = ps.sample(problem, "reddiff", num_particles=4, num_steps=20, seed=0)
    assert res.stats["loss"].shape == (2, 20)
    # nonlinear operators: data term through autograd, start from noise
    nonlinear = ps.InverseProblem(problem.prior, lambda x: torch.tanh(x[:, :2]), problem.y_batch.tanh(), 0.3)
    with pytest.raises(ValueError, match="init='noise'"):
        ps.sample(nonlinear, "reddiff", num_particles=2, num_steps=2)
    assert ps.sample(nonlinear, "reddiff", num_particles=2, num_steps=5, init="noise").samples.shape == (
        2,
        2,
        3,
    )


def test_bad_input():
    problem = gaussian_problem()
    noiseless = ps.InverseProblem(problem.prior, problem.operator, problem.y_batch, 0.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        ps.sample(noiseless, "reddiff", num_particles=2, num_steps=2)
    bad = ps.InverseProblem(NaNPrior(problem.prior, t_nan=500), problem.operator, problem.y_batch, 0.5)
    with pytest.raises(FloatingPointError, match=r"reddiff: iteration \d+ \(t=\d+\)"):
        ps.sample(bad, "reddiff", num_particles=2, num_steps=4)


@pytest.mark.parametrize("svd", [True, False])
def test_pinv_init_is_the_noise_regularised_pseudo_inverse(svd):
    """With lr tiny the returned mean stays at mu_0 = argmin ||y - A x||^2 + s^2 ||x||^2."""
    problem = gaussian_problem(d=4, m=2, B=2)
    A = problem.operator.matrix()
    if not svd:
        problem = ps.InverseProblem(problem.prior, NoSVD(A), problem.y_batch, problem.sigma)
    s2 = problem.sigma.pow(2)
    H = A.T @ A + s2[:, None, None] * torch.eye(4, dtype=A.dtype)
    mu0 = torch.linalg.solve(H, (problem.y_batch @ A)[..., None])[..., 0]
    res = ps.sample(problem, "reddiff", num_particles=2, num_steps=1, lr=1e-12)
    assert torch.allclose(res.samples, mu0[:, None].expand(2, 2, 4), atol=1e-6)
