"""The grid-quadrature posterior of unknown noise levels on Gaussian-mixture problems.

Exact for: the continuous model ``p(std) p(y | std)`` with ``p(y | std)`` the mixture's closed-form
evidence (``InverseProblem.exact_log_evidence`` at each grid value), up to the grid's
quadrature error (a fine grid over the prior's bulk); and ``p(x | y)`` as the grid-weighted
mixture of the closed-form posteriors ``p(x | y, std)``.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import Tensor

import posterior as ps
from posterior.parameters import Parameters
from posterior.priors.gaussian_mixture import GaussianMixturePrior

#: the prior of the unknown noise level in these problems
STD_PRIOR = (math.log(0.8), 0.4)
#: the InverseGamma(a, b) prior of the unknown noise variance in the conjugate problems (the
#: variance's median 0.56, the std's 0.75; log variance's sd 0.63)
VAR_PRIOR = (3.0, 1.5)


def noise_problem(
    seed: int, dim: int = 16, scale: float = 0.3, num_problems: int = 2, variance: bool = False
) -> ps.InverseProblem:
    """``B`` problems ``y = A x + std eps`` on the 25-component grid prior (dim ``dim``), ``A`` a
    random orthogonal matrix times ``scale`` (the noise dominates ``A Sigma A^T``, so the
    evidence identifies ``std``), ``std`` drawn from its prior per problem, ``Unknown`` in the
    problem's noise model. ``problem.truth`` holds ``x``; ``problem.true_std`` the stds. With
    ``variance``: the unknown is the variance ``std^2`` with the conjugate prior
    ``InverseGamma(*VAR_PRIOR)`` (``ps.noise.Gaussian(variance=ps.Unknown(...))``)."""
    gen = torch.Generator().manual_seed(seed)
    prior: GaussianMixturePrior = ps.problems.gmm_prior_grid(dim, gen)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    A = (scale * Q).float()
    if variance:
        gamma = torch.distributions.Gamma(torch.tensor(VAR_PRIOR[0]), torch.tensor(VAR_PRIOR[1]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            std = gamma.sample((num_problems,)).double().reciprocal().sqrt()
        noise = ps.noise.Gaussian(variance=ps.Unknown(dist.InverseGamma(*VAR_PRIOR)))
    else:
        std = torch.exp(
            STD_PRIOR[0] + STD_PRIOR[1] * torch.randn(num_problems, generator=gen, dtype=torch.float64)
        )
        noise = ps.noise.Gaussian(ps.Unknown(dist.LogNormal(*STD_PRIOR)))
    x = prior.distribution.sample(num_problems, gen)
    y = x @ A.T + std.float()[:, None] * torch.randn(num_problems, dim, generator=gen)
    problem = ps.InverseProblem(prior, ps.operators.Matrix(A), y, noise)
    problem.truth, problem.true_std = x, std
    return problem


def grid_posterior(problem: ps.InverseProblem, points: int = 2000) -> tuple[Tensor, Tensor, list]:
    """``(grid [G], weights [B, G], problems)``: the normalised quadrature weights of
    ``p(theta | y) ∝ p(theta) p(y | theta)`` of the unknown noise level ``theta`` (the std, or
    the variance of :func:`noise_problem`'s ``variance=True``) on a uniform grid in ``log theta``
    over the prior's +-5 sd (weights include the Jacobian ``theta``), and the problem at every
    grid value (``B * G`` rows, for ``p(x | y, theta)``)."""
    params = Parameters(problem)
    (name,) = params.names
    if name == "std":
        mu, s = STD_PRIOR
    else:  # the variance's InverseGamma: log theta = -log Gamma(a, b)
        a, b = VAR_PRIOR
        mu, s = (
            math.log(b) - float(torch.special.digamma(torch.tensor(a))),
            float(torch.special.polygamma(1, torch.tensor(a))) ** 0.5,
        )
    log_grid = torch.linspace(mu - 5 * s, mu + 5 * s, points, dtype=torch.float64)
    grid = log_grid.exp()
    B = problem.batch_size
    (at,) = params.instantiate(problem, {name: grid.expand(B, points)})
    log_z = at.exact_log_evidence().reshape(B, points)
    log_w = log_z + params.log_prior({name: grid}) + log_grid  # density in log theta
    return grid, torch.softmax(log_w, 1), at


def std_draws(grid: Tensor, weights: Tensor, n: int, seed: int) -> Tensor:
    """``Tensor[B, n]``: ``n`` draws of ``std`` per problem from the grid posterior (each jittered
    uniformly within its grid cell in ``log std``)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(weights, n, replacement=True, generator=gen)
    step = (grid[1].log() - grid[0].log()).item()
    jitter = (torch.rand(idx.shape, generator=gen, dtype=torch.float64) - 0.5) * step
    return (grid.log()[idx] + jitter).exp()


def x_draws(grid: Tensor, weights: Tensor, at: ps.InverseProblem, n: int, seed: int) -> Tensor:
    """``Tensor[B, n, d]``: draws of ``x`` from ``p(x | y) = sum_g w_g p(x | y, std_g)``."""
    gen = torch.Generator().manual_seed(seed)
    B, G = weights.shape
    idx = torch.multinomial(weights, n, replacement=True, generator=gen)  # [B, n]
    post = at.exact_posterior()  # batch [B * G]
    out = torch.empty(B, n, at.prior.event_shape[0], dtype=at.prior.dtype)
    for b in range(B):
        rows, counts = torch.unique(idx[b], return_counts=True)
        fill = 0
        for g, c in zip(rows.tolist(), counts.tolist(), strict=True):
            one = ps.GaussianMixture(
                post.weights[b * G + g], post.means[b * G + g], post.covs[b * G + g], validate=False
            )
            out[b, fill : fill + c] = one.sample(c, gen)
            fill += c
        out[b] = out[b, torch.randperm(n, generator=gen)]
    return out


def w1(a: Tensor, b: Tensor) -> Tensor:
    """1-D Wasserstein-1 between equal-size samples ``[B, n]``: ``[B]``."""
    return (a.sort(1).values - b.sort(1).values).abs().mean(1)


def mean_shift(draws: Tensor, reference: Tensor) -> Tensor:
    """``Tensor[B]``: the mean of ``log std`` of ``draws [B, n]`` minus the reference's, in standard
    errors of a mean of ``n`` independent draws (about ``N(0, 1)`` for an exact sampler)."""
    n = draws.shape[1]
    d, r = draws.double().log(), reference.double().log()
    return (d.mean(1) - r.mean(1)) / (r.std(1) / n**0.5)


def w1_floor(grid: Tensor, weights: Tensor, n: int, reference: Tensor, reps: int = 200) -> Tensor:
    """``Tensor[B]``: the mean 1-D W1 between ``n`` exact draws and ``reference`` (``[B, M]``,
    ``M`` a multiple of ``n``), over ``reps`` replicates: what an exact sampler's ``n``
    independent draws reach."""
    M = reference.shape[1]
    ref_q = reference.sort(1).values[:, (torch.arange(n) * M) // n + M // (2 * n)]
    vals = [w1(std_draws(grid, weights, n, seed=10_000 + r), ref_q) for r in range(reps)]
    return torch.stack(vals).mean(0)
