"""Particle Gibbs with ancestor sampling on TDS's twisted proposals (``"pgas"``).

Andrieu, Doucet & Holenstein (JRSS B 2010), Lindsten, Jordan & Schön (JMLR 2014). Each chain holds
one path ``x_{T:0}`` of the ``K``-step reverse chain and updates it by a conditional SMC sweep
(:func:`~posterior.particles.conditional_smc.conditional_smc`) with TDS's Feynman-Kac model: the
reference path competes with ``particles - 1`` fresh TDS particles, and the sweep draws the next
path from the result. Every sweep leaves the chain's posterior ``p_chain(x_{T:0}) p(y | x_0) / Z``
invariant whatever the particle count, so the draws converge to it as the sweeps grow (at a fixed
number of particles and steps). A chain starts from the traced path of a plain TDS run of
``particles`` particles; every sweep resamples only where the ESS falls below ``threshold`` times
the particles (multinomially), which keeps the fresh particles' pasts apart from the reference's.

Where the twisted proposals are far from ``p(y | x_t)`` the fresh particles rarely outweigh the
reference, and ancestor sampling rarely joins its later states to another past (the reverse
kernels are narrow): a sweep then renews only the last steps of the path. ``stats["moved"]``
(the share of chains whose ``x_0`` moved, per sweep) and ``stats["renewed"]`` (the share of each
path's states that changed) show how far each sweep went.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior._utils import check_bool, check_int, check_positive_int, progress_bar
from posterior.distributed.context import current_communicator
from posterior.particles.conditional_smc import conditional_smc
from posterior.particles.degeneracy import warn_if_failed
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler, register
from posterior.samplers.exact.tds import TDS
from posterior.samplers.result import Result

__all__ = ["ParticleGibbs"]


@register
class ParticleGibbs(Sampler):
    """Particle Gibbs with ancestor sampling (Lindsten et al., 2014) on TDS's twisted proposals.

    Converges to: as ``sweeps`` grows at fixed ``particles`` (``>= 2``) and ``num_steps``, the
    posterior of the ``num_steps``-step reverse chain (as TDS's, tested against
    :func:`posterior.diagnostics.oracles.chain_posterior`). ``num_particles`` is the number of
    returned draws: ``chains = ceil(num_particles / (sweeps - burn_in))`` chains per problem, each
    keeping the ``x_0`` of its paths after the burn-in (the last chain's surplus draws stay out of
    ``samples``). A sweep costs ``particles`` TDS particles
    (one network evaluation and one VJP per particle and step); the start costs one more sweep.

    Options:
        particles: particles per conditional SMC sweep, the reference included (default ``16``).
        sweeps: conditional SMC sweeps per chain (default ``8``).
        burn_in: leading sweeps whose paths are not kept (default ``4``). With the defaults
            (measured on the Gaussian-mixture grid, dims 8 and 80, 100 steps, 2000 draws) the
            draws are at the exact floor's sliced W1 on five of six cells; with 4 particles and 4
            sweeps they are 5-20x off it.
        ancestor_sampling: redraw the reference's ancestor at each resampling (default ``True``).
        threshold: resample when the ESS falls below ``threshold * particles`` (default ``0.5``;
            ``1``: at every step).
        twist_scale, prior_var, twist_var, cg_iters, eta, exact_start: TDS's twist and kernel
            (documented on :class:`~posterior.samplers.exact.tds.TDS`; tempering and rejuvenation
            do not apply).

    Results: ``samples: [B, num_particles, *event]`` chain by chain (``D = sweeps - burn_in``);
    ``stats["chain"]: [B, chains, D, *event]`` (the ArviZ chains); ``stats["moved"]: [B, D]`` the
    share of chains whose ``x_0`` changed at each kept sweep; ``stats["renewed"]: [B, chains, D]`` the
    share of each path's ``num_steps + 1`` states that changed; ``ess: [B, num_steps]`` the
    smallest ESS over the chains and kept sweeps at each step.
    """

    name = "pgas"
    exact = True
    summary = "particle Gibbs with ancestor sampling on TDS proposals: exact MCMC at any particle count"
    particle_stats = ("chain",)

    def __init__(
        self,
        particles: int = 16,
        sweeps: int = 8,
        burn_in: int = 4,
        ancestor_sampling: bool = True,
        threshold: float = 0.5,
        twist_scale: float = 1.0,
        prior_var: float | str = "auto",
        twist_var: str = "gaussian",
        cg_iters: int = 2,
        eta: float = 1.0,
        exact_start: bool = True,
    ) -> None:
        # at least 2: one is the reference path
        self.particles = check_int(particles, "particles", minimum=2)
        self.sweeps = check_positive_int(sweeps, "sweeps")
        self.burn_in = check_int(burn_in, "burn_in")
        if not 0 <= self.burn_in < self.sweeps:
            raise ValueError(f"burn_in must be in [0, sweeps) = [0, {self.sweeps}), got {burn_in!r}")
        self.ancestor_sampling = check_bool(ancestor_sampling, "ancestor_sampling")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"threshold must be a fraction in (0, 1], got {threshold!r}")
        self.threshold = float(threshold)
        self.tds = TDS(
            twist_scale=twist_scale,
            prior_var=prior_var,
            twist_var=twist_var,
            cg_iters=cg_iters,
            eta=eta,
            exact_start=exact_start,
        )
        self.tds.name = self.name  # its errors name the method the user called
        # the values TDS validated (and converted)
        self.twist_scale, self.prior_var, self.twist_var = self.tds.twist_scale, prior_var, self.tds.twist_var
        self.cg_iters, self.eta, self.exact_start = self.tds.cg_iters, self.tds.eta, self.tds.exact_start

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        if current_communicator().distributed:  # a split of the draws would split chains unevenly
            raise ValueError("'pgas' splits over ranks by problems only: use distributed='problems'")
        D = self.sweeps - self.burn_in
        C, B, N = -(-num_particles // D), problem.batch_size, self.particles
        self.tds.time_grid = self.time_grid
        pairs = self.tds.time_pairs(problem, num_steps)
        model = self.tds.model(problem.repeat(C), pairs)  # rows b * C + c: chain c of problem b
        run = {"threshold": self.threshold, "name": self.name}
        start = conditional_smc(model, pairs, B * C, N, generator, **run)
        path, failed = _restart_failed_chains(start.path, start.failed, B, C)
        draws, renewed, moved, ess = [], [], [], []
        for i in progress_bar(range(self.sweeps), enabled=progress, desc=self.name):
            sweep = conditional_smc(model, pairs, B * C, N, generator, path, self.ancestor_sampling, **run)
            path = sweep.path
            if i >= self.burn_in:
                draws.append(path[:, -1].reshape(B, C, *path.shape[2:]))
                changed = sweep.changed.to(path.dtype).reshape(B, C, -1)
                renewed.append(changed.mean(-1))
                moved.append(changed[..., -1].mean(1))
                ess.append(sweep.ess.reshape(B, C, -1).amin(1))
        chain = torch.stack(draws, 2)  # [B, C, D, *event]
        stats = {"chain": chain, "moved": torch.stack(moved, 1), "renewed": torch.stack(renewed, 2)}
        if failed.any():  # no chain of these problems found a path of positive likelihood
            chain = chain.masked_fill(failed.view(B, *([1] * (chain.dim() - 1))), math.nan)
            stats["chain"], stats["failed"] = chain, failed
            warn_if_failed(failed, self.name)
        return Result(
            samples=chain.reshape(B, C * D, *chain.shape[3:])[:, :num_particles],
            method=self.name,
            ess=torch.stack(ess, 1).amin(1),
            stats=stats,
        )


def _restart_failed_chains(path: Tensor, failed: Tensor | None, B: int, C: int) -> tuple[Tensor, Tensor]:
    """The chains' start paths ``[B * C, K + 1, ...]`` (rows ``b * C + c``) with every chain whose
    start run failed (every weight zero) started from the path of a chain of the same problem that
    did not (a start of positive density: the chain stays exact), and the problems ``[B]`` where
    none did."""
    if failed is None or not failed.any():
        return path, torch.zeros(B, dtype=torch.bool, device=path.device)
    bad = failed.reshape(B, C)
    donor = torch.arange(B, device=path.device) * C + (~bad).to(torch.int8).argmax(1)  # [B]
    rows = bad.reshape(-1)
    path = torch.where(rows.view(-1, *([1] * (path.dim() - 1))), path[donor.repeat_interleave(C)], path)
    return path, bad.all(1)
