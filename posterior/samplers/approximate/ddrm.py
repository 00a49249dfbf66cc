"""Denoising Diffusion Restoration Models (DDRM).

Kawar, Elad, Ermon and Song, "Denoising Diffusion Restoration Models", NeurIPS 2022. DDRM runs
the reverse process in the right-singular basis of ``A = U diag(S) V^T`` and in the
variance-exploding scale ``x_t / sqrt(abar_t) = x_0 + sigma_t eps``, ``sigma_t^2 = (1 -
abar_t) / abar_t``. With ``xb = V^T x`` (spectral coordinates), ``yb_i = (U^T y)_i / s_i`` and
the noise level ``tau_i = sigma_y / s_i`` of coordinate ``i``, a step ``t -> s`` draws
(eq. 7 of the paper; ``xb0 = V^T x0_hat(x_t)``, ``eps_b = V^T eps_hat(x_t)``):

* ``s_i = 0`` (unobserved): ``xb0 + sqrt(1 - eta^2) sigma_s eps_b + eta sigma_s z``;
* ``sigma_s < tau_i`` (observation noisier than ``x_s``):
  ``xb0 + sqrt(1 - eta^2) sigma_s (yb - xb0) / tau_i + eta sigma_s z``;
* ``sigma_s >= tau_i``: ``(1 - eta_b) xb0 + eta_b yb + sqrt(sigma_s^2 - eta_b^2 tau_i^2) z``.

``x_T`` is drawn from ``q(x_T | x_0, y)`` of the paper: ``yb + sqrt(sigma_T^2 - tau^2) z`` on the
observed coordinates, ``sigma_T z`` elsewhere. Only the network's predictions and the SVD are used.

Exactness: with a Gaussian prior whose covariance is diagonal in the basis ``V`` (e.g. ``N(mu,
I)``), noiseless observations and ``eta = 0``, ``eta_b = 1``, the observed coordinates are
pinned to ``y`` and the others follow the deterministic DDIM (probability-flow) path, so the
sampler converges to the exact posterior as ``num_steps`` grows. With noisy observations DDRM is
not exact for any constant ``eta, eta_b`` (the ``sigma_s >= tau`` branch centres ``x_s`` at
``yb`` rather than at the posterior mean), and constant ``eta > 0`` re-noises by ``eta sigma_s``
at every step, which does not vanish with the step size.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from posterior._utils import check_fraction
from posterior.problem import InverseProblem
from posterior.samplers.approximate._loop import (
    denoise,
    initial_noise,
    make_result,
    randn_like,
    reverse_loop,
)
from posterior.samplers.base import Sampler, register
from posterior.samplers.result import Result
from posterior.schedule import CLEAN

__all__ = ["DDRM"]


@register
class DDRM(Sampler):
    """Denoising Diffusion Restoration Models (Kawar et al., NeurIPS 2022).

    Args:
        eta: stochasticity ``eta`` of the unobserved and the "less noisy than y" coordinates
            (paper: ``0.85``).
        eta_b: weight ``eta_b`` of the measurement on coordinates noisier than ``y``
            (paper: ``1.0``).

    The paper uses ``num_steps = 20``. Needs a linear operator with an SVD.
    """

    name: ClassVar[str] = "ddrm"
    exact: ClassVar[bool] = False
    summary: ClassVar[str] = "Denoising Diffusion Restoration Models: reverse diffusion in the SVD basis of A"

    def __init__(self, eta: float = 0.85, eta_b: float = 1.0) -> None:
        self.eta, self.eta_b = check_fraction(eta, "eta"), check_fraction(eta_b, "eta_b")

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        """Samples ``[B, N, *event_shape]``, ``N`` independent DDRM chains per problem."""
        problem.require_gaussian(self.name)
        op = problem.require_linear(self.name, svd=True)
        prior = problem.prior
        dt, dev = prior.dtype, prior.device
        B, N, d = problem.batch_size, num_particles, op.in_dim
        svd = op.svd_coordinates(problem.y_batch, dt, dev)
        r = svd.s.numel()

        # Per-coordinate observation [B, 1, d] and its noise level tau = sigma_y / s (inf if unobserved).
        observed = torch.zeros(d, dtype=torch.bool, device=dev)
        observed[:r] = svd.observed
        s_full = torch.ones(d, dtype=dt, device=dev)
        s_full[:r] = svd.s_safe
        yb = torch.zeros(B, 1, d, dtype=dt, device=dev)
        yb[:, 0, :r] = svd.y_tilde
        tau = problem.sigma.to(dt)[:, None, None] / s_full  # [B, 1, d]
        tau = torch.where(observed, tau, torch.full_like(tau, float("inf")))
        to_spec, from_spec = op.to_svd, op.from_svd  # [B, N, *event] <-> [B, N, d]

        def sigma(t: int) -> float:  # VE noise level; 0 at CLEAN
            abar = prior.schedule.alpha_bar(t).item()
            return ((1 - abar) / abar) ** 0.5

        pairs = self.time_pairs(problem, num_steps)
        t_first = pairs[0][0]
        sig_T = sigma(t_first)
        z = initial_noise(problem, N, generator).reshape(B, N, d)
        noisy_enough = observed & (sig_T >= tau)  # [B, 1, d]
        xb_T = torch.where(noisy_enough, yb + (sig_T**2 - tau.pow(2)).clamp_min(0).sqrt() * z, sig_T * z)
        x = from_spec(xb_T) * prior.schedule.alpha_bar(t_first).item() ** 0.5  # VP scale

        eta, eta_b = self.eta, self.eta_b
        c = (1 - eta**2) ** 0.5

        def step(x: Tensor, t: int, s: int, i: int) -> Tensor:
            den = denoise(prior, x, t)
            xb0, epsb = to_spec(den.x0), to_spec(den.eps)
            sig_s = sigma(s) if s != CLEAN else 0.0
            noise = randn_like(xb0, generator)
            missing = xb0 + c * sig_s * epsb + eta * sig_s * noise
            tau_safe = torch.where(torch.isfinite(tau) & (tau > 0), tau, torch.ones_like(tau))
            less_noisy = xb0 + c * sig_s * (yb - xb0) / tau_safe + eta * sig_s * noise
            noisier = (
                (1 - eta_b) * xb0
                + eta_b * yb
                + (sig_s**2 - eta_b**2 * tau.pow(2)).clamp_min(0).sqrt().nan_to_num(0.0) * noise
            )
            xb = torch.where(~observed, missing, torch.where(sig_s >= tau, noisier, less_noisy))
            abar_s = prior.schedule.alpha_bar(s).item()
            return from_spec(xb) * abar_s**0.5

        x = reverse_loop(self.name, pairs, x, step, progress, schedule=problem.prior.schedule)
        return make_result(self.name, x)
