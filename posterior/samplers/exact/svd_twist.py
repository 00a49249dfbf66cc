"""Twisted SMC in the operator's SVD basis, the common core of MCGdiff and FPS-SMC.

With ``A = U diag(S) V^T``, ``z = V^T x`` and ``y~_i = (U^T y)_i / S_i`` on the observed
coordinates (``S_i > 0``), the twist is ``g_t(x_t) = prod_i N(c_t,i; z_t,i, w_t,i)`` for a
pseudo-observation path ``c_t`` and variances ``w_t`` given by :meth:`SVDTwistModel.path`. The
proposal is the prior's reverse kernel times ``g_s`` (a Gaussian product, coordinate-wise), so the
incremental weight is the predictive ``prod_i N(c_s,i; mu_i, v + w_s,i)`` over ``g_t(x_t)``. The
last step (``s = CLEAN``, a deterministic kernel) multiplies by the true likelihood over ``g_t``:
the potentials telescope, so the final target is exactly the model's posterior and the product of
increments estimates ``p(y)``.

Noiseless problems (``noise_std = 0`` for the whole batch): the path is pinned at the last noisy
time ``t_K`` instead of at ``CLEAN``, ``c_{t_K} = sqrt(abar_K) y~`` with ``w_{t_K} = 0``
(:attr:`SVDTwistModel.a_end` ``= abar_K``; ``1`` with noise): the step into ``t_K`` sets the
observed coordinates to ``c_{t_K}`` exactly and weighs by the predictive ``N(c_{t_K}; mu, v)``,
and the last, deterministic step sets them to ``y~`` and weighs nothing. The target is the model's
``x_{t_K}`` given ``V^T x_{t_K} = sqrt(abar_K) y~`` (observed coordinates), mapped by its last
denoising step: ``p(x_0 | A x_0 = y)`` up to the ``1 - abar_K`` (``1e-4`` for DDPM) of noise left at
``t_K``. The log-evidence is then the density of ``y`` (the Jacobian of ``y -> c_{t_K}`` added).

Per-particle extras: ``log_g`` (the twist at the particle), ``mean`` (the reverse kernel's mean
from the particle's parent, for :meth:`SVDTwistModel.gibbs`) and whatever :meth:`path` reads
(FPS's path ``c``).

Rejuvenation. The incremental weight depends on the parent ``x_t`` only, so after a resampling
the copies of a parent also share ``x_s``. Their ``x_s`` can be redrawn, independently, from its
conditional given the rest of the path, ``p(x_s | x_t) g_s(x_s)``, which is the proposal itself:
an exact Gibbs move of the path target at no network cost (:meth:`SVDTwistModel.gibbs`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior.distributions import log_normal
from posterior.particles.feynman_kac import Extras
from posterior.problem import InverseProblem
from posterior.samplers.exact.diffusion_model import DiffusionModel
from posterior.schedule import CLEAN

__all__ = ["SVDTwistModel"]


class SVDTwistModel(DiffusionModel):
    """Twisted SMC for linear Gaussian problems in the operator's SVD basis (see the module).

    Subclasses give the pseudo-observation path (:meth:`path`) and, for a random path, its start
    (:meth:`init_path`) and its move from ``t`` to ``s`` (:meth:`advance`).
    """

    def __init__(
        self,
        problem: InverseProblem,
        pairs: list[tuple[int, int]],
        eta: float,
        exact_start: bool,
        method: str,
    ) -> None:
        super().__init__(problem, pairs, eta, exact_start)
        self.name = method
        num_steps = len(pairs)
        op = problem.require_linear(method, svd=True)
        zero = problem.require_gaussian(method) == 0
        if zero.any() and not zero.all():
            raise ValueError(
                f"{method!r} needs noise_std > 0 for every problem of the batch or = 0 for all; "
                f"got 0 in {int(zero.sum())} of {zero.numel()} problems"
            )
        self.noiseless = bool(zero.all())
        if self.noiseless and num_steps < 2:  # the pin would fall on the start, x_T
            raise ValueError(
                f"{method!r} with noise_std = 0 needs num_steps >= 2 (the observation is pinned at the last "
                f"noisy time, which with num_steps = {num_steps} is the start); got num_steps={num_steps}"
            )
        s = op.singular_values.to(device=problem.prior.device, dtype=problem.prior.dtype)
        self.r = s.numel()
        self.observed = s > 0  # [r]
        s_safe = torch.where(self.observed, s, torch.ones_like(s))
        self.y_tilde = op.U_adjoint(problem.y_batch)[:, : self.r] / s_safe  # [B, r]
        self.obs_var = problem.sigma[:, None].pow(2) / s_safe.pow(2)  # [B, r]: variance of y~ given z0
        self.op = op
        # where the path is pinned: abar at t_K (noiseless) or at CLEAN (= 1, with noise)
        self.t_end = pairs[-1][0] if self.noiseless else CLEAN
        self.a_end = self.prior.schedule.alpha_bar(self.t_end).item() if self.noiseless else 1.0
        if self.noiseless:  # log p(y) = log p(c_{t_K}) + log |d c_{t_K} / d y|
            jac = 0.5 * math.log(self.a_end) * int(self.observed.sum()) - torch.log(s[self.observed]).sum()
            self.log_jacobian = float(jac)

    def pinned(self, t: int) -> bool:
        """Whether the twist at ``t`` is a point mass (``w_t = 0``: the noiseless path's end)."""
        return self.noiseless and t == self.t_end

    def path(self, t: int, extras: Extras) -> tuple[Tensor, Tensor]:
        """Pseudo-observations ``c_t: [B, 1 or N, r]`` and twist variances ``w_t: [B, 1, r]``."""
        raise NotImplementedError

    def init_path(self, B: int, N: int, generator: torch.Generator) -> Extras:
        """The extras of a per-particle path at the first time (default: none)."""
        return {}

    def advance(self, t: int, s: int, extras: Extras, generator: torch.Generator) -> Extras:
        """A per-particle path moved from ``t`` to ``s`` (default: none)."""
        return extras

    def coords(self, x: Tensor) -> Tensor:
        """``z = V^T x`` on the first ``r`` coordinates: ``[B, N, *event] -> [B, N, r]``."""
        return self.batched(self.op.V_adjoint(self.flat(x))[:, : self.r], x.shape[0])

    def log_twist(self, z: Tensor, t: int, extras: Extras) -> Tensor:
        """``log g_t`` at SVD coordinates ``z: [B, N, r]``: ``[B, N]``."""
        if self.pinned(t):  # a point mass, satisfied by construction: its normaliser is left out
            return z.new_zeros(z.shape[:2])
        c, w = self.path(t, extras)
        return log_normal(c, z, w, self.observed)

    def init(
        self, B: int, N: int, generator: torch.Generator, shared: torch.Generator
    ) -> tuple[Tensor, Extras, Tensor | None]:
        # Exact draws of p_T are weighted by the twist g_T. Draws of N(0, I) instead move to the
        # target N(0, I) g_T(x_T) / Z, a Gaussian product on the observed coordinates (an affine
        # move), with the predictive N(c_T; 0, 1 + w_T) as weight (times p_T / N(0, I) at the moved
        # particles where the chain starts from p_T). Moving exact p_T draws by the same map would
        # need the ratio [p_T / N](x_new) / [p_T / N](x_old), whose spread is large where p_T is far
        # from N(0, I) (few steps).
        extras = self.init_path(B, N, generator)
        t0 = self.pairs[0][0]
        x, exact = self.start(B, N, t0, generator)
        c, w = self.path(t0, extras)
        z = self.coords(x)
        if exact:
            log_g = self.log_twist(z, t0, extras)
            return x, {**extras, "log_g": log_g}, log_g
        prec = 1 + 1 / w
        z_new = (c / w) / prec + prec.rsqrt() * z
        x = x + self._lift(torch.where(self.observed, z_new - z, torch.zeros_like(z)))
        log_w = log_normal(c, torch.zeros_like(z), 1 + w, self.observed)
        log_ratio = self.start_log_ratio(x, t0)
        extras = {**extras, "log_g": self.log_twist(z_new, t0, extras)}
        return x, extras, log_w if log_ratio is None else log_w + log_ratio

    def step(
        self, t: int, s: int, x: Tensor, extras: Extras, log_weights: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Extras, Tensor]:
        log_g_t = extras["log_g"]
        extras = self.advance(t, s, {k: v for k, v in extras.items() if k != "mean"}, generator)
        mean, v = self.kernel(self.denoise(x, t), t, s, like=x)
        if s == CLEAN and self.noiseless:  # observed coordinates become y~; nothing to weigh
            return (
                self.replace(mean, self.y_tilde[:, None]),
                {**extras, "log_g": torch.zeros_like(log_g_t)},
                -log_g_t,
            )
        if s == CLEAN or v == 0.0:  # deterministic last step: weight by the true likelihood
            x_s = mean
            if s == CLEAN:
                new = self.problem.log_likelihood(x_s)
            else:
                new = self.log_twist(self.coords(x_s), s, extras)
            return x_s, {**extras, "log_g": new}, new - log_g_t
        c, w = self.path(s, extras)
        mu = self.coords(mean)  # [B, N, r]
        x_s, log_g = self.propose(mean, v, s, extras, generator, mu)
        extras = {**extras, "log_g": log_g, "mean": mean}
        if self.pinned(s):  # the twist is a point mass at c
            log_pred = log_normal(c, mu, torch.full_like(mu, v), self.observed)
            return x_s, extras, log_pred + self.log_jacobian - log_g_t
        return x_s, extras, log_normal(c, mu, v + w, self.observed) - log_g_t

    def propose(
        self,
        mean: Tensor,
        v: float,
        s: int,
        extras: Extras,
        generator: torch.Generator,
        mu: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """A draw of ``x_s`` from the prior's reverse kernel ``N(mean, v I)`` times the twist
        ``g_s``: on the observed SVD coordinates the Gaussian product with ``N(c_s, w_s)`` (set to
        ``c_s`` where the twist is a point mass), elsewhere the kernel itself. Returns ``x_s: [B, N,
        *event]`` and ``log g_s(x_s): [B, N]``."""
        c, w = self.path(s, extras)
        eps = self.noise(mean, generator)
        x_s = mean + v**0.5 * eps
        if self.pinned(s):  # log_twist is 0 at the point mass
            return self.replace(x_s, c), x_s.new_zeros(x_s.shape[:2])
        mu = self.coords(mean) if mu is None else mu  # the kernel mean's SVD coordinates
        prec = 1 / v + 1 / w
        post_mean = (mu / v + c / w) / prec
        # the observed coordinates of x_s = mean + sqrt(v) eps are replaced by their
        # Gaussian-product draw: move along V by the difference (V orthogonal)
        z_s = self.coords(x_s)
        z_new = post_mean + prec.rsqrt() * (z_s - mu) / v**0.5  # same standard normal, new law
        delta = torch.where(self.observed, z_new - z_s, torch.zeros_like(z_s))
        return x_s + self._lift(delta), self.log_twist(z_new, s, extras)

    def gibbs(
        self, t: int, s: int, x: Tensor, extras: Extras, generator: torch.Generator
    ) -> tuple[Tensor, Extras]:
        """Redraw each particle's ``x_s`` from its conditional given the rest of its path,
        ``p(x_s | x_t) g_s(x_s)``: the very proposal (a Gaussian product), from the kernel mean kept
        in the extras. An exact Gibbs move of the path target; it costs no network call."""
        if "mean" not in extras:  # a deterministic step: x_s is a function of x_t
            return x, extras
        x_s, log_g = self.propose(extras["mean"], self.kernel_variance(t, s, x), s, extras, generator)
        return x_s, {**extras, "log_g": log_g}

    def replace(self, x: Tensor, c: Tensor) -> Tensor:
        """``x`` with its observed SVD coordinates set to ``c: [B, 1 or N, r]`` (moved along ``V``)."""
        z = self.coords(x)
        return x + self._lift(torch.where(self.observed, c - z, torch.zeros_like(z)).expand_as(z))

    def _lift(self, dz: Tensor) -> Tensor:
        """``V [dz, 0]``: ``[B, N, r] -> [B, N, *event]``."""
        B, N, r = dz.shape
        full = dz.new_zeros(B * N, self.op.in_dim)
        full[:, :r] = dz.reshape(B * N, r)
        return self.batched(self.op.V(full), B)

    def log_target(self, s: int, x: Tensor, extras: Extras) -> Tensor:
        prior = self.prior.log_prob(self.flat(x), s).reshape(x.shape[:2])
        return prior + self.log_twist(self.coords(x), s, extras)

    def refresh(self, s: int, x: Tensor, extras: Extras) -> Extras:
        return {**extras, "log_g": self.log_twist(self.coords(x), s, extras)}
