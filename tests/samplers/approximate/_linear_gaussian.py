"""A single-Gaussian prior with a linear Gaussian likelihood: every quantity in closed form.

Shared by the tests of MMPS, RED-diff, CSGM, DiffPIR and PnP-ADMM.
"""

from __future__ import annotations

import torch
from torch import Tensor

import posterior as ps


def gaussian_problem(
    d: int = 4, m: int = 2, B: int = 2, seed: int = 0, sigma=(0.3, 0.7)
) -> ps.InverseProblem:
    """``B`` problems: prior ``N(mu, C)`` (``K = 1``, full covariance), ``A: [m, d]``, float64."""
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    mu = torch.randn(1, d, generator=gen, dtype=dt)
    L = torch.randn(d, d, generator=gen, dtype=dt)
    C = (L @ L.T / d + 0.5 * torch.eye(d, dtype=dt))[None]
    prior = ps.GaussianMixturePrior(torch.ones(1, dtype=dt), mu, C)
    A = torch.randn(m, d, generator=gen, dtype=dt)
    y = torch.randn(B, m, generator=gen, dtype=dt)
    return ps.InverseProblem(prior, A, y, torch.tensor(sigma[:B], dtype=dt))


def posterior_moments(problem: ps.InverseProblem) -> tuple[Tensor, Tensor]:
    """Exact posterior mean ``[B, d]`` and covariance ``[B, d, d]`` of a ``K = 1`` problem."""
    post = problem.exact_posterior()
    means = post.means[:, 0]
    covs = post.full_covs()
    covs = covs[:, 0] if covs.dim() == 4 else covs[0].expand(problem.batch_size, -1, -1)
    return means, covs


def posterior_score(problem: ps.InverseProblem, x: Tensor, t: int) -> Tensor:
    """``grad log p(x_t | y)`` for ``x: [B, N, d]``: ``p(x_t | y) = N(a mu_y, a^2 C_y + (1 - a^2) I)``."""
    abar = problem.prior.schedule.alpha_bar(t).item()
    mean, cov = posterior_moments(problem)
    d = x.shape[-1]
    S = abar * cov + (1 - abar) * torch.eye(d, dtype=x.dtype)
    diff = x - abar**0.5 * mean[:, None]
    return -torch.linalg.solve(S[:, None], diff.unsqueeze(-1)).squeeze(-1)


class NaNPrior(ps.DiffusionPrior):
    """Wraps a prior and returns NaN predictions at times ``t < t_nan`` (to test divergence errors)."""

    def __init__(self, prior: ps.DiffusionPrior, t_nan: int) -> None:
        super().__init__()
        self.inner, self.t_nan = prior, t_nan
        self.schedule, self.event_shape = prior.schedule, prior.event_shape

    def model_output(self, x_t: Tensor, t: Tensor) -> Tensor:
        out = self.inner.model_output(x_t, t)
        return torch.where((t < self.t_nan).reshape(-1, *([1] * (x_t.dim() - 1))), torch.nan, out)

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype


class NoSVD(ps.operators.LinearOperator):
    """A dense matrix operator that hides its SVD (forces the conjugate-gradient paths)."""

    has_svd = False

    def __init__(self, matrix: Tensor) -> None:
        self.weight = matrix
        self.out_shape, self.in_shape = (matrix.shape[0],), (matrix.shape[1],)

    def A(self, x: Tensor) -> Tensor:
        return x @ self.weight.T

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y @ self.weight
