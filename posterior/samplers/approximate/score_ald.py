"""Score-based annealed Langevin dynamics for linear inverse problems (Score-ALD).

Jalal, Arvinte, Daras, Price, Dimakis and Tamir, "Robust Compressed Sensing MRI with Deep
Generative Priors", NeurIPS 2021. At each noise level of a decreasing sequence the sampler runs
Langevin dynamics on the prior score plus an approximate measurement score,

    ``x <- x + alpha_t (grad log p_t(x) - A^T (A x - y) / (sigma_y^2 + gamma_t^2)) + sqrt(2 alpha_t) z``,

in the variance-exploding scale of the paper (NCSNv2): ``x = x_t / sqrt(abar_t) = x_0 +
sigma_t eps`` with ``sigma_t^2 = (1 - abar_t) / abar_t``, whose score is
``-eps_hat(x_t) / sigma_t``. The step is ``alpha_t = step_size * sigma_t^2`` (the paper's
``eps sigma_t^2 / sigma_L^2`` with ``step_size = eps / sigma_L^2``) and ``gamma_t = gamma_scale *
sigma_t`` (the extra noise of ``A x_t`` around ``A x_0`` when ``A A^T ~ I``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from posterior._utils import check_number, check_positive, check_positive_int
from posterior.problem import InverseProblem
from posterior.samplers.approximate._loop import (
    denoise,
    flat,
    initial_noise,
    make_result,
    per_problem,
    randn_like,
    reverse_loop,
    unflat,
)
from posterior.samplers.base import Sampler, register
from posterior.samplers.result import Result

__all__ = ["ScoreALD"]


@register
class ScoreALD(Sampler):
    """Annealed Langevin dynamics with an approximate measurement score (Jalal et al., 2021).

    Args:
        steps_per_level: Langevin steps at each of the ``num_steps`` noise levels (network
            evaluations: ``num_steps * steps_per_level``).
        step_size: ``alpha_t / sigma_t^2``. The paper tunes its ``eps`` per task; ``0.3`` with 3
            steps per level did best on the Gaussian-mixture benchmark (``gmm_benchmark(8, 2,
            seed)``, seeds 1-5) among step sizes ``0.03 .. 1`` that stay stable. The measurement
            step is stable while ``step_size * s_max^2 / gamma_scale^2 < 2`` (``s_max``: largest
            singular value of ``A``).
        gamma_scale: ``gamma_t = gamma_scale * sigma_t`` (default ``1``).

    Needs a linear operator (for ``A^T``).
    """

    name: ClassVar[str] = "score_ald"
    exact: ClassVar[bool] = False
    summary: ClassVar[str] = "Score-ALD: annealed Langevin, measurement score A^T(y - Ax)/(s^2 + gamma_t^2)"

    def __init__(self, steps_per_level: int = 3, step_size: float = 0.3, gamma_scale: float = 1.0) -> None:
        self.steps_per_level = check_positive_int(steps_per_level, "steps_per_level")
        self.step_size = check_positive(step_size, "step_size")
        self.gamma_scale = check_number(gamma_scale, "gamma_scale", 0.0)

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        """Samples ``[B, N, *event_shape]``, ``N`` independent annealed Langevin chains per problem."""
        problem.require_gaussian(self.name)
        op = problem.require_linear(self.name)
        prior = problem.prior
        B, N = problem.batch_size, num_particles
        y = problem.y_batch[:, None]  # [B, 1, *obs]
        sig2_y = problem.sigma.to(prior.dtype).pow(2)  # [B]
        pairs = self.time_pairs(problem, num_steps)
        # Start from the prior at the top level, in VE scale: x = x_T / sqrt(abar_T).
        x = initial_noise(problem, N, generator) / prior.schedule.alpha_bar(pairs[0][0]).item() ** 0.5

        def step(x: Tensor, t: int, s: int, i: int) -> Tensor:
            abar = prior.schedule.alpha_bar(t).item()
            sig2 = (1 - abar) / abar
            alpha = self.step_size * sig2
            lik_w = per_problem(1.0 / (sig2_y + self.gamma_scale**2 * sig2), x)  # [B, 1, ...]
            for _ in range(self.steps_per_level):
                score = -denoise(prior, x * abar**0.5, t).eps / sig2**0.5
                resid = y - unflat(op.A(flat(x)), B, N)  # [B, N, *obs]
                lik = unflat(op.A_adjoint(flat(resid)), B, N)
                x = x + alpha * (score + lik_w * lik) + (2 * alpha) ** 0.5 * randn_like(x, generator)
            return x

        x = reverse_loop(self.name, pairs, x, step, progress, schedule=problem.prior.schedule)
        return make_result(self.name, x)
