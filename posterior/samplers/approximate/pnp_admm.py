"""Plug-and-play ADMM with the diffusion denoiser.

Venkatakrishnan, Bouman & Wohlberg, "Plug-and-Play Priors for Model Based Reconstruction",
GlobalSIP 2013; with the continuation (annealed penalty) of Chan, Wang & Elgendy, "Plug-and-Play
ADMM for Image Restoration: Fixed-Point Convergence and Applications", IEEE TCI 2017, and the
diffusion model as the denoiser, as in DiffPIR (Zhu et al., 2023).

Scaled-form ADMM on ``||y - A x||^2 / (2 sigma^2) + R(x)`` with the split ``x = z``:

    x <- argmin_x ||y - A x||^2 / (2 sigma^2) + (rho_k / 2) ||x - (z - u)||^2   (data step)
    z <- D(x + u; sigmabar_k)                                                  (prior step)
    u <- u + x - z

The prior step is the proximal map of ``R`` with step ``1 / rho_k``, replaced by the MMSE denoiser
at noise level ``sigmabar_k``: if ``v = x_0 + sigmabar e`` then ``sqrt(abar_t) v`` is distributed as
``x_t`` for the time with ``(1 - abar_t) / abar_t = sigmabar^2``, so
``D(v) = E[x_0 | x_t = sqrt(abar_t) v]``. The penalty follows the diffusion times,
``rho_k = lam / sigmabar_{t_k}^2``, decreasing the denoising strength from pure noise to clean;
the scaled dual ``u`` is rescaled by ``rho_{k-1} / rho_k`` when the penalty changes (Boyd et al.,
"Distributed Optimization and Statistical Learning via ADMM", 2011, section 3.4.1).
The data step is closed-form through the operator's SVD, conjugate gradients otherwise.
Deterministic given the initial ``z ~ N(0, I)``; the particles are independent restarts.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from posterior._utils import check_positive, check_positive_int
from posterior.problem import InverseProblem
from posterior.samplers.approximate._linear_solve import ridge_solve
from posterior.samplers.approximate._loop import denoise, flat, initial_noise, iterate, make_result, unflat
from posterior.samplers.base import Sampler, register
from posterior.samplers.result import Result

__all__ = ["PnPADMM", "admm_data_step"]


class ADMMState(NamedTuple):
    """The ADMM iterates, each ``[B, N, *event]``, and the penalty of the last step."""

    x: Tensor  # data-consistent iterate (the returned sample)
    z: Tensor  # denoised iterate
    u: Tensor  # scaled dual variable
    rho: float | None


def admm_data_step(problem: InverseProblem, v: Tensor, rho: Tensor, cg_iters: int = 100) -> Tensor:
    """``argmin_x ||y_b - A x||^2 / (2 sigma_b^2) + (rho_b / 2) ||x - v||^2`` for ``v: [B, N, *event]``.

    ``rho``: ``Tensor[B]`` (or a scalar), the ADMM penalty in units of a precision. Returns the
    minimisers, ``Tensor[B, N, *event_shape]``.
    """
    op = problem.require_linear("pnp_admm")
    B, N = v.shape[:2]
    rho = torch.as_tensor(rho, dtype=v.dtype, device=v.device).expand(B)
    # multiply the objective by sigma^2: ||y - A x||^2 + sigma^2 rho ||x - v||^2 (a ridge problem)
    ridge = (problem.sigma.to(v.dtype).pow(2) * rho).repeat_interleave(N)
    y = problem.y_batch.repeat_interleave(N, dim=0)
    return unflat(ridge_solve(op, y, flat(v), ridge, cg_iters=cg_iters), B, N)


@register
class PnPADMM(Sampler):
    """Plug-and-play ADMM (Venkatakrishnan et al., 2013) with the diffusion denoiser.

    ``num_steps`` ADMM iterations, one per diffusion time of the sampling grid (largest first).
    Needs a linear operator and ``noise_std > 0``. One network evaluation per iteration and sample.

    Args:
        lam: penalty scale, ``rho_k = lam / sigmabar_k^2`` (default 1: the penalty equals the
            precision of the denoiser's noise level, so the prior step is the exact proximal map
            for a Gaussian prior).
        cg_iters: conjugate-gradient iterations of the data step for operators without an SVD.
    """

    name: ClassVar[str] = "pnp_admm"
    exact: ClassVar[bool] = False
    summary: ClassVar[str] = "Plug-and-play ADMM with the diffusion denoiser and an annealed penalty"

    def __init__(self, lam: float = 1.0, cg_iters: int = 100) -> None:
        self.lam = check_positive(lam, "lam")
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
        times = [t for t, _ in self.time_pairs(problem, num_steps)]
        z = initial_noise(problem, num_particles, generator)

        def step(state: ADMMState, t: int, i: int) -> ADMMState:
            abar = prior.schedule.alpha_bar(t).item()
            rho = self.lam * abar / (1 - abar)
            # the scaled dual u = dual / rho follows the penalty
            u = state.u if state.rho is None else state.u * (state.rho / rho)
            x = admm_data_step(
                problem, state.z - u, torch.tensor(rho, dtype=z.dtype, device=z.device), self.cg_iters
            )
            z_new = denoise(prior, abar**0.5 * (x + u), t).x0
            return ADMMState(x, z_new, u + x - z_new, rho)

        where = lambda i, t: f"step {i} (t={t})"  # noqa: E731
        x = iterate(self.name, times, ADMMState(z, z, torch.zeros_like(z), None), step, where, progress).x
        return make_result(self.name, x)
