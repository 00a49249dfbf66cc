"""Moment Matching Posterior Sampling (MMPS).

Rozet, Andry, Lanusse & Louppe, "Learning Diffusion Priors from Observations by Expectation
Maximization", NeurIPS 2024 (arXiv 2405.13712), section 4.

The likelihood of a noisy state is approximated by matching the first two moments of
``p(x_0 | x_t)``: with Tweedie's formulas ``E[x_0 | x_t] = x0_hat(x_t)`` and
``Cov[x_0 | x_t] = gamma_t J``, ``J = d x0_hat / d x_t``, ``gamma_t = (1 - abar_t) / sqrt(abar_t)``,

    p(y | x_t) ~= N(y; A x0_hat, sigma^2 I + gamma_t A J A^T),

whose gradient is ``grad log p(y | x_t) = J^T A^T v`` with ``v`` the solution of
``(sigma^2 I + gamma_t A J A^T) v = y - A x0_hat``. The system is solved by conjugate gradients
using only vector-Jacobian products of the denoiser (``J`` is symmetric for an exact denoiser, so
``J v = J^T v``; no dense Jacobian). The posterior denoiser
``x0_hat + gamma_t J^T A^T v = E[x_0 | x_t, y]`` (Tweedie again) then drives a DDIM(eta) step.
For a Gaussian prior and a linear Gaussian likelihood the approximation is exact.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from posterior._utils import check_fraction, check_positive_int
from posterior.priors.base import Denoised
from posterior.problem import InverseProblem
from posterior.samplers.approximate._linear_solve import tweedie_solve
from posterior.samplers.approximate._loop import (
    ddim_sample,
    flat,
    initial_noise,
    make_result,
    reverse_loop,
    unflat,
)
from posterior.samplers.base import Sampler, register
from posterior.samplers.result import Result

__all__ = ["MMPS", "mmps_denoise"]


def mmps_denoise(problem: InverseProblem, x: Tensor, t: int, cg_iters: int) -> tuple[Denoised, Tensor]:
    """The MMPS posterior denoiser and likelihood score at ``(x_t, t)``.

    Args:
        problem: a problem with a linear operator and ``noise_std > 0``.
        x: ``Tensor[B, N, *event_shape]`` noisy states at time ``t >= 0``.
        t: the integer diffusion time.
        cg_iters: conjugate-gradient iterations for ``(sigma^2 I + gamma_t A J A^T) v = y - A x0_hat``.

    Returns:
        ``(Denoised, guidance)``: the predictions of the posterior denoiser ``E[x_0 | x_t, y]``
        (fields ``[B, N, *event_shape]``) and ``guidance ~= grad_{x_t} log p(y | x_t)``
        (``[B, N, *event_shape]``); the posterior score is ``prior.score(x_t, t) + guidance``.
        Costs one network evaluation and ``cg_iters + 1`` VJPs per sample.
    """
    op = problem.require_linear("mmps")
    B, N = x.shape[:2]
    xf = flat(x)
    d, _, v, vjp = tweedie_solve(problem, xf, t, N, cg_iters)
    abar = problem.prior.schedule.alpha_bar(t).item()
    gamma = (1 - abar) / abar**0.5
    guidance = vjp(op.A_adjoint(v))  # J^T A^T v
    x0 = d.x0 + gamma * guidance
    a, s = abar**0.5, (1 - abar) ** 0.5
    eps = (xf - a * x0) / s
    return Denoised(unflat(eps, B, N), unflat(x0, B, N)), unflat(guidance, B, N)


@register
class MMPS(Sampler):
    """Moment Matching Posterior Sampling (Rozet et al., 2024).

    Each reverse step replaces the denoiser by the moment-matched posterior denoiser of
    :func:`mmps_denoise` and takes a DDIM(``eta``) step with it. Needs a linear operator and
    ``noise_std > 0``. Cost per step: one network evaluation and ``cg_iters + 1`` VJPs per sample.

    Args:
        cg_iters: conjugate-gradient iterations per step (default 1, the authors' reference
            implementation in ``azula``; the paper reports 1 to 3 as enough). The solve is exact
            after ``m = obs_dim`` iterations.
        eta: DDIM stochasticity of the reverse step (default 1: DDPM ancestral).
    """

    name: ClassVar[str] = "mmps"
    exact: ClassVar[bool] = False
    summary: ClassVar[str] = "Moment Matching Posterior Sampling: Tweedie-covariance guidance solved by CG"

    def __init__(self, cg_iters: int = 1, eta: float = 1.0) -> None:
        self.cg_iters = check_positive_int(cg_iters, "cg_iters")
        self.eta = check_fraction(eta, "eta")

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        problem.require_gaussian(self.name)
        problem.require_linear(self.name)
        problem.require_noise(self.name)
        prior = problem.prior

        def step(x: Tensor, t: int, s: int, i: int) -> Tensor:
            d, _ = mmps_denoise(problem, x, t, self.cg_iters)
            x_s, _ = ddim_sample(prior, x, t, s, self.eta, generator, denoised=d)
            return x_s

        x = initial_noise(problem, num_particles, generator)
        x = reverse_loop(
            self.name, self.time_pairs(problem, num_steps), x, step, progress, schedule=problem.prior.schedule
        )
        return make_result(self.name, x)
