"""DiffPIR: diffusion plug-and-play image restoration by half-quadratic splitting.

Zhu, Zhang, Liang, Cao, Wen, Timofte & Van Gool, "Denoising Diffusion Models for Plug-and-Play
Image Restoration", CVPR Workshops 2023 (arXiv 2305.08995), Algorithm 1.

Half-quadratic splitting of ``||y - A x||^2 / (2 sigma^2) + R(x)`` alternates a prior step, here the
diffusion denoiser ``x0_hat = E[x_0 | x_t]``, with a data step that solves the quadratic subproblem

    x0' = argmin_x ||y - A x||^2 + rho_t ||x - x0_hat||^2,   rho_t = lambda sigma^2 / sigmabar_t^2,

where ``sigmabar_t^2 = (1 - abar_t) / abar_t`` is the noise level of ``x_t / sqrt(abar_t)``. The
corrected ``x0'`` is then re-noised to the next time with a mix of the implied noise
``eps' = (x_t - sqrt(abar_t) x0') / sqrt(1 - abar_t)`` and fresh noise:
``x_s = sqrt(abar_s) x0' + sqrt(1 - abar_s) (sqrt(1 - zeta) eps' + sqrt(zeta) z)``.
The data step is closed-form through the operator's SVD, conjugate gradients otherwise.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from posterior._utils import check_fraction, check_positive, check_positive_int
from posterior.problem import InverseProblem
from posterior.samplers.approximate._linear_solve import ridge_solve
from posterior.samplers.approximate._loop import (
    denoise,
    flat,
    initial_noise,
    make_result,
    randn_like,
    reverse_loop,
    unflat,
)
from posterior.samplers.base import Sampler, register
from posterior.samplers.result import Result
from posterior.schedule import CLEAN

__all__ = ["DiffPIR", "diffpir_data_step"]


def diffpir_data_step(problem: InverseProblem, x0: Tensor, t: int, lam: float, cg_iters: int = 100) -> Tensor:
    """The data-consistency step of DiffPIR at time ``t``.

    Solves ``argmin_x ||y_b - A x||^2 + rho_{t,b} ||x - x0||^2`` with
    ``rho_{t,b} = lam * sigma_b^2 * abar_t / (1 - abar_t)`` for ``x0: Tensor[B, N, *event_shape]``;
    returns the minimisers, same shape.
    """
    op = problem.require_linear("diffpir")
    B, N = x0.shape[:2]
    abar = problem.prior.schedule.alpha_bar(t).item()
    rho = lam * problem.sigma.to(x0.dtype).pow(2) * abar / (1 - abar)  # [B]
    y = problem.y_batch.repeat_interleave(N, dim=0)
    out = ridge_solve(op, y, flat(x0), rho.repeat_interleave(N), cg_iters=cg_iters)
    return unflat(out, B, N)


@register
class DiffPIR(Sampler):
    """DiffPIR (Zhu et al., 2023): HQS with the diffusion denoiser as the prior step.

    Needs a linear operator and ``noise_std > 0``. One network evaluation per step and sample.

    Args:
        lam: ``lambda``, the weight of the proximal term (``rho_t = lambda sigma^2 / sigmabar_t^2``);
            default 7, the value of the authors' experiment scripts.
        zeta: share of fresh noise when re-noising (default 0.3, the authors' scripts); ``0`` is
            deterministic DDIM-like, ``1`` fully re-noises.
        cg_iters: conjugate-gradient iterations of the data step for operators without an SVD.
    """

    name: ClassVar[str] = "diffpir"
    exact: ClassVar[bool] = False
    summary: ClassVar[str] = "DiffPIR: half-quadratic splitting with the diffusion denoiser as prior step"

    def __init__(self, lam: float = 7.0, zeta: float = 0.3, cg_iters: int = 100) -> None:
        self.lam = check_positive(lam, "lam")
        self.zeta = check_fraction(zeta, "zeta")
        self.cg_iters = check_positive_int(cg_iters, "cg_iters")

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
        schedule = prior.schedule

        def step(x: Tensor, t: int, s: int, i: int) -> Tensor:
            x0 = denoise(prior, x, t).x0
            x0 = diffpir_data_step(problem, x0, t, self.lam, self.cg_iters)
            if s == CLEAN:
                return x0
            abar_t, abar_s = schedule.alpha_bar(t).item(), schedule.alpha_bar(s).item()
            eps = (x - abar_t**0.5 * x0) / (1 - abar_t) ** 0.5
            noise = (1 - self.zeta) ** 0.5 * eps + self.zeta**0.5 * randn_like(x, generator)
            return abar_s**0.5 * x0 + (1 - abar_s) ** 0.5 * noise

        x = initial_noise(problem, num_particles, generator)
        x = reverse_loop(
            self.name, self.time_pairs(problem, num_steps), x, step, progress, schedule=problem.prior.schedule
        )
        return make_result(self.name, x)
