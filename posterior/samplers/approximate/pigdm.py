"""Pseudoinverse-guided diffusion models (PiGDM).

Song, Vahdat, Mardani and Kautz, "Pseudoinverse-Guided Diffusion Models for Inverse Problems",
ICLR 2023. The posterior of ``x_0`` given ``x_t`` is approximated by ``N(x0_hat(x_t), r_t^2 I)``,
so ``p(y | x_t) ~ N(A x0_hat, r_t^2 A A^T + sigma^2 I)`` and its score is the vector-Jacobian
product

    ``g = (d x0_hat / d x_t)^T A^T (r_t^2 A A^T + sigma^2 I)^{-1} (y - A x0_hat)``.

``r_t^2 = sigma_t^2 / (1 + sigma_t^2)`` with ``sigma_t^2 = (1 - abar_t) / abar_t`` (the paper's
choice: the exact posterior variance for standard-normal data), i.e. ``r_t^2 = 1 - abar_t``.
With the SVD ``A = U diag(S) V^T`` the inverse is diagonal:
``A^T (r^2 A A^T + sigma^2)^{-1} u = V diag(S / (r^2 S^2 + sigma^2)) U^T u``.

The guidance enters the DDIM(eta) step as a conditional score, ``grad log p_t(x_t) + w g``,
i.e. (Tweedie) through the conditional denoiser
``x0_y = x0_hat + w (1 - abar_t) / sqrt(abar_t) g``, and ``eps_y`` consistent with it. For a
Gaussian prior ``N(mu, I)`` the approximation is exact, and so is the sampler in the limit of
many steps (``w = 1``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from posterior._utils import check_fraction, check_number
from posterior.priors.base import Denoised
from posterior.problem import InverseProblem
from posterior.samplers.approximate._loop import (
    ddim_sample,
    denoise_with_grad,
    initial_noise,
    make_result,
    reverse_loop,
)
from posterior.samplers.base import Sampler, register
from posterior.samplers.result import Result

__all__ = ["PiGDM"]


@register
class PiGDM(Sampler):
    """Pseudoinverse-guided diffusion (Song et al., ICLR 2023) for linear operators with an SVD.

    Args:
        eta: DDIM stochasticity (the paper samples with DDIM, ``eta = 1``).
        guidance_scale: weight ``w`` of the guidance score (``1``: the paper's unweighted
            conditional score; the paper's adaptive weighting is the ``r_t^2`` above).
    """

    name: ClassVar[str] = "pigdm"
    exact: ClassVar[bool] = False
    summary: ClassVar[str] = "Pseudoinverse-guided diffusion: DDIM with the Gaussian p(y | x_t) score (SVD)"

    def __init__(self, eta: float = 1.0, guidance_scale: float = 1.0) -> None:
        self.eta = check_fraction(eta, "eta")
        self.guidance_scale = check_number(guidance_scale, "guidance_scale", 0.0)

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        """Samples ``[B, N, *event_shape]``, ``N`` independent PiGDM chains per problem."""
        problem.require_gaussian(self.name)
        op = problem.require_linear(self.name, svd=True)
        prior = problem.prior
        dt = prior.dtype
        svd = op.svd_coordinates(problem.y_batch, dt, prior.device)
        S, uy = svd.s, svd.uy  # [r] and [B, r]: U^T y on the range of A
        r = S.numel()
        d = op.in_dim
        sig2 = problem.sigma.to(dt).pow(2)[:, None]  # [B, 1]
        x = initial_noise(problem, num_particles, generator)

        def step(x: Tensor, t: int, s: int, i: int) -> Tensor:
            abar = prior.schedule.alpha_bar(t).item()
            r2 = 1.0 - abar  # r_t^2 = sigma_t^2 / (1 + sigma_t^2)
            den = r2 * S.pow(2) + sig2  # [B, r]
            # S / (r^2 S^2 + sigma^2), 0 on singular values that carry no information
            coef = torch.where(S > 0, S / den.clamp_min(torch.finfo(dt).tiny), torch.zeros_like(den))

            def guidance(dn: Denoised, _x: Tensor, b: Tensor) -> Tensor:
                x0 = dn.x0.detach()
                resid = uy[b] - S * op.to_svd(x0)[:, :r]  # U^T (y - A x0): [n, r]
                z = torch.zeros(x0.shape[0], d, dtype=x0.dtype, device=x0.device)
                z[:, :r] = coef[b] * resid
                v = op.from_svd(z)  # A^T (r^2 A A^T + sigma^2 I)^{-1} (y - A x0): [n, *event]
                return (v * dn.x0).reshape(x0.shape[0], -1).sum(-1)  # gradient: J^T v

            den_out, _, g = denoise_with_grad(prior, x, t, guidance)
            x0_y = den_out.x0 + self.guidance_scale * (1 - abar) / abar**0.5 * g
            eps_y = (x - abar**0.5 * x0_y) / (1 - abar) ** 0.5
            return ddim_sample(prior, x, t, s, self.eta, generator, denoised=Denoised(eps_y, x0_y))[0]

        x = reverse_loop(
            self.name, self.time_pairs(problem, num_steps), x, step, progress, schedule=problem.prior.schedule
        )
        return make_result(self.name, x)
