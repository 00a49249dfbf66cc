"""Twisted Diffusion Sampler (TDS).

Wu, Trippe, Naesseth, Blei & Cunningham, "Practical and asymptotically exact conditional sampling
in diffusion models", NeurIPS 2023, Algorithm 1. The twisting function approximates
``p(y | x_t)`` through the denoiser ``x0_hat(x_t) = E[x_0 | x_t]``:

    p~_t(y | x_t) = N(y; A(x0_hat(x_t)), (sigma^2 + r_t^2) I)

Proposal: the prior reverse kernel ``N(mu_t, v_t I)`` with its mean shifted by
``v_t grad_{x_t} log p~_t(y | x_t)``; weight

    w = p(x_s | x_t) p~_s(y | x_s) / (q(x_s | x_t, y) p~_t(y | x_t)),

and the last step (``s = CLEAN``) uses the true likelihood ``p(y | x_0)`` for ``p~``. One network
evaluation and one vector-Jacobian product per particle and step (``prior.denoise_with_grad``).
Works for any differentiable operator and any noise model (:mod:`posterior.noise`): for
non-Gaussian noise ``p~_t`` is ``problem.noise.twist_log_prob(y, A(x0_hat), twist_scale * r_t^2)``,
the likelihood tempered per entry by ``v / (v + r_t^2)`` (``v`` the noise's variance); the last step
still uses the true likelihood, so the sampler stays exact.

Choice of ``r_t`` (the paper leaves it open): the variance of ``x_0`` given ``x_t`` when the prior
is replaced by a Gaussian of the same per-coordinate variance ``V``,

    r_t^2 = twist_scale * V (1 - abar_t) / (1 - abar_t + abar_t V),

which tends to ``V`` (the twist knows no more than the prior) early and to ``(1 - abar_t) / abar_t``
late. ``V = inf`` gives the flat-prior ``(1 - abar_t) / abar_t``; ``twist_scale = 0`` the DPS-like
twist of the paper's experiments. Measured on the Gaussian-mixture benchmark (dim 8, obs_dim 2,
4 seeds, N = 2000): sliced W1 0.14 with ``V`` = the prior's variance (65), 0.30 with ``V = inf``,
1.0 with ``V = 16`` (an overconfident twist misallocates the modes).
"""

from __future__ import annotations

import math

from torch import Tensor

from posterior._utils import check_finite, check_int
from posterior.particles.feynman_kac import Move
from posterior.problem import InverseProblem
from posterior.samplers.base import register
from posterior.samplers.exact.lowrank_twist import lowrank_covariance
from posterior.samplers.exact.particle_sampler import TwistedSampler, auto_runs
from posterior.samplers.exact.tds_model import TDSModel

__all__ = ["TDS", "TDSModel"]

#: The largest event (coordinates) for which ``prior_var="covariance"`` builds its ``d x d`` twist.
COVARIANCE_MAX_DIM = 4096


@register
class TDS(TwistedSampler):
    """Twisted Diffusion Sampler (Wu et al., NeurIPS 2023), any differentiable operator.

    Converges to: as ``num_particles`` grows at fixed ``num_steps``, the posterior of the
    ``num_steps``-step reverse chain it simulates (started from the prior's exact ``p_T`` where it
    can draw it or has a density, else from ``N(0, I)``), ``p_chain(x_0) p(y | x_0) / Z``, and its
    ``log_evidence`` to ``log Z``; the chain's posterior tends to the prior's as ``num_steps``
    grows (tested against :func:`posterior.diagnostics.oracles.chain_posterior`).

    Options:
        twist_scale: multiplies ``r_t^2`` in the twisting variance ``sigma^2 + r_t^2`` (default
            ``1``; ``0``: the DPS-like twist).
        prior_var: how the twist stands in for the prior. ``"covariance"`` (default): the
            twist's covariance is ``A Sigma_t A^T + sigma^2 I`` with ``Sigma_t`` the covariance of
            ``x_0`` given ``x_t`` under a Gaussian prior with the prior's own covariance
            (``prior.covariance()``; see :mod:`posterior.samplers.exact.covariance_twist`), for
            linear operators, Gaussian noise and ``twist_var="gaussian"``; elsewhere ``"auto"``.
            Beyond :data:`COVARIANCE_MAX_DIM` coordinates (or for operators with an SVD, with
            ``"lowrank"`` at any size) ``Sigma`` is low rank plus isotropic, from 256 of the
            prior's own draws (:mod:`posterior.samplers.exact.lowrank_twist`: no ``d x d``
            matrix, ``O(n m r)`` per call), so the twist keeps the prior's correlations at any
            image size; an operator without an SVD falls back to ``"auto"`` there. ``"auto"``:
            ``V`` in ``r_t^2`` (module docstring) is the mean of the prior's per-coordinate
            variances (``prior.moments()``: exact for the Gaussian mixture, estimated once from the
            prior's own draws otherwise). A positive float or ``math.inf``: that ``V``.
        resampling: ``"systematic"`` (default), ``"stratified"``, ``"multinomial"``, ``"residual"``.
        threshold: resample when ESS ``< threshold * N`` (default ``0.5``), or ``"always"``/``"never"``.
        eta: DDIM stochasticity of the prior kernel, in ``(0, 1]`` (default ``1``: DDPM).
        kernel_var: the prior kernel's variance: ``"ddim"`` (default, DDIM(eta)'s) or
            ``"analytic"``: Analytic-DPM's optimal variance around the DDIM(eta) mean (Bao et al.
            2022; :mod:`posterior.samplers.exact.analytic_variance`), from the prior's denoiser
            error per time; ``eta = 0`` allowed. The sampler stays exact for the chain it walks.
        exact_start: weight ``x_T ~ N(0, I)`` by ``p_T / N(0, I)`` where the prior has a density.
        move: optional MCMC move after each resampling (resample-move).
        twist_var: ``"gaussian"`` (default): ``r_t^2`` from the Gaussian stand-in of the prior
            (module docstring); ``"mse"``: ``r_t^2`` is the denoiser's own mean squared error at
            ``t`` on forward-noised draws of the prior (``prior.denoiser_reference``), per
            observed coordinate through a linear operator: large where ``x0_hat`` is unreliable;
            ``"tweedie"``: the twist's covariance is ``sigma^2 I + c_t A J A^T`` with the
            denoiser's own Jacobian ``J`` at each particle (Tweedie's covariance of ``x_0`` given
            ``x_t``; :mod:`posterior.samplers.exact.tweedie_twist`), linear operators and
            Gaussian noise, ``cg_iters + 1`` extra VJPs per particle and step.
        cg_iters: conjugate-gradient iterations of the ``"tweedie"`` twist (default ``2``).
        tempering: ``None`` (default) or a fraction in ``(0, 1]``: the twist at each time is
            ``g_t^lam_t`` with ``lam_t`` the largest exponent, not below the previous one, that
            keeps this share of the conditional ESS (bisection); the last step still weighs by
            the full likelihood. Any exponent keeps the sampler exact as ``N`` grows.
        rejuvenate: Metropolis-Hastings steps on the newest state ``x_s`` of each particle after
            each resampling (default ``0``), leaving its conditional given the rest of its path
            invariant (:meth:`TDSModel.gibbs`): copies of one parent then differ. Each costs one
            network evaluation and one VJP per particle.
        runs: split the ``num_particles`` particles into this many independent particle systems
            of ``num_particles / runs`` particles each, run as one batch. ``"auto"`` (default):
            with the covariance twist, at most 32 runs of at least 4 particles
            (:func:`~posterior.samplers.exact.particle_sampler.auto_runs`: 128 particles -> 32
            runs of 4, 2000 -> 25 runs of 80); with the isotropic twist, one run
            (:meth:`auto_runs`). ``1``: one particle system. The runs are the chains of
            ``Result.to_arviz()`` (R-hat and ESS across runs; ``stats["run_samples"]`` holds
            each run's own draws); ``Result.one_per_run()`` keeps one draw of each run.
        merge: how the runs combine (:func:`~posterior.samplers.exact.particle_sampler.merge_runs`).
            ``"evidence"`` (default): each run's weighted particles count in proportion to its
            evidence estimate ``Z_r`` (the island particle filter), which converges to the chain's
            posterior as the runs grow in size or in number; where the runs' evidences spread by
            many nats the weight falls on about one run (``stats["effective_runs"]``,
            ``stats["merge_ess"]``, and a ``ParticleDegeneracyWarning``). ``"equal"``: every run
            counts ``1 / runs``, an approximation: at a fixed run size its draws keep the bias of
            one run of that size however many runs (``benchmarks/runs_merge.py``, a 1-D two-mode
            mixture: posterior mean 0.10 with 16 or 128 runs of 4 where the chain's is 0.62).

    Why the defaults (``benchmarks/README.md``, issue 17): one system of 128 particles on an MNIST
    problem collapses onto one or two ancestors in the middle steps, where the twist stops
    following ``p(y | x_t)``, and its credible intervals then miss the truth; 32 runs of 4 keep 32
    lineages and cover prior-drawn truths near the nominal rate. On the Gaussian-mixture grid the
    covariance twist in 25 runs of 80 is at the exact floor where one run of it collapses on one
    cell.
    """

    name = "tds"
    summary = "Twisted Diffusion Sampler (Wu et al. 2023): gradient-twisted SMC, nonlinear operators too"

    def __init__(
        self,
        twist_scale: float = 1.0,
        prior_var: float | str = "covariance",
        resampling: str = "systematic",
        threshold: float | str = 0.5,
        eta: float = 1.0,
        exact_start: bool = True,
        move: Move | None = None,
        twist_var: str = "gaussian",
        tempering: float | None = None,
        rejuvenate: int = 0,
        runs: int | str = "auto",
        cg_iters: int = 2,
        merge: str = "evidence",
        kernel_var: str = "ddim",
    ) -> None:
        if isinstance(rejuvenate, bool) or not isinstance(rejuvenate, int) or rejuvenate < 0:
            raise ValueError(f"rejuvenate must be an integer >= 0 (Metropolis steps), got {rejuvenate!r}")
        self.prior_covariance = prior_var in ("covariance", "lowrank")
        super().__init__(
            resampling,
            threshold,
            eta,
            exact_start,
            move,
            "auto" if self.prior_covariance else prior_var,
            runs=runs,
            merge=merge,
            kernel_var=kernel_var,
        )
        self.prior_var, self.rejuvenate = prior_var, rejuvenate
        if isinstance(twist_scale, bool) or not (float(twist_scale) >= 0 and math.isfinite(twist_scale)):
            raise ValueError(f"twist_scale must be a finite number >= 0, got {twist_scale!r}")
        if twist_var not in ("gaussian", "mse", "tweedie"):
            raise ValueError(f"twist_var must be 'gaussian', 'mse' or 'tweedie', got {twist_var!r}")
        self.cg_iters = check_int(cg_iters, "cg_iters")
        if tempering is not None and (isinstance(tempering, bool) or not 0.0 < float(tempering) <= 1.0):
            raise ValueError(f"tempering must be None or a fraction in (0, 1], got {tempering!r}")
        self.twist_scale, self.twist_var = float(twist_scale), twist_var
        self.tempering = None if tempering is None else float(tempering)

    def uses_covariance(self, problem: InverseProblem) -> bool:
        """Whether the twist on ``problem`` is the covariance twist (``prior_var="covariance"``
        where it applies)."""
        return (
            self.prior_covariance
            and self.twist_var == "gaussian"
            and problem.operator.linear
            and problem.gaussian
            and (not self.lowrank(problem) or problem.operator.has_svd)
        )

    def auto_runs(self, problem: InverseProblem, num_particles: int) -> int:
        """``runs="auto"``: :func:`auto_runs` with the covariance twist, one run with the isotropic
        one. Runs trade a bias of order one over the run's size for robustness to a collapsing
        run; measured, that pays with the covariance twist (at the exact floor on the mixture grid,
        calibrated on MNIST) and not with the isotropic one (3-5x the floor at 25 runs of 40-80 on
        some mixture and non-Gaussian-noise problems, where one run is at 1.5-2x)."""
        return auto_runs(num_particles) if self.uses_covariance(problem) else 1

    def prior_gaussian(self, problem: InverseProblem) -> tuple[Tensor | None, float]:
        """As :meth:`TwistedSampler.prior_gaussian`; ``"lowrank"`` takes ``V`` as ``"auto"`` does."""
        if self.prior_var != "lowrank":
            return super().prior_gaussian(problem)
        mean, var = problem.prior.moments()
        return mean, float(var.mean())

    def lowrank(self, problem: InverseProblem) -> bool:
        """Whether the covariance twist is the low-rank one (``"lowrank"``, or events of more
        than :data:`COVARIANCE_MAX_DIM` coordinates)."""
        return self.prior_var == "lowrank" or math.prod(problem.prior.event_shape) > COVARIANCE_MAX_DIM

    def model(self, problem: InverseProblem, pairs: list[tuple[int, int]]) -> TDSModel:
        _, V = self.prior_gaussian(problem)
        covariance = None
        if self.uses_covariance(problem) and self.lowrank(problem):
            covariance = lowrank_covariance(problem.prior)
            check_finite(covariance.lam, f"{self.name}: the prior's draws (or pass prior_var='auto')")
        elif self.uses_covariance(problem):
            covariance = problem.prior.covariance()
            what = "the prior's covariance (prior.covariance(); or pass prior_var='auto')"
            check_finite(covariance, f"{self.name}: {what}")
        return TDSModel(
            problem,
            pairs,
            self.eta,
            self.exact_start,
            self.twist_scale,
            V,
            self.twist_var,
            self.tempering,
            covariance,
            self.rejuvenate,
            self.cg_iters,
            self.name,
        )
