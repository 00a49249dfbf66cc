"""Ready-made inverse problems: the Gaussian-mixture benchmark and simulated problem batches."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from posterior._utils import as_generator
from posterior.operators.base import Operator, as_operator
from posterior.operators.linear import Matrix
from posterior.priors.base import DiffusionPrior
from posterior.priors.gaussian_mixture import GaussianMixturePrior
from posterior.problem import InverseProblem
from posterior.schedule import VPSchedule

__all__ = ["gmm_benchmark", "gmm_prior_grid", "simulate", "gmm_demo"]


def gmm_prior_grid(
    dim: int, generator: torch.Generator, spacing: float = 8.0, dtype: torch.dtype = torch.float32
) -> GaussianMixturePrior:
    """The 25-component grid prior of MCGdiff: means ``(8i, 8j, 8i, 8j, ...)`` for ``i, j`` in
    ``-2..2``, identity covariances, weights = normalised squared standard normals."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even number >= 2, got {dim}")
    grid = torch.tensor(list(itertools.product(range(-2, 3), repeat=2)), dtype=torch.float64)
    means = (spacing * grid).repeat(1, dim // 2)  # [25, dim]
    weights = torch.randn(25, generator=generator, dtype=torch.float64).pow(2)
    weights = weights / weights.sum()
    variances = torch.ones(25, dim, dtype=torch.float64)
    return GaussianMixturePrior(weights.to(dtype), means.to(dtype), variances.to(dtype), schedule=VPSchedule.linear())


def gmm_benchmark(dim: int, obs_dim: int, seed: int, dtype: torch.dtype = torch.float32) -> InverseProblem:
    """The Gaussian-mixture benchmark of MCGdiff (Cardoso et al., ICLR 2024), by seed.

    Prior: :func:`gmm_prior_grid`. Operator: an ``obs_dim x dim`` standard normal matrix whose
    singular values are replaced by sorted ``U(0, 1)`` draws. Noise: ``noise_std = U(0, 1) *``
    the largest singular value. ``y = A x* + noise`` with ``x*`` drawn from the prior (kept as
    ``problem.truth``).
    """
    if not 1 <= obs_dim <= dim:
        raise ValueError(f"need 1 <= obs_dim <= dim, got obs_dim={obs_dim}, dim={dim}")
    gen = torch.Generator().manual_seed(seed)
    prior = gmm_prior_grid(dim, gen, dtype=dtype)
    A = torch.randn(obs_dim, dim, generator=gen, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    s = torch.rand(obs_dim, generator=gen, dtype=torch.float64).sort(descending=True).values
    A = U @ torch.diag(s) @ Vh
    noise_std = (torch.rand((), generator=gen, dtype=torch.float64) * s.max()).item()
    x_true = prior.distribution.sample(1, gen)[0].double()
    y = A @ x_true + noise_std * torch.randn(obs_dim, generator=gen, dtype=torch.float64)
    problem = InverseProblem(prior, Matrix(A.to(dtype)), y.to(dtype), noise_std)
    problem.truth = x_true.to(dtype)
    return problem


def gmm_demo(seed: int = 0) -> InverseProblem:
    """A 2-D, 25-component problem observed through one noisy linear measurement (the demo)."""
    return gmm_benchmark(dim=2, obs_dim=1, seed=seed)


def simulate(
    prior: DiffusionPrior,
    operator: Operator | Tensor,
    noise_std: float,
    num_problems: int,
    seed: int | torch.Generator | None = None,
    truth: Tensor | None = None,
) -> InverseProblem:
    """``B = num_problems`` problems ``y_b = A(x_b) + noise_std eps_b`` with ``x_b ~ prior``.

    The draws ``x_b`` (``Tensor[B, *event_shape]``, or ``truth`` when given) are kept as
    ``problem.truth``: the ground truth for coverage and simulation-based calibration.
    """
    gen = as_generator(seed, prior.device)
    x = prior.sample(num_problems, gen) if truth is None else truth
    op = as_operator(operator).bind(tuple(prior.event_shape))
    clean = op.A(x)
    y = clean + noise_std * torch.randn(clean.shape, generator=gen, device=clean.device, dtype=clean.dtype)
    problem = InverseProblem(prior, op, y, noise_std)
    problem.truth = x
    return problem
