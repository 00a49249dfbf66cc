"""Split Gibbs kernel pieces: the closed-form likelihood step, the rho grid, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import posterior as ps
from posterior.kernels import SplitGibbs, rho_grid


def _problem(noise: float = 0.8) -> ps.InverseProblem:
    gen = torch.Generator().manual_seed(0)
    prior = ps.problems.gmm_prior_grid(4, gen)
    A = torch.randn(2, 4, generator=gen)
    return ps.InverseProblem(prior, A, torch.tensor([1.0, -2.0]), noise)


@pytest.mark.parametrize("correct", [True, False])
def test_linear_likelihood_step_matches_dense_gaussian(correct: bool) -> None:
    # z | x, y is N(m, C): C^-1 = I / rho^2 + A^T S^-1 A, m = C (x / rho^2 + A^T S^-1 y), with
    # S = sigma^2 I - rho^2 A A^T (exact split) or sigma^2 I (PnP-DM).
    problem = _problem()
    g = SplitGibbs(problem, correct_likelihood=correct)
    t = g.time_for(g.rho_floor)
    rho2 = float(g.rhos[t]) ** 2
    A = problem.operator.matrix(dtype=torch.float64)
    sig2 = float(problem.sigma[0]) ** 2
    S = sig2 * torch.eye(2, dtype=torch.float64) - (rho2 * A @ A.T if correct else 0)
    prec = torch.eye(4, dtype=torch.float64) / rho2 + A.T @ torch.linalg.solve(S, A)
    C = torch.linalg.inv(prec)
    x = torch.tensor([0.5, -1.0, 2.0, 0.0])
    m = C @ (x.double() / rho2 + A.T @ torch.linalg.solve(S, problem.y.double()))
    N = 20000
    z, acc = g.likelihood_step(x.expand(1, N, 4).clone(), t, torch.Generator().manual_seed(1))
    z = z[0].double()
    assert (acc == 1).all()
    se = C.diagonal().sqrt() / math.sqrt(N)
    assert ((z.mean(0) - m).abs() < 5 * se).all()
    assert torch.allclose(torch.cov(z.T), C, atol=5 * float(C.diagonal().max()) * math.sqrt(2 / N))


def test_exact_split_marginal_is_the_likelihood() -> None:
    # integrating z out of N(z; x, rho^2) N(y; A z, sigma^2 - rho^2 A A^T) gives N(y; A x, sigma^2):
    # check by sampling z ~ N(x, rho^2) and averaging the corrected likelihood
    problem = _problem()
    g = SplitGibbs(problem)
    assert g.rho_floor < float(g.rho_exact.min())
    rho = float(g.rhos[g.time_for(g.rho_floor)])
    A = problem.operator.matrix(dtype=torch.float64)
    S = float(problem.sigma[0]) ** 2 * torch.eye(2, dtype=torch.float64) - rho**2 * A @ A.T
    x = torch.tensor([0.3, 0.1, -0.5, 1.0], dtype=torch.float64)
    z = x + rho * torch.randn(100000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def normal_pdf(r: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:  # N(r; 0, cov), r: [n, 2]
        q = (r @ torch.linalg.inv(cov) * r).sum(-1)
        return torch.exp(-0.5 * q) / (2 * math.pi * torch.linalg.det(cov).sqrt())

    y = problem.y.double()
    samples = normal_pdf(y - z @ A.T, S)
    lik = samples.mean()
    want = normal_pdf((y - A @ x)[None], float(problem.sigma[0]) ** 2 * torch.eye(2, dtype=torch.float64))[0]
    se = samples.std() / math.sqrt(samples.numel())
    assert abs(float(lik - want)) < 4 * float(se), (float(lik), float(want), float(se))


def test_rho_schedule_and_grid() -> None:
    problem = _problem()
    g = SplitGibbs(problem, rho_start=10.0, rho_floor=0.5, rho_decay=0.5)
    state = g.init(problem.prior.sample(4, torch.Generator().manual_seed(0))[None], warmup_steps=10)
    rhos = [g.rho(state._replace(iteration=i)) for i in range(12)]
    assert rhos[0] <= 10.0 and all(a >= b for a, b in itertools.pairwise(rhos))
    assert rhos[-1] <= 0.5 and rhos[-1] > 0.45  # quantised down to the grid, close to the floor
    grid = rho_grid(problem.prior.schedule.alphas_cumprod)
    assert (grid[1:] > grid[:-1]).all()


def test_prior_step_from_tiny_noise_is_near_identity() -> None:
    problem = _problem()
    g = SplitGibbs(problem)
    z = problem.prior.sample(64, torch.Generator().manual_seed(0))[None]
    x = g.prior_step(z, 0, torch.Generator().manual_seed(0))
    assert (x - z).abs().max() < 0.05


def test_bad_input() -> None:
    problem = _problem()
    for kw in (
        {"rho_floor": 0.0},
        {"rho_start": -1.0},
        {"rho_decay": 1.0},
        {"prior_steps": 0},
        {"z_steps": 0},
    ):
        with pytest.raises(ValueError):
            SplitGibbs(problem, **kw)
    noiseless = ps.InverseProblem(problem.prior, problem.operator, problem.y, 0.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        SplitGibbs(noiseless)
    with pytest.raises(ValueError):
        ps.sample(problem, "gibbs", 8, 4, rho_floor=-1.0)


def test_nonlinear_likelihood_step_runs_mala() -> None:
    gen = torch.Generator().manual_seed(0)
    prior = ps.problems.gmm_prior_grid(2, gen)
    problem = ps.InverseProblem(prior, lambda x: torch.tanh(x[:, :1] / 8) * 8, torch.tensor([3.0]), 0.5)
    r = ps.sample(problem, "gibbs", 64, 6, seed=0, prior_steps=10)
    assert r.samples.shape == (64, 2) and torch.isfinite(r.samples).all()
    assert (r.acceptance > 0.2).all()
