"""Particle Gibbs over unknown parameters and ``x`` (``"pgibbs"``).

Andrieu, Doucet & Holenstein, "Particle Markov chain Monte Carlo methods", JRSS B 2010, section
2.4.3 (particle Gibbs for ``p(theta, x | y)``), with ancestor sampling (Lindsten, Jordan & Schön,
JMLR 2014). The target is ``p(theta) p_chain(x_{T:0}) p(y | x_0, theta)``: the unknowns and the
path of the ``num_steps``-step reverse chain. Each sweep alternates

* ``x_{T:0} | theta, y``: one conditional SMC sweep
  (:func:`~posterior.particles.conditional_smc.conditional_smc`) with TDS's Feynman-Kac model on
  the problem at ``theta``, the chain's path as the reference (as ``"pgas"`` does at known
  parameters);
* ``theta | x_0, y``, whose density is ``p(theta) p(y | x_0, theta)`` (the prior chain does not
  depend on ``theta``): ``theta_steps`` random-walk Metropolis-Hastings steps in the unconstrained
  parametrisation (with the log-Jacobian), each costing one likelihood evaluation and no network
  call; then an exact draw of each unknown whose noise model gives its conditional in closed form
  (:meth:`~posterior.noise.NoiseModel.conjugate`: a Gaussian variance under an ``InverseGamma(a,
  b)`` prior, ``variance | x_0, y ~ InverseGamma(a + m / 2, b + ||y - A x_0||^2 / 2)``). Where
  every unknown is conjugate the Metropolis-Hastings steps are skipped (acceptance 1).

Each half leaves the joint target invariant, so the chain does at any particle count (on a
problem without unknowns it is ``"pgas"``'s chain). Where
``x_0`` pins ``theta`` down (many observations of a noise level) the two halves are strongly
coupled and the chain moves in small steps; PMMH (``"pmmh"``) integrates ``x`` out instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior._utils import (
    check_bool,
    check_fraction,
    check_int,
    check_positive,
    check_positive_int,
    progress_bar,
)
from posterior.distributed.context import current_communicator
from posterior.noise.base import with_generator
from posterior.parameters import Parameters
from posterior.particles.conditional_smc import conditional_smc
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler, register
from posterior.samplers.exact.tds import TDS
from posterior.samplers.joint.pmmh import adapt_scale, joint_result, mh_accept, prior_spread, random_walk
from posterior.samplers.result import Result

__all__ = ["ParticleGibbsTheta"]


@register
class ParticleGibbsTheta(Sampler):
    """Particle Gibbs (Andrieu, Doucet & Holenstein 2010) over unknown parameters and ``x``:
    conditional SMC sweeps on TDS's proposals for ``x | theta, y``, Metropolis-Hastings for
    ``theta | x, y`` (an exact draw for a conjugate unknown, e.g.
    ``ps.noise.Gaussian(variance=ps.Unknown(dist.InverseGamma(a, b)))``).

    Converges to: as ``sweeps`` grows (at any ``particles >= 2`` and fixed ``num_steps``), the
    joint posterior ``p(theta) p_chain(x) p(y | x, theta) / p(y)`` of the unknowns and of the
    ``num_steps``-step reverse chain's ``x`` (as ``"pmmh"``). ``num_particles`` is the number of
    returned draws: ``chains = ceil(num_particles / (sweeps - burn_in))`` chains per problem,
    each keeping its state after the burn-in. A sweep costs ``particles`` TDS particles per chain.

    Options:
        particles: particles per conditional SMC sweep, the reference included (default ``16``).
            Measured on the mixture tests (16 dimensions, 30 steps): with 16 a sweep renews ``x``
            too rarely for 30 sweeps to mix (``x_0`` pins the noise level down, so ``std`` stays
            too narrow), with 64 the draws match the grid quadrature.
        sweeps: Gibbs sweeps per chain (default ``40``).
        burn_in: leading sweeps not kept, in which the ``theta`` proposal scale adapts (default
            ``20``).
        theta_steps: Metropolis-Hastings steps on ``theta`` per sweep (default ``10``).
        target_acceptance: the acceptance rate of the ``theta`` steps the burn-in adapts the scale
            to (default ``0.3``).
        scale: the initial ``theta`` proposal scale, a multiple of each unknown's prior spread in
            the unconstrained space (default ``0.5``).
        ancestor_sampling: redraw the reference's ancestor at each resampling (default ``True``).
        threshold: resample when the ESS falls below ``threshold * particles`` (default ``0.5``).
        twist_scale, prior_var, twist_var, eta, exact_start: TDS's twist and kernel (documented on
            :class:`~posterior.samplers.exact.tds.TDS`).

    Results: as ``"pmmh"``'s: ``samples``, ``parameters: {name: [B, num_particles]}``,
    ``stats["theta_acceptance"]: [B, sweeps]`` (the ``theta`` steps' mean acceptance per sweep;
    1 where every unknown is drawn from its conjugate conditional),
    ``stats["chain"]``, ``stats["chain.<name>"]``, ``stats["scale"]``; ``ess: [B, num_steps]``
    the smallest ESS of the kept sweeps at each step.
    """

    name = "pgibbs"
    exact = True
    joint = True
    summary = "particle Gibbs over unknown parameters and x: conditional SMC on TDS, MH on the parameters"
    particle_stats = ("chain",)

    def __init__(
        self,
        particles: int = 16,
        sweeps: int = 40,
        burn_in: int = 20,
        theta_steps: int = 10,
        target_acceptance: float = 0.3,
        scale: float = 0.5,
        ancestor_sampling: bool = True,
        threshold: float = 0.5,
        twist_scale: float = 1.0,
        prior_var: float | str = "auto",
        twist_var: str = "gaussian",
        eta: float = 1.0,
        exact_start: bool = True,
    ) -> None:
        self.particles = check_int(particles, "particles")
        if self.particles < 2:
            raise ValueError(f"particles must be at least 2 (one is the reference path), got {particles!r}")
        self.sweeps = check_positive_int(sweeps, "sweeps")
        self.burn_in = check_int(burn_in, "burn_in")
        if not 0 <= self.burn_in < self.sweeps:
            raise ValueError(f"burn_in must be in [0, sweeps) = [0, {self.sweeps}), got {burn_in!r}")
        self.theta_steps = check_positive_int(theta_steps, "theta_steps")
        self.target_acceptance = check_fraction(target_acceptance, "target_acceptance", open_interval=True)
        self.scale = float(check_positive(scale, "scale"))
        self.ancestor_sampling = check_bool(ancestor_sampling, "ancestor_sampling")
        self.threshold = check_fraction(threshold, "threshold")
        if self.threshold == 0:
            raise ValueError(f"threshold must be a fraction in (0, 1], got {threshold!r}")
        twist = {"twist_scale": twist_scale, "prior_var": prior_var, "twist_var": twist_var}
        self.tds = TDS(**twist, eta=eta, exact_start=exact_start)
        self.twist_scale, self.prior_var, self.twist_var = twist_scale, prior_var, twist_var
        self.eta, self.exact_start = eta, exact_start

    def _sweep(
        self,
        problem: InverseProblem,
        params: Parameters,
        values: dict[str, Tensor],
        pairs: list[tuple[int, int]],
        path: Tensor | None,
        chains: int,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        """One conditional SMC sweep of each problem's ``chains`` chains at their ``theta`` (a
        plain SMC without ``path``): the new paths ``[B * C, K + 1, *event]`` and the ESS
        ``[B * C, K]``."""
        paths, ess, row = [], [], 0
        # nothing unknown: the chains of "pgas"
        subs = params.instantiate(problem, values) if params else [problem.repeat(chains)]
        for sub in subs:
            rows = sub.batch_size
            model = self.tds.model(sub, pairs)
            ref = None if path is None else path[row : row + rows]
            out = conditional_smc(
                model,
                pairs,
                rows,
                self.particles,
                generator,
                ref,
                self.ancestor_sampling,
                threshold=self.threshold,
                name=self.name,
            )
            paths.append(out.path)
            ess.append(out.ess)
            row += rows
        return torch.cat(paths), torch.cat(ess)

    @staticmethod
    def _log_likelihood(
        problem: InverseProblem, params: Parameters, values: dict[str, Tensor], x0: Tensor
    ) -> Tensor:
        """``log p(y | x_0, theta)``: ``Tensor[B, C]`` (float64, CPU) for ``x0: [B * C, *event]``."""
        out, row = [], 0
        for sub in params.instantiate(problem, values):
            rows = sub.batch_size
            out.append(sub.log_likelihood(x0[row : row + rows, None])[:, 0].double().cpu())
            row += rows
        B, C = values[params.names[0]].shape
        return torch.cat(out).reshape(B, C)

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        if current_communicator().distributed:
            raise ValueError("'pgibbs' splits over ranks by problems only: use distributed='problems'")
        params = Parameters(problem)
        problem.require_noise(self.name)
        D = self.sweeps - self.burn_in
        C, B = -(-num_particles // D), problem.batch_size
        self.tds.time_grid = self.time_grid
        pairs = self.tds.time_pairs(problem, num_steps)
        spread = prior_spread(params, generator)
        log_scale = torch.full((B, 1, 1), math.log(self.scale), dtype=torch.float64)

        values = params.sample_prior((B, C), generator)
        u = params.to_unconstrained(values)  # [B, C, P]
        y = problem.y_batch
        conjugate = [  # the unknowns whose noise model has their exact conditional
            e
            for e in params.entries
            if e.where == "noise" and problem.noise.conjugate(e.key, e.unknown.prior, y, y) is not None
        ]
        path, _ = self._sweep(problem, params, values, pairs, None, C, generator)
        kept: dict[str, list[Tensor]] = {"x": [], **{n: [] for n in params.names}}
        acceptance, ess_kept = [], []
        for i in progress_bar(range(self.sweeps), enabled=progress, desc=self.name):
            path, ess = self._sweep(problem, params, values, pairs, path, C, generator)
            x0 = path[:, -1]
            rate = torch.full((B,), math.nan, dtype=torch.float64)
            if len(conjugate) < params.size:
                u, rate = self._theta_steps(problem, params, u, x0, spread, log_scale, generator)
            elif params:
                rate = torch.ones(B, dtype=torch.float64)  # exact Gibbs draws only
            values, _ = params.from_unconstrained(u)
            if conjugate:
                values = self._conjugate_draws(problem, params, conjugate, values, x0, generator)
                u = params.to_unconstrained(values)
            acceptance.append(rate)
            if i < self.burn_in and len(conjugate) < params.size:
                log_scale = adapt_scale(log_scale, i, rate, self.target_acceptance)
            elif i >= self.burn_in:
                for n in params.names:
                    kept[n].append(values[n])
                kept["x"].append(x0.reshape(B, C, *x0.shape[1:]))
                ess_kept.append(ess.reshape(B, C, -1).amin(1))
        result = joint_result(self.name, params, kept, num_particles)
        result.stats["theta_acceptance"] = torch.stack(acceptance, 1).to(path.dtype)
        result.ess = torch.stack(ess_kept, 1).amin(1)
        result.stats["scale"] = log_scale.reshape(B).exp()
        return result

    @staticmethod
    def _conjugate_draws(
        problem: InverseProblem,
        params: Parameters,
        conjugate: list,
        values: dict[str, Tensor],
        x0: Tensor,
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        """``values`` (``{name: [B, C]}``) with each conjugate unknown redrawn from its exact
        conditional ``p(theta | x_0, y, the other unknowns)`` (the noise model's
        :meth:`~posterior.noise.NoiseModel.conjugate`, e.g. ``InverseGamma(a + m / 2, b +
        ||y - A x_0||^2 / 2)`` for a Gaussian variance), for ``x0: [B * C, *event]``: a Gibbs
        step, accepted always."""
        B, C = values[params.names[0]].shape
        for e in conjugate:
            draws, row = [], 0
            for sub in params.instantiate(problem, values):
                rows = sub.batch_size
                mean = sub.forward(x0[row : row + rows, None])[:, 0]
                cond = sub.noise.conjugate(e.key, e.unknown.prior, sub.y_batch, mean)
                draws.append(with_generator(generator, mean.device, cond.sample).double().cpu())
                row += rows
            values = {**values, e.name: torch.cat(draws).reshape(B, C)}
        return values

    def _theta_steps(
        self,
        problem: InverseProblem,
        params: Parameters,
        u: Tensor,
        x0: Tensor,
        spread: Tensor,
        log_scale: Tensor,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        """``theta_steps`` random-walk MH steps on ``u: [B, C, P]`` targeting
        ``p(theta(u)) |theta'(u)| p(y | x0, theta(u))``: the new ``u`` and the mean acceptance
        ``[B]``."""
        B = u.shape[0]
        values, log_p = params.log_density_unconstrained(u)
        log_l = self._log_likelihood(problem, params, values, x0)
        rate = torch.zeros(B, dtype=torch.float64)
        for _ in range(self.theta_steps):
            u_new, values_new, log_p_new = random_walk(params, u, log_scale, spread, generator)
            log_l_new = self._log_likelihood(problem, params, values_new, x0)
            acc = mh_accept(log_l_new + log_p_new - log_l - log_p, generator).to(u.device)
            u = torch.where(acc[..., None], u_new, u)
            log_p, log_l = torch.where(acc, log_p_new, log_p), torch.where(acc, log_l_new, log_l)
            rate = rate + acc.double().mean(1) / self.theta_steps
        return u, rate
