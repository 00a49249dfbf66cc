"""Particle marginal Metropolis-Hastings over unknown parameters (``"pmmh"``).

Andrieu, Doucet & Holenstein, "Particle Markov chain Monte Carlo methods", JRSS B 2010, section
2.4. The target is the joint posterior ``p(theta, x | y) ∝ p(theta) p_chain(x) p(y | x, theta)``
of the unknown parameters ``theta`` (:class:`~posterior.Unknown`) and of ``x``. Each chain holds
``theta``, an estimate ``Z^(theta)`` of the evidence ``p(y | theta)`` from an exact particle
sampler's run at ``theta`` (TDS by default; unbiased on the natural scale) and one draw of ``x``
from that run. A random-walk proposal ``u' = u + s * e`` in the unconstrained parametrisation
``u = T^{-1}(theta)`` (``biject_to`` of each prior's support) is accepted with probability

    min(1, p(theta') |T'(u')| Z^(theta') / (p(theta) |T'(u)| Z^(theta)))

and the chain then takes the new run's draw of ``x``. Because ``Z^`` is unbiased, the chain
leaves the exact joint posterior (of the ``num_steps``-step reverse chain, as the inner sampler's
draws) invariant at any inner particle count; more inner particles make ``log Z^`` less noisy and
the chain stick less. On a problem without unknowns the same chain is the particle independent
Metropolis-Hastings sampler of ``x`` (ibid., section 2.4.1). The proposal scale adapts to a target
acceptance during the burn-in (Robbins-Monro on its logarithm, per problem, from the chains' mean
acceptance) and is then frozen, so the
kept iterations are a time-homogeneous Markov chain.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from posterior._utils import check_fraction, check_int, check_positive, check_positive_int, progress_bar
from posterior.distributed.context import current_communicator
from posterior.parameters import Parameters
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler, register
from posterior.samplers.joint._inner import InnerRun, inner_sampler
from posterior.samplers.result import Result

__all__ = ["PMMH", "adapt_scale", "joint_result", "mh_accept", "prior_spread", "random_walk"]


def prior_spread(parameters: Parameters, generator: torch.Generator, draws: int = 4096) -> Tensor:
    """``Tensor[P]``: the standard deviation of each unknown's prior in the unconstrained space
    (from ``draws`` prior draws): the scale a random walk over ``u`` starts from."""
    if not parameters:
        return torch.zeros(0, dtype=torch.float64)
    u = parameters.to_unconstrained(parameters.sample_prior((draws,), generator))
    return u.std(0).clamp_min(1e-6)


def random_walk(
    parameters: Parameters, u: Tensor, log_scale: Tensor, spread: Tensor, generator: torch.Generator
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """A random-walk proposal ``u' = u + exp(log_scale) * spread * e`` from ``u: [B, C, P]``:
    ``(u', theta(u'), log p(theta(u')) + log |d theta / d u'|)``."""
    eps = torch.randn(u.shape, generator=generator, device=generator.device).to(u)
    u_new = u + log_scale.exp() * spread * eps
    values_new, log_p_new = parameters.log_density_unconstrained(u_new)
    return u_new, values_new, log_p_new


def mh_accept(log_alpha: Tensor, generator: torch.Generator) -> Tensor:
    """The Metropolis-Hastings decisions ``Tensor[B, C]`` (bool, on ``log_alpha``'s device) for
    the log acceptance ratios ``log_alpha: [B, C]`` (float64; ``nan`` rejects)."""
    log_alpha = log_alpha.nan_to_num(nan=-math.inf)
    log_unif = torch.rand(log_alpha.shape, generator=generator, device=generator.device).double().log()
    return log_unif.to(log_alpha.device) < log_alpha


def adapt_scale(log_scale: Tensor, i: int, rate: Tensor, target: float) -> Tensor:
    """One Robbins-Monro step (gain ``(i + 1)^-0.6``) of ``log_scale: [B, 1, 1]`` towards the
    acceptance ``target``, from the chains' mean acceptance ``rate: [B]`` at burn-in iteration ``i``."""
    return log_scale + (i + 1) ** -0.6 * (rate - target).reshape(-1, 1, 1)


@register
class PMMH(Sampler):
    """Particle marginal Metropolis-Hastings (Andrieu, Doucet & Holenstein 2010) over the
    problem's unknown parameters, on an exact particle sampler's evidence estimate.

    Converges to: as the kept iterations grow (at any ``particles`` and fixed ``num_steps``), the
    joint posterior ``p(theta) p_chain(x) p(y | x, theta) / p(y)`` of the unknowns and of the
    ``num_steps``-step reverse chain's ``x`` (the inner sampler's target at each ``theta``).
    ``num_particles`` is the number of returned draws: ``chains = ceil(num_particles /
    (iterations - burn_in))`` chains per problem, run as one batch, each keeping its state after
    the burn-in. An iteration costs one inner run of ``particles`` particles per chain.

    Options:
        particles: particles of each inner run (default ``32``).
        iterations: Metropolis-Hastings iterations per chain (default ``60``).
        burn_in: leading iterations not kept, in which the proposal scale adapts (default ``30``;
            on the mixture tests 30 iterations bring chains started from prior draws to the
            posterior).
        inner: the exact particle sampler whose evidence the chain uses (default ``"tds"``; also
            ``"smc"``, ``"mcgdiff"``).
        inner_options: its options, a dict (default: its defaults, except ``threshold="always"``:
            resampling at every step, so that the evidence estimate is unbiased; an ESS-triggered
            schedule depends on the particles and gives a consistent but biased one, Del Moral,
            Doucet & Jasra 2012).
        target_acceptance: the acceptance rate the burn-in adapts the scale to (default ``0.25``).
        scale: the initial proposal scale, a multiple of each unknown's prior spread in the
            unconstrained space (default ``0.5``).

    Results: ``samples: [B, num_particles, *event]`` chain by chain (``D = iterations -
    burn_in``); ``parameters: {name: [B, num_particles]}``, the ``theta`` of each draw;
    ``acceptance: [B, iterations]`` the chains' mean acceptance per iteration;
    ``stats["chain"]: [B, chains, D, *event]``, ``stats["chain.<name>"]: [B, chains, D]`` (the
    ArviZ chains), ``stats["log_evidence_chain"]: [B, chains, D]`` the chains' current
    ``log Z^``, ``stats["scale"]: [B]`` the frozen proposal scale (times the prior spread).
    """

    name = "pmmh"
    exact = True
    joint = True
    summary = "particle marginal Metropolis-Hastings over unknown noise / operator parameters (TDS evidence)"
    particle_stats = ("chain",)

    def __init__(
        self,
        particles: int = 32,
        iterations: int = 60,
        burn_in: int = 30,
        inner: str = "tds",
        inner_options: dict[str, Any] | None = None,
        target_acceptance: float = 0.25,
        scale: float = 0.5,
    ) -> None:
        self.particles = check_positive_int(particles, "particles")
        self.iterations = check_positive_int(iterations, "iterations")
        self.burn_in = check_int(burn_in, "burn_in")
        if not 0 <= self.burn_in < self.iterations:
            raise ValueError(f"burn_in must be in [0, iterations) = [0, {self.iterations}), got {burn_in!r}")
        self.inner, self.inner_options = inner, inner_options
        self.sampler = inner_sampler(inner, inner_options, "pmmh")
        self.target_acceptance = check_fraction(target_acceptance, "target_acceptance", open_interval=True)
        self.scale = float(check_positive(scale, "scale"))

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        if current_communicator().distributed:
            raise ValueError("'pmmh' splits over ranks by problems only: use distributed='problems'")
        params = Parameters(problem)
        self.sampler.time_grid = self.time_grid
        D = self.iterations - self.burn_in
        C, B = -(-num_particles // D), problem.batch_size
        evidence = InnerRun(self.sampler, params, problem, self.name)
        spread = prior_spread(params, generator)  # [P]
        log_scale = torch.full((B, 1, 1), math.log(self.scale), dtype=torch.float64)

        values = params.sample_prior((B, C), generator)
        u = params.to_unconstrained(values, (B, C))  # [B, C, P]
        _, log_p = params.log_density_unconstrained(u)
        log_z, x = evidence(values, (B, C), self.particles, num_steps, generator)
        kept: dict[str, list[Tensor]] = {"x": [], "log_z": [], **{n: [] for n in params.names}}
        acceptance = []
        for i in progress_bar(range(self.iterations), enabled=progress, desc=self.name):
            u_new, values_new, log_p_new = random_walk(params, u, log_scale, spread, generator)
            log_z_new, x_new = evidence(values_new, (B, C), self.particles, num_steps, generator)
            acc = mh_accept(log_z_new + log_p_new - log_z - log_p, generator).to(u.device)  # [B, C]
            u = torch.where(acc[..., None], u_new, u)
            log_p = torch.where(acc, log_p_new, log_p)
            log_z = torch.where(acc, log_z_new, log_z)
            x = torch.where(acc.to(x.device).reshape(B, C, *[1] * (x.dim() - 2)), x_new, x)
            rate = acc.double().mean(1)  # [B]
            acceptance.append(rate)
            if i < self.burn_in:
                log_scale = adapt_scale(log_scale, i, rate, self.target_acceptance)
            else:
                values_now, _ = params.from_unconstrained(u)
                for n in params.names:
                    kept[n].append(values_now[n])
                kept["x"].append(x)
                kept["log_z"].append(log_z)
        result = joint_result(self.name, params, kept, num_particles)
        result.acceptance = torch.stack(acceptance, 1).to(x.dtype)  # [B, iterations]
        result.stats["scale"] = log_scale.reshape(B).exp()
        return result


def joint_result(name: str, params: Parameters, kept: dict[str, list[Tensor]], num_particles: int) -> Result:
    """A batched :class:`Result` from the kept states of ``C`` chains: ``kept["x"]`` a list of
    ``D`` tensors ``[B, C, *event]``, ``kept[name]`` of ``[B, C]`` per unknown, ``kept["log_z"]``
    (optional) of ``[B, C]``. Draws chain by chain, the first ``num_particles`` kept."""
    chain = torch.stack(kept["x"], 2)  # [B, C, D, *event]
    B, C, D = chain.shape[:3]
    dt = chain.dtype
    stats = {"chain": chain}
    parameters = {}
    for n in params.names:
        trace = torch.stack(kept[n], 2).to(dt)  # [B, C, D]
        stats[f"chain.{n}"] = trace
        parameters[n] = trace.reshape(B, C * D)[:, :num_particles]
    if kept.get("log_z"):
        stats["log_evidence_chain"] = torch.stack(kept["log_z"], 2).to(dt)
    return Result(
        samples=chain.reshape(B, C * D, *chain.shape[3:])[:, :num_particles],
        method=name,
        stats=stats,
        parameters=parameters,
    )
