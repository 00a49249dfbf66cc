"""The diffusion prior as a particle proposal: the chain's start and its batched reverse kernel.

The start of every diffusion sampler is ``x_T ~ N(0, I)``. With ``exact_start``, a prior that can
draw its noised marginal exactly (``prior.sample_marginal``, the Gaussian mixture) starts from
``p_T`` itself; otherwise, where the prior has a density (``prior.has_log_prob``) the initial log
potential adds ``log p_T(x_T) - log N(x_T; 0, I)``. Either way the particle system targets the
path measure started from the right marginal. (The importance-weighted start degenerates in high
dimension: at d = 800 the log ratio's spread is a few units.)

The kernel's variance is DDIM(eta)'s by default; :meth:`DiffusionModel.use_kernel_var` with
``"analytic"`` replaces it by Analytic-DPM's optimal variance around the same mean
(:mod:`posterior.samplers.exact.analytic_variance`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from posterior.distributions import log_normal
from posterior.particles.feynman_kac import FeynmanKacModel
from posterior.priors.base import Denoised, ddim_step
from posterior.problem import InverseProblem
from posterior.samplers.exact.analytic_variance import check_kernel_var, kernel_variances

__all__ = ["DiffusionModel"]


class DiffusionModel(FeynmanKacModel):
    """A Feynman-Kac model on a diffusion prior: the start, flat prior calls on particles
    ``[B, N, *event]`` and the batched DDIM(eta) reverse kernel (eta = 1: DDPM)."""

    #: The reverse kernel's variance (:meth:`use_kernel_var`): ``"ddim"`` or ``"analytic"``.
    kernel_var = "ddim"
    #: ``(t, s) -> variance`` of every step with ``kernel_var="analytic"``, else ``None``.
    variances: dict[tuple[int, int], float] | None = None

    def __init__(
        self, problem: InverseProblem, pairs: list[tuple[int, int]], eta: float, exact_start: bool
    ) -> None:
        self.problem, self.prior, self.eta, self.exact_start = problem, problem.prior, eta, exact_start
        self.pairs = pairs
        self.event = tuple(problem.event_shape)

    def use_kernel_var(self, kernel_var: str) -> None:
        """Set the reverse kernel's variance: ``"ddim"`` (DDIM(eta)'s) or ``"analytic"``
        (Analytic-DPM's optimal variance around the DDIM(eta) mean, from the prior's denoiser
        error per time, :func:`~posterior.samplers.exact.analytic_variance.kernel_variances`)."""
        self.kernel_var = check_kernel_var(kernel_var)
        self.variances = (
            None if kernel_var == "ddim" else kernel_variances(self.prior, self.pairs, self.eta, kernel_var)
        )

    def flat(self, x: Tensor) -> Tensor:
        """``[B, N, *event] -> [B * N, *event]``."""
        return x.reshape(-1, *self.event)

    def batched(self, x: Tensor, B: int) -> Tensor:
        """``[B * N, ...] -> [B, N, ...]``."""
        return x.reshape(B, -1, *x.shape[1:])

    def start(self, B: int, N: int, t: int, generator: torch.Generator) -> tuple[Tensor, bool]:
        """Start particles ``[B, N, *event]`` at time ``t`` and whether they are exact draws of
        ``p_t`` (``True``) or of ``N(0, I)`` (``False``).

        The chain's start law is ``p_t`` with ``exact_start`` where the prior can draw it
        (``prior.sample_marginal``) or has a density (then the ``N(0, I)`` draws are weighted by
        :meth:`start_log_ratio`), and ``N(0, I)`` otherwise.
        """
        prior = self.prior
        if self.exact_start and prior.has_exact_marginal:
            return prior.sample_marginal(B * N, t, generator).reshape(B, N, *self.event), True
        x = torch.randn(B, N, *self.event, generator=generator, device=prior.device, dtype=prior.dtype)
        return x, False

    def start_log_ratio(self, x: Tensor, t: int) -> Tensor | None:
        """``log p_t(x) - log N(x; 0, I)``: ``[B, N]``, or ``None`` when the chain starts from
        ``N(0, I)`` (no ``exact_start``, or a prior without a density)."""
        if not (self.exact_start and self.prior.has_log_prob):
            return None
        log_p = self.prior.log_prob(self.flat(x), t).reshape(x.shape[:2])
        return log_p - log_normal(x.flatten(2), 0.0, 1.0)

    def kernel(self, denoised: Denoised, t: int, s: int, like: Tensor) -> tuple[Tensor, float]:
        """Mean ``[B, N, *event]`` and variance (a float) of the prior's reverse kernel ``t -> s``."""
        B = like.shape[0]
        flat = Denoised(self.flat(denoised.eps), self.flat(denoised.x0))
        mean, std = ddim_step(self.prior.schedule, flat, t, s, self.eta, like=like)
        var = float(std) ** 2 if self.variances is None else self.variances[(t, s)]
        return self.batched(mean, B), var

    def kernel_variance(self, t: int, s: int, like: Tensor) -> float:
        """The variance of the reverse kernel ``t -> s`` (as :meth:`kernel` returns it)."""
        if self.variances is not None:
            return self.variances[(t, s)]
        zero = like.new_zeros(1)
        _, std = ddim_step(self.prior.schedule, Denoised(zero, zero), t, s, self.eta, like=like)
        return float(std) ** 2

    def denoise(self, x: Tensor, t: int) -> Denoised:
        """Predictions for batched particles, returned batched ``[B, N, *event]``."""
        d = self.prior.denoise(self.flat(x), t)
        return Denoised(self.batched(d.eps, x.shape[0]), self.batched(d.x0, x.shape[0]))

    @staticmethod
    def noise(like: Tensor, generator: torch.Generator) -> Tensor:
        """Standard normal draws shaped like ``like``."""
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
