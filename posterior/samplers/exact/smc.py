"""Filtering posterior sampling with SMC (FPS-SMC) along a noised measurement path.

Dou & Song, "Diffusion posterior sampling for linear inverse problem solving: a filtering
perspective", ICLR 2024. Each particle carries a measurement path ``y_t``, drawn backwards
towards ``y_{-1} = y`` with the DDPM bridge (and resampled with its particle), so that
``y_t = A x_t + sqrt(abar_t) sigma n`` mirrors the forward process of ``x``. In the SVD basis
(``c_t = U^T y_t / S``):

    y_T ~ N(sqrt(abar_T) y, (1 - abar_T) A A^T)       y_s | y_t ~ q(y_s | y_t, y_{-1} = y)
    g_t(x_t) = N(c_t; V^T x_t, abar_t sigma^2 / S^2 + 2 (1 - abar_t))   (observed coordinates)

Proposal: prior reverse kernel times ``g_s`` (FPS's conditional proposal, a Gaussian product);
weight: the predictive over ``g_t``, so the potentials telescope: on the space of (particle, path)
the final target is the exact model posterior times the law of the paths (the last step weighs
by the true likelihood).
The twist variance adds ``2 (1 - abar_t)`` to FPS's ``abar_t sigma^2 / S^2``: the path's noise and
the particle's are independent here, and without it the telescoped weights degenerate.
Gradient-free; linear operators with an SVD.

``noise_std = 0`` (every problem of the batch): the path is pinned to ``sqrt(abar_K) y~`` at the
last noisy time ``t_K`` and the twist variance is ``2 (1 - abar_t / abar_K)``, a point mass at
``t_K`` (see :mod:`posterior.samplers.exact.svd_twist`). This is the
noiseless case SMCDiff (Trippe et al., 2022) addresses by replacing the observed coordinates
with one shared forward-noised path, which is exact only if the model's reverse process matches
its forward one (measured here: mode weights off by up to 0.3 between paths on the
Gaussian-mixture benchmark); the per-particle bridge path keeps the weights exact for the model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from posterior.particles.feynman_kac import Extras
from posterior.problem import InverseProblem
from posterior.samplers.base import register
from posterior.samplers.exact.particle_sampler import ParticleSampler
from posterior.samplers.exact.svd_twist import SVDTwistModel
from posterior.schedule import CLEAN

__all__ = ["FPSSMC"]


class FPSModel(SVDTwistModel):
    """FPS-SMC's model: the SVD-basis twist along a per-particle measurement path (extra ``c``)."""

    def __init__(
        self, problem: InverseProblem, pairs: list[tuple[int, int]], eta: float, exact_start: bool
    ) -> None:
        super().__init__(problem, pairs, eta, exact_start, "smc")

    def _abar(self, t: int) -> float:
        """``abar_t / abar_end``: the path's own schedule, from where it is pinned."""
        return self.prior.schedule.alpha_bar(t).item() / self.a_end

    def init_path(self, B: int, N: int, generator: torch.Generator) -> Extras:
        end, a = self.a_end**0.5 * self.y_tilde[:, None], self._abar(self.pairs[0][0])
        xi = torch.randn(B, N, end.shape[-1], generator=generator, device=end.device, dtype=end.dtype)
        return {"c": a**0.5 * end + (1 - a) ** 0.5 * xi}  # [B, N, r]: unit noise in SVD coordinates

    def advance(self, t: int, s: int, extras: Extras, generator: torch.Generator) -> Extras:
        end, c = self.a_end**0.5 * self.y_tilde[:, None], extras["c"]
        if s == CLEAN or self.pinned(s):
            return {**extras, "c": end.expand_as(c) if s != CLEAN else self.y_tilde[:, None].expand_as(c)}
        a_t, a_s = self._abar(t), self._abar(s)
        beta = 1 - a_t / a_s  # DDPM posterior q(c_s | c_t, c_end = end)
        mean = (a_s**0.5 * beta * end + (a_t / a_s) ** 0.5 * (1 - a_s) * c) / (1 - a_t)
        std = ((1 - a_s) / (1 - a_t) * beta) ** 0.5
        noise = torch.randn(c.shape, generator=generator, device=c.device, dtype=c.dtype)
        return {**extras, "c": mean + std * noise}

    def path(self, t: int, extras: Extras) -> tuple[Tensor, Tensor]:
        abar = self.prior.schedule.alpha_bar(t).item()
        # c_t - z_t = sqrt(abar) (y~ - z_0) + sqrt(1 - abar) (xi_t - eps_t): path and particle
        # noises are independent, hence 2 (1 - abar); FPS's abar sigma^2 / S^2 alone would make the
        # telescoped weights degenerate (measured: ESS ~ 1). Noiseless: 1 - abar / abar_K in place
        # of 1 - abar, so that the twist is a point mass at t_K.
        return extras["c"], (abar * self.obs_var + 2 * (1 - abar / self.a_end))[:, None]


@register
class FPSSMC(ParticleSampler):
    """FPS-SMC (Dou & Song, ICLR 2024), with telescoping potentials so that it is exact.

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

    name = "smc"
    summary = "FPS-SMC (Dou & Song 2024): SMC along a noised measurement path, linear problems"

    def model(self, problem: InverseProblem, pairs: list[tuple[int, int]]) -> FPSModel:
        return FPSModel(problem, pairs, self.eta, self.exact_start)
