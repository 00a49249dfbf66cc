"""A twist with the denoiser's own covariance: ``N(y; A x0_hat, sigma^2 I + c_t A J A^T)``.

``J = d x0_hat / d x_t`` is the denoiser's Jacobian.

Tweedie's second-order formula gives the covariance of ``x_0`` given ``x_t`` from the denoiser's
Jacobian, ``Cov[x_0 | x_t] = c_t J`` with ``c_t = (1 - abar_t) / sqrt(abar_t)`` (the covariance
MMPS moment-matches, Rozet et al., 2024; TMPD, Boys et al., 2023). Unlike the isotropic
``r_t^2 I`` and the prior-wide ``Sigma_t`` of :mod:`posterior.samplers.exact.covariance_twist`, it
is local: each particle's twist allows the pixel correlations the model sees at that particle.

As a TDS twist (Wu et al., 2023), per particle, with ``r = y - A x0_hat(x_t)``:

    log g_t(x_t) = -1/2 r^T u,   u = (sigma^2 I + c_t A J A^T)^{-1} r   (k conjugate-gradient steps)
    grad log g_t ~= J^T A^T u                                          (one more VJP)

``J`` is applied as ``J^T`` (symmetric for an exact denoiser), the solve starts from zero and runs a
fixed number of iterations, so ``g_t`` is a deterministic positive function of ``x_t`` and TDS stays
exact. Two approximations only change how well ``g_t`` follows ``p(y | x_t)``, not exactness: the
``log det`` of the covariance is left out (it varies between particles through ``J``), and the
gradient treats ``u`` as constant (TDS's proposal may use any drift; its weights use the one
taken). Cost per particle and step: one network evaluation and ``k + 1`` VJPs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from posterior.priors.base import Denoised
from posterior.problem import InverseProblem
from posterior.samplers.approximate._linear_solve import batch_dot, tweedie_solve

__all__ = ["tweedie_twist"]


def tweedie_twist(
    problem: InverseProblem, x: Tensor, t: int, N: int, cg_iters: int, scale: float = 1.0
) -> tuple[Denoised, Tensor, Tensor]:
    """The Tweedie-covariance twist at flat particles ``x: Tensor[B * N, *event]`` (rows
    ``b * N + n``) and time ``t``.

    Args:
        problem: linear operator, Gaussian noise.
        x: the particles, problem-major.
        t: the diffusion time (noisy: ``t >= 0``).
        N: particles per problem.
        cg_iters: conjugate-gradient iterations for ``u`` (``0``: ``u = r / sigma^2``).
        scale: multiplies ``c_t`` (TDS's ``twist_scale``).

    Returns:
        ``(Denoised, log_twist: Tensor[B * N], grad: Tensor[B * N, *event])``, detached.
    """
    op = problem.require_linear("tds")
    with torch.no_grad():
        d, r, u, vjp = tweedie_solve(problem, x, t, N, cg_iters, scale)
        grad = vjp(op.A_adjoint(u))
    return d, -0.5 * batch_dot(r, u), grad
