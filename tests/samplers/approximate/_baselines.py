"""Shared fixtures and statistical checks for the tests of SDEdit, Score-ALD, DPS, PiGDM and DDRM
(their shapes, seeds, counters and option errors: ``tests/samplers/test_contract.py``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

import posterior as ps
from posterior.operators.base import LinearOperator

# Standard-normal quantile for the Monte Carlo bands: two-sided 1e-5 per comparison, so a run
# with a handful of comparisons fails by chance with probability < 1e-4.
Z_BAND = 4.4


def identity_problem(B: int = 2, d: int = 4, noise_std: float = 0.01, seed: int = 3) -> ps.InverseProblem:
    """``A = I`` on the 25-component grid prior, ``y = x* + noise`` with tiny noise (``B`` problems)."""
    gen = torch.Generator().manual_seed(seed)
    prior = ps.problems.gmm_prior_grid(d, gen)
    x = prior.sample(B, gen)
    y = x + noise_std * torch.randn(x.shape, generator=gen)
    problem = ps.InverseProblem(prior, ps.operators.Identity(), y, noise_std)
    problem.truth = x
    return problem


def gaussian_problem(
    noise_std: tuple[float, ...] = (0.3, 0.7), d: int = 4, m: int = 2, seed: int = 0, mean_scale: float = 0.5
) -> ps.InverseProblem:
    """Prior ``N(mu, I)`` (``K = 1``), random ``A: [m, d]``, float64, ``B = len(noise_std)`` problems.

    ``mu`` is small (``mean_scale``) so that starting the reverse process from ``N(0, I)`` instead
    of ``N(sqrt(abar_T) mu_y, ...)`` costs a bias ``sqrt(abar_T) |mu_y| ~ 0.006 |mu_y|``, far below
    the Monte Carlo error of the tests.
    """
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    mu = mean_scale * torch.randn(1, d, generator=gen, dtype=dt)
    prior = ps.GaussianMixturePrior(torch.ones(1, dtype=dt), mu, torch.ones(1, d, dtype=dt))
    A = torch.randn(m, d, generator=gen, dtype=dt)
    y = torch.randn(len(noise_std), m, generator=gen, dtype=dt)
    return ps.InverseProblem(prior, A, y, torch.tensor(noise_std, dtype=dt))


def posterior_mean_var(problem: ps.InverseProblem) -> tuple[Tensor, Tensor]:
    """Exact posterior mean and marginal variances, ``[B, d]`` each, of a ``K = 1`` problem.

    The Kalman update written out (``G = Sigma A^T S^{-1}``, ``S = A Sigma A^T + s^2 I``), so that
    a noiseless problem works too: its posterior covariance is singular, which
    ``problem.exact_posterior()`` (a mixture with Cholesky factors) need not accept."""
    A = problem.operator.matrix(torch.float64)  # [m, d]
    mix = problem.prior.distribution  # the prior as a GaussianMixture
    mu, cov = mix.means[0].double(), mix.full_covs()[0].double()  # [d], [d, d]
    y = problem.y_batch.reshape(problem.batch_size, -1).double()  # [B, m]
    eye = torch.eye(A.shape[0], dtype=torch.float64)
    S = A @ cov @ A.T + problem.sigma.double().pow(2)[:, None, None] * eye  # [B, m, m]
    gain = torch.linalg.solve(S, (A @ cov).expand(len(S), -1, -1)).transpose(-1, -2)  # [B, d, m]
    mean = mu + (gain @ (y - A @ mu)[..., None])[..., 0]
    var = (cov - gain @ (A @ cov)).diagonal(dim1=-2, dim2=-1)
    return mean, var


def assert_moments_match(samples: Tensor, mean: Tensor, var: Tensor) -> None:
    """Sample mean and variance ``[B, d]`` within ``Z_BAND`` Monte Carlo standard errors.

    ``se(mean) = sd / sqrt(N)``; ``se(s^2) / sigma^2 = sqrt(2 / (N - 1))`` (Gaussian samples).
    """
    N = samples.shape[1]
    em, ev = samples.mean(1), samples.var(1)
    z_mean = (em - mean) / (var.sqrt() / math.sqrt(N))
    z_var = (ev / var - 1) / math.sqrt(2 / (N - 1))
    assert z_mean.abs().max() < Z_BAND, f"mean z-scores {z_mean}"
    assert z_var.abs().max() < Z_BAND, f"variance z-scores {z_var} (ratios {ev / var})"


class NoSVD(LinearOperator):
    """A linear operator (``2 x`` on 2-D inputs) that offers no SVD."""

    has_svd = False
    in_shape = out_shape = (2,)

    def A(self, x: Tensor) -> Tensor:
        return 2 * x

    def A_adjoint(self, y: Tensor) -> Tensor:
        return 2 * y


def small_prior() -> ps.GaussianMixturePrior:
    return ps.GaussianMixturePrior(
        torch.ones(2) / 2, torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.ones(2, 2)
    )


def check_near_y(method: str, tol: float, num_steps: int = 50, **options: object) -> None:
    """``A = I``, ``noise_std = 0.01``: the median distance of the samples to ``y`` is below ``tol``.

    Scale: the posterior is ``~N(y, 0.01^2 I)`` (median distance ~0.02); two draws of one prior
    component lie ~2.6 apart, draws from different components ~8 or more.
    """
    problem = identity_problem()
    res = ps.sample(problem, method, num_particles=200, num_steps=num_steps, seed=0, **options)
    dist = (res.samples - problem.y_batch[:, None]).norm(dim=-1)
    assert dist.median() < tol, f"median distance to y {dist.median():.4f} >= {tol}"


def check_closer_than_prior(method: str, seeds: range = range(6), **options: object) -> None:
    """On ``gmm_benchmark(8, 2, seed)``: summed over seeds, the sample mean is closer to the exact
    posterior mean than the mean of as many prior draws.

    The prior-sample mean has a standard error of ~1.6 per problem (prior sd ~11 per coordinate,
    N = 256, d = 8); the margins measured with the defaults are tens of units.
    """
    N = 256
    ours = prior = 0.0
    for seed in seeds:
        problem = ps.problems.gmm_benchmark(8, 2, seed)
        post_mean = problem.exact_posterior().mean
        res = ps.sample(problem, method, num_particles=N, num_steps=50, seed=0, **options)
        ours += (res.samples.mean(0) - post_mean).norm().item()
        prior += (problem.prior.sample(N, torch.Generator().manual_seed(7)).mean(0) - post_mean).norm().item()
    assert ours < prior, f"{method}: summed distance {ours:.2f} vs unconditional {prior:.2f}"
