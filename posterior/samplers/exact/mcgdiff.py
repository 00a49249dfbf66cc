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

The twist by default (``prior_var = V`` finite) is ``p(y~ | z_t)`` for a ``N(m_i, V)`` prior on each
coordinate of ``z_0`` (``m = V^T`` the prior's mean, from ``prior.moments()``) instead of
MCGdiff's potential above (which is the ``V = inf`` limit):

    g_t(x_t) = prod_i N(y~_i; m_i + a_t (z_t,i - sqrt(abar_t) m_i), r_t^2 + sigma^2 / S_i^2),
    a_t = sqrt(abar_t) V / (abar_t V + 1 - abar_t),   r_t^2 = V (1 - abar_t) / (abar_t V + 1 - abar_t).

Both agree at small ``t``; at large ``t`` this one is flat (``x_t`` says nothing about ``y``),
where MCGdiff's pulls every coordinate of ``z_t`` to ``0`` with unit variance. With an exact
score the reverse kernel carries that potential along and the weights stay even; with a learned
model, whose kernel does not quite match its forward process at large ``t``, the mismatch is
summed over every observed coordinate and the weights collapse in the first steps. Any positive twist
keeps the sampler exact; this choice is what decides its efficiency. Measured (2026-11-30): MNIST
half-inpainting, 4 digits, 32 particles, 20 steps, noise 0.1: PSNR of the mean 16.3 dB and 90%
pixel coverage 0.24 with ``V = 1`` against 11.0 dB and 0.02 with ``V = inf`` (first-step ESS 32 of
32 against 1-3); with noise 30 (a flat likelihood) ESS 32 at every step against 1. On the
Gaussian-mixture grid (dims 8 and 80, obs_dim 1, 2, 4, 5 seeds, N = 2000) the mean sliced W1 over
the six cells is 0.27 with ``"auto"`` against 0.36 with ``inf``.
"""

from __future__ import annotations

import math

from torch import Tensor

from posterior.particles.feynman_kac import Extras
from posterior.problem import InverseProblem
from posterior.samplers.base import register
from posterior.samplers.exact.particle_sampler import TwistedSampler
from posterior.samplers.exact.svd_twist import SVDTwistModel
from posterior.schedule import CLEAN

__all__ = ["MCGdiff"]


class MCGdiffModel(SVDTwistModel):
    """MCGdiff's model: the SVD-basis twist along the deterministic path of the module docstring."""

    def __init__(
        self,
        problem: InverseProblem,
        pairs: list[tuple[int, int]],
        eta: float,
        exact_start: bool,
        prior_mean: Tensor | None,
        prior_var: float,
    ) -> None:
        super().__init__(problem, pairs, eta, exact_start, "mcgdiff")
        self.prior_var = prior_var
        # m: the prior mean in SVD coordinates, [1, 1, r]
        self.m = None if prior_mean is None else self.op.V_adjoint(prior_mean[None])[:, None, : self.r]

    def path(self, t: int, extras: Extras) -> tuple[Tensor, Tensor]:
        abar, V = self.prior.schedule.alpha_bar(t).item(), self.prior_var
        if V == math.inf or self.noiseless or t == CLEAN:
            return abar**0.5 * self.y_tilde[:, None], ((1 - abar / self.a_end) + abar * self.obs_var)[:, None]
        # p(y~ | z_t) for a N(m, V) prior on z_0: E[z_0 | z_t] = m + a (z_t - sqrt(abar) m), so
        # y~ ~ N(m + a (z_t - sqrt(abar) m), r2 + sigma^2 / S^2), written as a Gaussian in z_t with
        # mean (y~ - m) / a + sqrt(abar) m (the factor 1 / a is a constant: any positive twist
        # keeps the weights exact)
        a = abar**0.5 * V / (abar * V + 1 - abar)
        r2 = V * (1 - abar) / (abar * V + 1 - abar)
        c = (self.y_tilde[:, None] - self.m) / a + abar**0.5 * self.m
        return c, ((r2 + self.obs_var) / a**2)[:, None]


@register
class MCGdiff(TwistedSampler):
    """MCGdiff (Cardoso et al., ICLR 2024) for linear operators with an SVD, noisy or noiseless.

    Converges to: as ``num_particles`` grows at fixed ``num_steps``, the posterior of the
    ``num_steps``-step reverse chain it simulates (started from the prior's exact ``p_T`` where it
    can draw it or has a density, else from ``N(0, I)``), ``p_chain(x_0) p(y | x_0) / Z``, and its
    ``log_evidence`` to ``log Z``; the chain's posterior tends to the prior's as ``num_steps``
    grows (tested against :func:`posterior.diagnostics.oracles.chain_posterior`).

    Options:
        resampling: ``"systematic"`` (default), ``"stratified"``, ``"multinomial"``, ``"residual"``.
        threshold: resample when ESS ``< threshold * N`` (default ``0.5``), or ``"always"``/``"never"``.
        eta: DDIM stochasticity of the prior kernel, in ``(0, 1]`` (default ``1``: DDPM).
        kernel_var: the prior kernel's variance: ``"ddim"`` (default, DDIM(eta)'s) or
            ``"analytic"``: Analytic-DPM's optimal variance around the DDIM(eta) mean (Bao et al.
            2022; :mod:`posterior.samplers.exact.analytic_variance`), from the prior's denoiser
            error per time; ``eta = 0`` allowed. The sampler stays exact for the chain it walks.
        exact_start: weight ``x_T ~ N(0, I)`` by ``p_T / N(0, I)`` where the prior has a density.
        move: optional MCMC move after each resampling (resample-move).
        rejuvenate: after each resampling, redraw each particle's newest state from its
            conditional given the rest of its path (an exact Gibbs move at no network cost, see
            :mod:`posterior.samplers.exact.svd_twist`); default ``False``.
        prior_var: ``V``, the per-coordinate prior variance of the twist (see the module
            docstring). ``"auto"`` (default): the mean of the prior's per-coordinate variances
            (``prior.moments()``: exact for the Gaussian mixture, estimated once from the prior's
            own draws otherwise); ``math.inf``: MCGdiff's own potential. The twist's mean is the
            prior's mean (``prior.moments()``) for finite ``V``.
        runs: split the ``num_particles`` particles into this many independent particle systems
            of ``num_particles / runs`` particles each, run as one batch (default ``1``). The
            runs are the chains of ``Result.to_arviz()`` (R-hat and ESS across runs;
            ``stats["run_samples"]`` holds each run's own draws); ``Result.one_per_run()`` keeps
            one draw of each run.
        merge: how the runs combine (:func:`~posterior.samplers.exact.particle_sampler.merge_runs`):
            ``"evidence"`` (default) weighs each run's particles by its evidence estimate, which
            converges as the runs grow in size or in number; ``"equal"`` counts every run
            ``1 / runs``, an approximation that keeps one run's bias at a fixed run size.
    """

    name = "mcgdiff"
    summary = "MCGdiff (Cardoso et al. 2024): SVD-basis twisted SMC for linear Gaussian problems"

    def model(self, problem: InverseProblem, pairs: list[tuple[int, int]]) -> MCGdiffModel:
        mean, V = self.prior_gaussian(problem)
        return MCGdiffModel(problem, pairs, self.eta, self.exact_start, mean, V)
