"""MCGdiff: Monte Carlo guided diffusion for linear Gaussian inverse problems.

Cardoso, Janati, Le Corff & Moulines, "Monte Carlo guided diffusion for Bayesian linear inverse
problems", ICLR 2024. In the operator's SVD basis (``z = V^T x``, ``y~ = U^T y / S``) each observed
coordinate of ``x_t`` is twisted towards the noised observation ``sqrt(abar_t) y~`` with the
variance it would have if ``z_0`` were observed through the diffusion's own noise:

    g_t(x_t) = prod_i N(sqrt(abar_t) y~_i; z_t,i, 1 - abar_t + abar_t sigma^2 / S_i^2)

(noiseless case: ``1 - abar_t / abar_K``, MCGdiff's potential pinned at the last noisy time
``t_K``, where the observed coordinates are set to ``sqrt(abar_K) y~``; the noisy case folds the
observation noise into the variance instead of MCGdiff's time-shift ``tau_i``, which keeps every
step a plain Gaussian product). Proposal: prior reverse kernel times ``g_s`` (optimal, coordinate-wise);
weight: the Gaussian predictive over ``g_t``; last step: the true likelihood. Gradient-free.
"""

from __future__ import annotations

import torch
from torch import Tensor

from posterior.problem import InverseProblem
from posterior.samplers.base import register
from posterior.samplers.exact._smc_common import ParticleSampler, SVDTwistModel

__all__ = ["MCGdiff"]


class MCGdiffModel(SVDTwistModel):
    def path(self, t: int) -> tuple[Tensor, Tensor]:
        abar = self.prior.schedule.alpha_bar(t).item()
        return abar**0.5 * self.y_tilde[:, None], ((1 - abar / self.a_end) + abar * self.obs_var)[:, None]


@register
class MCGdiff(ParticleSampler):
    """MCGdiff (Cardoso et al., ICLR 2024) for linear operators with an SVD, noisy or noiseless.

    Options:
        resampling: ``"systematic"`` (default), ``"stratified"``, ``"multinomial"``, ``"residual"``.
        threshold: resample when ESS ``< threshold * N`` (default ``0.5``), or ``"always"``/``"never"``.
        eta: DDIM stochasticity of the prior kernel, in ``(0, 1]`` (default ``1``: DDPM).
        exact_start: weight ``x_T ~ N(0, I)`` by ``p_T / N(0, I)`` where the prior has a density.
        move: optional MCMC move after each resampling (resample-move).
    """

    name = "mcgdiff"
    summary = "MCGdiff (Cardoso et al. 2024): SVD-basis twisted SMC for linear Gaussian problems"

    def model(self, problem: InverseProblem, num_steps: int, generator: torch.Generator) -> MCGdiffModel:
        return MCGdiffModel(problem, num_steps, self.eta, self.exact_start, self.name)
