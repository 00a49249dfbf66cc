"""TDS's Feynman-Kac model: the twisted proposal, its weights and the conditional-SMC hooks.

The algorithm, the twist and the choice of ``r_t`` are described in
:mod:`posterior.samplers.exact.tds`; this module holds the per-step computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from posterior.distributed.context import current_communicator
from posterior.particles.feynman_kac import Extras
from posterior.particles.tempering import temper_exponent
from posterior.priors.base import Denoised
from posterior.problem import InverseProblem
from posterior.samplers.exact.covariance_twist import CovarianceTwist
from posterior.samplers.exact.diffusion_model import DiffusionModel
from posterior.samplers.exact.lowrank_twist import LowRankCovariance, LowRankTwist
from posterior.samplers.exact.tweedie_twist import tweedie_twist
from posterior.schedule import CLEAN

if TYPE_CHECKING:
    from posterior.noise import NoiseModel
    from posterior.operators import Operator

__all__ = ["TDSModel"]

#: Fixed draws behind the moment-matched twist of nonlinear operators.
MOMENT_DRAWS = 16
#: The autoregressive coefficient of the rejuvenation proposal (:meth:`TDSModel.gibbs`).
RHO = 0.5


class TDSModel(DiffusionModel):
    """TDS's model. Per-particle extras: the twist's value ``log_twist``, its gradient ``grad``
    and the predictions ``eps``, ``x0`` at the particle, and the twist's exponent ``lam`` (``1``
    without tempering; one value per problem, repeated over its particles). A nonlinear
    operator's fixed moment-matching directions are drawn in :meth:`init`, a constant of the run."""

    name = "tds"

    def __init__(
        self,
        problem: InverseProblem,
        pairs: list[tuple[int, int]],
        eta: float,
        exact_start: bool,
        scale: float,
        prior_var: float,
        twist_var: str = "gaussian",
        tempering: float | None = None,
        covariance: Tensor | LowRankCovariance | None = None,
        rejuvenate: int = 0,
        cg_iters: int = 2,
        name: str = "tds",
    ) -> None:
        super().__init__(problem, pairs, eta, exact_start)
        self.name = name  # the method its errors name ("pgas" runs this model too)
        self.rejuvenate, self.cg_iters = rejuvenate, cg_iters
        if twist_var == "tweedie":
            problem.require_linear(f"{name} with twist_var='tweedie'")
            if not problem.gaussian:
                raise ValueError(f"{name}: twist_var='tweedie' needs Gaussian noise")
        self.prior_var = prior_var
        problem.require_noise(name)
        problem.require_differentiable(name)
        self.scale, self.twist_var, self.tempering = scale, twist_var, tempering
        self.cov_twist = None
        if covariance is not None:  # TDS.model passes it where it applies
            op = problem.require_linear(name)
            twist = LowRankTwist if isinstance(covariance, LowRankCovariance) else CovarianceTwist
            self.cov_twist = twist(op, covariance, self.event, self.prior.schedule, scale)

    def r2(self, t: int) -> Tensor | float:
        """``r_t^2`` (before ``twist_scale``): a float, or ``Tensor[m]`` per observed coordinate
        with ``twist_var="mse"`` on a linear operator."""
        if self.twist_var == "mse":
            # the denoiser's own squared error on forward-noised draws of the prior, seen
            # through the operator (per observed coordinate), or in x-space for a nonlinear one
            x0, x0_hat = self.prior.denoiser_reference(t)
            if not self.problem.operator.linear:
                return float((x0_hat - x0).pow(2).mean())
            op = self.problem.operator
            return (op.A(x0_hat) - op.A(x0)).reshape(x0.shape[0], -1).pow(2).mean(0)
        abar = self.prior.schedule.alpha_bar(t).item()
        V = self.prior_var
        return (1 - abar) / abar if V == math.inf else V * (1 - abar) / (1 - abar + abar * V)

    def twist(self, x: Tensor, t: int) -> dict[str, Tensor]:
        """``log p~_t(y | x_t)``, its gradient and the predictions at ``x: [B, N, *event]``."""
        B, N = x.shape[:2]
        if self.twist_var == "tweedie":
            d, value, grad = tweedie_twist(self.problem, self.flat(x), t, N, self.cg_iters, self.scale)
            return self._extras(d, value, grad, B, N)
        r2 = self.r2(t)
        if isinstance(r2, Tensor):  # per observed entry ("mse" on a linear operator)
            extra: float | Tensor = self.scale * r2.to(x).reshape(self.problem.obs_shape)
        else:  # Gaussian noise: N(y; A(x0_hat), (sigma^2 + extra) I)
            extra = self.scale * r2
        noise_rows = self.problem.noise.select(torch.arange(B, device=x.device).repeat_interleave(N))
        y_rows = self.problem.y_batch.repeat_interleave(N, 0)  # [B * N, *obs]
        op = self.problem.operator

        def log_twist(d: Denoised, _x: Tensor, rows: slice) -> Tensor:
            return noise_rows.select(rows).twist_log_prob(y_rows[rows], op.A(d.x0), extra)

        if self.cov_twist is not None:
            cov_twist = self.cov_twist
            var_rows = self.problem.sigma.to(x).pow(2).repeat_interleave(N)  # [B * N]

            def log_twist(d: Denoised, _x: Tensor, rows: slice) -> Tensor:
                resid = (y_rows[rows] - op.A(d.x0)).flatten(1)
                return cov_twist.log_prob(t, resid, var_rows[rows])

        elif not op.linear:
            log_twist = self._moment_matched(float(r2), y_rows, noise_rows, op)

        d, value, grad = self.prior.denoise_with_grad(self.flat(x), t, log_twist)
        return self._extras(d, value, grad, B, N)

    def _extras(self, d: Denoised, value: Tensor, grad: Tensor, B: int, N: int) -> dict[str, Tensor]:
        """The per-particle extras from flat ``[B * N, ...]`` predictions, twist and gradient."""
        return {
            "log_twist": value.reshape(B, N),
            "grad": self.batched(grad, B),
            "eps": self.batched(d.eps, B),
            "x0": self.batched(d.x0, B),
        }

    def exponent(self, log_w: Tensor | None, base: Tensor, log_g: Tensor, low: Tensor) -> Tensor:
        """The twist's exponent ``lam_s: [B]`` for the potential ``base + lam_s * log_g``: ``1``
        without tempering, else the largest in ``[low, 1]`` keeping the conditional ESS at the
        ``tempering`` fraction of the particle system with normalised weights ``log_w`` (uniform
        when ``None``; a twist ``g^lam`` is still a positive twist, so every target stays valid;
        see :mod:`posterior.particles.tempering`)."""
        if self.tempering is None:
            return torch.ones_like(low)
        comm = current_communicator()
        if log_w is None:  # uniform weights at the start
            log_w = torch.full_like(log_g, -math.log(comm.sum(torch.ones_like(log_g))[0].item()))
        return temper_exponent(log_w, base, log_g, low, self.tempering, comm)

    def _moment_matched(self, r2: float, y_rows: Tensor, noise_rows: NoiseModel, op: Operator) -> Callable:
        """The twist for a nonlinear operator: ``N(y; E A(x_0), sigma^2 + Var A(x_0))`` with the
        moments of ``A(x_0)`` over ``x_0 ~ N(x0_hat, scale r_t^2 I)``, estimated with ``M`` fixed
        standard normal draws ``xi`` (common to all particles and steps, so the twist stays a
        deterministic function of ``x_t``). It sees the curvature that ``A(x0_hat)`` misses
        (``E[x^2] = x0_hat^2 + r^2``). Other noise models: ``noise.twist_log_prob`` at the same
        moments."""
        xi, M = self.xi, self.xi.shape[0]
        r = (self.scale * r2) ** 0.5
        obs = self.problem.obs_shape

        def log_twist(d: Denoised, _x: Tensor, rows: slice) -> Tensor:
            n = d.x0.shape[0]
            pts = (d.x0.unsqueeze(1) + r * xi.unsqueeze(0)).reshape(n * M, *xi.shape[1:])
            out = op.A(pts).reshape(n, M, *obs)
            mean, var = out.mean(1), out.var(1)  # [n, *obs]
            return noise_rows.select(rows).twist_log_prob(y_rows[rows], mean, var)

        return log_twist

    def init(
        self, B: int, N: int, generator: torch.Generator, shared: torch.Generator
    ) -> tuple[Tensor, Extras, Tensor | None]:
        if not self.problem.operator.linear:  # common to all particles: the same on every rank
            shape = (MOMENT_DRAWS, *self.event)
            self.xi = torch.randn(shape, generator=shared, device=self.prior.device, dtype=self.prior.dtype)
        x, _ = self.start(B, N, self.pairs[0][0], generator)
        if self.tempering is None:
            return x, *self.start_at(x)
        extras, log_ratio = self._start_terms(x)
        log_g = extras["log_twist"]
        base = torch.zeros_like(log_g) if log_ratio is None else log_ratio
        lam = self.exponent(None, base, log_g, log_g.new_zeros(B))
        extras["lam"] = lam[:, None].expand_as(log_g).contiguous()
        return x, extras, base + lam[:, None] * log_g

    def proposal(self, t: int, s: int, x: Tensor, extras: Extras) -> tuple[Tensor, Tensor, float]:
        """The twisted proposal's mean ``[B, N, *event]`` (the prior kernel's mean shifted by
        ``v lam grad log g_t``), the prior kernel's mean and their common variance ``v`` for the
        step ``t -> s``."""
        c, lam_t = extras, extras["lam"]  # the current twist is g_t^lam_t
        mean, v = self.kernel(Denoised(c["eps"], c["x0"]), t, s, like=x)
        if v == 0:
            return mean, mean, v
        return mean + v * lam_t.reshape(*lam_t.shape, *([1] * (x.dim() - 2))) * c["grad"], mean, v

    def step(
        self, t: int, s: int, x: Tensor, extras: Extras, log_weights: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Extras, Tensor]:
        shifted, mean, v = self.proposal(t, s, x, extras)
        x_s = shifted + v**0.5 * self.noise(x, generator) if v > 0 else mean
        return x_s, *self._potential(t, s, extras, shifted, mean, v, x_s, log_weights)

    def weigh(self, t: int, s: int, x: Tensor, extras: Extras, x_s: Tensor) -> tuple[Extras, Tensor]:
        """The extras at a given ``x_s`` and the potential of the move ``x -> x_s`` (conditional
        SMC's reference particle; :mod:`posterior.particles.conditional_smc`)."""
        shifted, mean, v = self.proposal(t, s, x, extras)
        return self._potential(t, s, extras, shifted, mean, v, x_s, None)

    def _potential(
        self,
        t: int,
        s: int,
        c: Extras,
        shifted: Tensor,
        mean: Tensor,
        v: float,
        x_s: Tensor,
        log_weights: Tensor | None,
    ) -> tuple[Extras, Tensor]:
        """The extras at ``x_s`` and ``log G = log p(x_s | x_t) / q(x_s | x_t, y) + lam_s log g_s(x_s)
        - lam_t log g_t(x_t)`` (the true likelihood at ``s = CLEAN``)."""
        lam_t = c["lam"]
        if v > 0:  # log p(x_s | x_t) - log q(x_s | x_t, y): two Gaussians with the same variance
            log_pq = ((x_s - shifted).pow(2) - (x_s - mean).pow(2)).flatten(2).sum(-1) / (2 * v)
        else:
            log_pq = torch.zeros_like(c["log_twist"])
        if s == CLEAN:  # the true likelihood, untempered
            log_lik = self.problem.log_likelihood(x_s)
            return {"lam": torch.ones_like(lam_t)}, log_pq + log_lik - lam_t * c["log_twist"]
        new_extras = self.twist(x_s, s)
        if self.rejuvenate and v > 0:  # for gibbs(): the kernel's and the proposal's means
            new_extras["mean"], new_extras["shifted"] = mean, shifted
        new = new_extras["log_twist"]
        if self.tempering is None:  # lam = 1 (this order of the sums, as without tempering)
            new_extras["lam"] = lam_t
            return new_extras, log_pq + new - c["log_twist"]
        base = log_pq - lam_t * c["log_twist"]
        lam = self.exponent(log_weights, base, new, lam_t[:, 0])
        new_extras["lam"] = lam[:, None].expand_as(new).contiguous()
        return new_extras, base + lam[:, None] * new

    def log_transition(self, t: int, s: int, x: Tensor, extras: Extras, x_s: Tensor) -> Tensor | None:
        """``log p(x_s | x_t^i) - lam log g_t(x_t^i)`` up to a constant, ``[B, N]``: the factor of
        the path target that joins a given ``x_s: [B, 1, *event]`` to particle ``i``'s past
        (ancestor sampling), or ``None`` where the step is deterministic."""
        mean, v = self.kernel(Denoised(extras["eps"], extras["x0"]), t, s, like=x)
        if v == 0:
            return None
        return -(x_s - mean).pow(2).flatten(2).sum(-1) / (2 * v) - extras["lam"] * extras["log_twist"]

    def start_at(self, x: Tensor) -> tuple[Extras, Tensor]:
        """The extras and the initial log potential (untempered) of given start states
        ``x: [B, M, *event]``: :meth:`init`'s, and conditional SMC's reference."""
        extras, log_ratio = self._start_terms(x)
        log_g = extras["log_twist"]
        extras["lam"] = torch.ones_like(log_g)
        return extras, log_g if log_ratio is None else log_g + log_ratio

    def _start_terms(self, x: Tensor) -> tuple[Extras, Tensor | None]:
        """The twist's extras at start states ``x`` and ``log p_T(x) - log N(x; 0, I)`` where the
        start is weighted (``None`` where it draws ``p_T`` exactly or has no density)."""
        t0 = self.pairs[0][0]
        exact = self.exact_start and self.prior.has_exact_marginal  # as DiffusionModel.start
        return self.twist(x, t0), None if exact else self.start_log_ratio(x, t0)

    def gibbs(
        self, t: int, s: int, x: Tensor, extras: Extras, generator: torch.Generator
    ) -> tuple[Tensor, Extras]:
        """``rejuvenate`` Metropolis-Hastings steps on each particle's ``x_s`` leaving its conditional
        given the rest of its path, ``p(x_s | x_t) g_s(x_s)^lam``, invariant. Proposal: the
        autoregressive move ``x' = m + rho (x_s - m) + sqrt(1 - rho^2) sqrt(v) xi`` around the
        proposal's mean ``m`` (it leaves ``q = N(m, v I)`` invariant), so the acceptance ratio is
        the ratio of the incremental weights ``p g^lam / q`` at ``x'`` and ``x_s`` (Neal, 1998;
        Cotter et al., 2013). One network evaluation and one VJP per particle and step."""
        if "mean" not in extras:  # a deterministic step, or no rejuvenation asked
            return x, extras
        v = self.kernel_variance(t, s, x)
        mean, shifted, lam = extras["mean"], extras["shifted"], extras["lam"]
        view = (*lam.shape, *([1] * (x.dim() - 2)))

        def log_weight(z: Tensor, log_twist: Tensor) -> Tensor:
            log_pq = ((z - shifted).pow(2) - (z - mean).pow(2)).flatten(2).sum(-1) / (2 * v)
            return log_pq + lam * log_twist

        current = log_weight(x, extras["log_twist"])
        for _ in range(self.rejuvenate):
            proposal = shifted + RHO * (x - shifted) + ((1 - RHO**2) * v) ** 0.5 * self.noise(x, generator)
            fresh = self.twist(proposal, s)
            candidate = log_weight(proposal, fresh["log_twist"])
            u = torch.rand(current.shape, generator=generator, device=x.device, dtype=x.dtype)
            accept = torch.log(u) < candidate - current  # [B, N]
            x = torch.where(accept.view(view), proposal, x)
            extras = {
                k: torch.where(accept.view(*accept.shape, *([1] * (v_.dim() - 2))), fresh[k], v_)
                if k in fresh
                else v_
                for k, v_ in extras.items()
            }
            current = torch.where(accept, candidate, current)
        return x, extras

    def log_target(self, s: int, x: Tensor, extras: Extras) -> Tensor:
        """``log p_s(x) + lam * log p~_s(y | x)``, differentiable in ``x`` (the twist's gradient
        comes from ``denoise_with_grad``); needs a prior with a density."""
        prior = self.prior.log_prob(self.flat(x), s).reshape(x.shape[:2])
        if s == CLEAN:
            return prior + self.problem.log_likelihood(x)
        return prior + extras["lam"] * _Twist.apply(x, self, s)

    def refresh(self, s: int, x: Tensor, extras: Extras) -> Extras:
        return {**self.twist(x, s), "lam": extras["lam"]}


class _Twist(torch.autograd.Function):
    """``log p~_s(y | x)`` as an autograd op whose backward is the gradient computed with it."""

    @staticmethod
    def forward(ctx, x: Tensor, model: TDSModel, s: int) -> Tensor:  # type: ignore[override]
        out = model.twist(x.detach(), s)
        ctx.save_for_backward(out["grad"])
        return out["log_twist"]

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_out.reshape(*grad_out.shape, *([1] * (grad.dim() - 2))) * grad, None, None
