"""Non-Gaussian test problems on Gaussian-mixture priors, shared by the tests and the benchmark.

Each builder returns ``B`` problems ``y_b ~ p(y | A(x_b))``, ``x_b`` exact prior draws, on the
25-component grid prior of :func:`posterior.problems.gmm_benchmark` (spacing 8).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.nn.functional import softplus

import posterior as ps
from posterior.operators import Nonlinear


def _prior(dim: int, seed: int) -> ps.GaussianMixturePrior:
    prior = ps.problems.gmm_benchmark(dim, 1, seed).prior
    assert isinstance(prior, ps.GaussianMixturePrior)
    return prior


def _matrix(m: int, d: int, seed: int, scale: float = 0.5) -> Tensor:
    """An ``m x d`` matrix of ``N(0, scale^2)`` entries."""
    return scale * torch.randn(m, d, generator=torch.Generator().manual_seed(seed))


def poisson_softplus(B: int, seed: int = 0) -> ps.InverseProblem:
    """d = 2, ``A(x) = softplus(x / 4)`` (a nonlinear, positive intensity), ``Poisson(gain=1)``:
    counts 0 to a few, many zeros."""
    op = Nonlinear(lambda x: softplus(x / 4))
    return ps.problems.simulate(_prior(2, 1), op, ps.noise.Poisson(1.0), B, seed=seed)


def poisson_matrix(B: int, seed: int = 0) -> ps.InverseProblem:
    """d = 4, a 3 x 4 matrix, Poisson counts through a softplus link written with pyro:
    ``y ~ Poisson(2 softplus(A x / 2))``."""

    def poisson_softplus_link(m: Tensor) -> dist.Poisson:
        return dist.Poisson(2 * softplus(m / 2))

    noise = ps.noise.from_pyro(poisson_softplus_link)
    return ps.problems.simulate(_prior(4, 2), _matrix(3, 4, 20, scale=0.25), noise, B, seed=seed)


def studentt_outlier(B: int, seed: int = 0) -> ps.InverseProblem:
    """d = 4, a 2 x 4 matrix, ``StudentT(df=3, scale=0.5)``; the second entry of every ``y`` is
    moved by ``+6`` (12 scales: an outlier)."""
    A = _matrix(2, 4, 30, scale=0.125)
    base = ps.problems.simulate(_prior(4, 3), A, ps.noise.StudentT(3.0, 0.5), B, seed=seed)
    y = base.y_batch.clone()
    y[:, 1] += 6.0
    problem = ps.InverseProblem(base.prior, base.operator, y, base.noise)
    problem.truth = base.truth
    return problem


def laplace_nonlinear(B: int, seed: int = 0) -> ps.InverseProblem:
    """d = 2, ``A(x) = (x_1^2 / 8 + sin x_2, x_2 / 2 - x_1 / 4)``, ``Laplace(scale=0.5)``."""

    def forward(x: Tensor) -> Tensor:
        return torch.stack([x[:, 0] ** 2 / 8 + torch.sin(x[:, 1]), x[:, 1] / 2 - x[:, 0] / 4], 1)

    return ps.problems.simulate(_prior(2, 4), Nonlinear(forward), ps.noise.Laplace(0.5), B, seed=seed)


def laplace_matrix(B: int, seed: int = 0) -> ps.InverseProblem:
    """d = 4, a 2 x 4 matrix, ``Laplace(scale=0.3)``."""
    A = _matrix(2, 4, 50, scale=0.125)
    return ps.problems.simulate(_prior(4, 5), A, ps.noise.Laplace(0.3), B, seed=seed)


PROBLEMS: dict[str, Callable[..., ps.InverseProblem]] = {
    "poisson-softplus": poisson_softplus,
    "poisson-matrix": poisson_matrix,
    "studentt-outlier": studentt_outlier,
    "laplace-nonlinear": laplace_nonlinear,
    "laplace-matrix": laplace_matrix,
}
# the problems whose operator is a nonlinear callable
NONLINEAR = {"poisson-softplus", "laplace-nonlinear"}
