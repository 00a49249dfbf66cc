"""Split Gibbs sampling with a diffusion prior (PnP-DM).

Wu, Sun, Chen, Zhang, Yue, Bouman, "Principled Probabilistic Imaging using Diffusion Models as
Plug-and-Play Priors", NeurIPS 2024. The posterior ``p(x | y)`` is split with an auxiliary ``z``:

    pi(x, z) ∝ p(x) N(z; x, rho^2 I) L(y | z),

and a Gibbs sampler alternates

* **likelihood step** ``z ~ pi(z | x, y) ∝ L(y | z) N(z; x, rho^2 I)``: Gaussian in closed form for a
  linear operator with Gaussian noise (computed in the operator's SVD basis, so it scales to
  images), a few MALA steps otherwise (nonlinear operators, non-Gaussian noise models: that
  conditional has a density, so the step is exact);
* **prior step** ``x ~ pi(x | z) ∝ p(x) N(z; x, rho^2 I)``: a denoising posterior. With
  ``x_t = sqrt(abar_t) z`` and ``rho^2 = (1 - abar_t) / abar_t`` it is ``p(x_0 | x_t)``. A prior
  that can draw it exactly (``prior.has_exact_x0_sampler``: the Gaussian mixture, in closed form)
  does so; otherwise the prior's reverse process (DDPM ancestral steps) runs from ``t`` down to the
  clean level, as in PnP-DM.

``rho`` is annealed geometrically from ``rho_start`` to a floor during warm-up (PnP-DM's schedule)
and then kept fixed, so the kept draws come from one time-homogeneous kernel. ``rho`` is quantised
to the schedule's grid ``sqrt((1 - abar_t) / abar_t)``, the noise levels the prior knows.

**What the chains converge to.** Both steps are exact conditionals of ``pi`` when the prior step
is exact, so ``pi`` is invariant and the ``x``-marginal of the chains (after the annealing) is
the posterior ``p(x | y)`` for linear Gaussian problems at ``rho < sigma / s_max`` (exact split
below), ``p(x) N(y; A x, sigma^2 I + rho^2 A A^T)`` with PnP-DM's split. The reverse-process
prior step is not exact: a DDPM step draws ``x_s`` around ``E[x_s | x_t]`` with the variance it
would have if ``x_0`` were known, leaving out ``(1 - r)^2 Cov[x_0 | x_t]`` (``r`` the bridge
coefficient), and its last step is the deterministic Tweedie mean. That chain is narrower than
``p(x | z)``: on ``gmm_benchmark(2, 1, seed=0).prior`` with ``A = [1, 0]``, ``y = 8.3``,
``sigma = 0.05``, the posterior sd of ``x_1`` is 0.0499; 1,000 chains, 20 kept sweeps give 0.0442
with the reverse-process prior step (every step from ``t = 9``) and 0.0499 with the exact one.
With it (a network prior, or ``exact_prior_step=False``) the chains converge to the stationary
law of the kernel that alternates the exact likelihood step with the ``prior_steps``-step
reverse chain, the posterior only as far as that chain samples ``p(x | z)``. Modes farther apart
than ``rho`` are not crossed: their proportions are those of the start
(:func:`~posterior.kernels.initial_chains`).

**Exact split (our addition).** In PnP-DM, ``L = p(y | z)`` and the ``x``-marginal of ``pi`` is
``p(x) N(y; A x, sigma^2 I + rho^2 A A^T)``: biased by ``O(rho^2)``. For a linear Gaussian problem
with ``rho s_max < sigma`` we use ``L(y | z) = N(y; A z, sigma^2 I - rho^2 A A^T)`` instead, whose
convolution with ``N(0, rho^2 I)`` is exactly ``N(y; A x, sigma^2 I)``: the ``x``-marginal is then
the posterior itself (``correct_likelihood=True``, the default). Steps with ``rho`` above that
bound use PnP-DM's original split.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import check_bool, check_fraction, check_int, check_positive, check_positive_int
from posterior.distributed.context import particle_mean
from posterior.kernels.chains import KernelInfo
from posterior.kernels.langevin import MALA, FunctionTarget
from posterior.operators.base import LinearOperator
from posterior.problem import InverseProblem
from posterior.schedule import CLEAN

__all__ = ["GibbsState", "SplitGibbs", "rho_grid"]


def rho_grid(abar: Tensor) -> Tensor:
    """``rho_t = sqrt((1 - abar_t) / abar_t)`` for ``abar: Tensor[T]``: the noise level of
    ``x_t / sqrt(abar_t) = x_0 + rho_t eps``; increasing in ``t``."""
    abar = abar.double()
    return ((1 - abar) / abar).sqrt()


class GibbsState(NamedTuple):
    """Chains of :class:`SplitGibbs`: positions, auxiliary variables and the annealing."""

    x: Tensor  # [B, N, *event]
    z: Tensor  # [B, N, *event]: the last auxiliary variable
    iteration: int  # sweeps done (rho anneals while iteration < warmup_steps)
    warmup_steps: int
    z_scale: Tensor  # [B]: the nonlinear likelihood step's MALA step, relative to min(rho^2, sigma^2)


class SplitGibbs:
    """The PnP-DM split Gibbs sampler on ``B x N`` chains.

    Args:
        problem: the (batched) inverse problem, ``noise_std > 0``.
        rho_floor: final coupling ``rho > 0``. ``None``: ``0.9 sigma / s_max`` (the largest value at
            which the split is exact) for linear Gaussian problems with ``correct_likelihood``,
            else ``min sigma`` (for non-Gaussian noise ``problem.noise_scale()``).
        rho_start: initial ``rho`` of the annealing (``None``: start at the floor).
        rho_decay: geometric factor per warm-up iteration, in ``(0, 1)`` (PnP-DM uses 0.9).
        correct_likelihood: use the exact split where ``rho s_max < sigma`` (see module doc).
        prior_steps: most reverse-process steps per prior step (``None``: every training step
            from ``t`` to 0). Each costs one network evaluation per chain.
        z_steps: MALA steps per likelihood step for nonlinear operators.
        z_step_size: initial MALA step of the nonlinear likelihood step, relative to
            ``min(rho^2, sigma^2)``; adapted during warm-up.
        exact_prior_step: draw ``p(x | z)`` exactly where the prior can
            (``prior.has_exact_x0_sampler``); ``False`` runs the reverse chain, as a network
            prior must (see the module doc for what each converges to).
    """

    def __init__(
        self,
        problem: InverseProblem,
        rho_floor: float | None = None,
        rho_start: float | None = None,
        rho_decay: float = 0.9,
        correct_likelihood: bool = True,
        prior_steps: int | None = 50,
        z_steps: int = 10,
        z_step_size: float = 0.5,
        exact_prior_step: bool = True,
    ) -> None:
        if not isinstance(problem, InverseProblem):
            raise TypeError(f"problem must be an InverseProblem, got {type(problem).__name__}")
        problem.require_noise("gibbs")
        check_positive(rho_floor, "rho_floor", allow_none=True)
        check_positive(rho_start, "rho_start", allow_none=True)
        check_fraction(rho_decay, "rho_decay", open_interval=True)
        check_positive_int(prior_steps, "prior_steps", allow_none=True)
        check_positive_int(z_steps, "z_steps")
        check_positive(z_step_size, "z_step_size")
        check_bool(correct_likelihood, "correct_likelihood")
        check_bool(exact_prior_step, "exact_prior_step")
        self.problem = problem
        self.prior = problem.prior
        op = problem.operator
        # the closed-form likelihood step needs Gaussian noise; other noise models take MALA steps
        self.linear = problem.gaussian and isinstance(op, LinearOperator) and op.has_svd
        self.correct_likelihood = correct_likelihood and self.linear
        sigma = problem.noise_scale().double()
        if self.linear:
            assert isinstance(op, LinearOperator)
            self.svd = op.svd_coordinates(problem.y_batch, self.prior.dtype)
            self.s = self.svd.s.to(device=sigma.device, dtype=torch.float64)
            s_max = float(self.s.max()) if self.s.numel() else 0.0
            self.rho_exact = (sigma / s_max) if s_max > 0 else torch.full_like(sigma, float("inf"))
        else:
            problem.require_differentiable("gibbs")  # the likelihood step runs MALA on z
            self.rho_exact = torch.zeros_like(sigma)
        if rho_floor is None:
            rho_floor = float(0.9 * self.rho_exact.min()) if self.correct_likelihood else float(sigma.min())
        self.rho_floor = rho_floor
        self.rho_start = rho_floor if rho_start is None else max(rho_start, rho_floor)
        self.rho_decay = rho_decay
        self.prior_steps, self.z_steps = prior_steps, z_steps
        self.exact_prior_step = bool(exact_prior_step) and self.prior.has_exact_x0_sampler
        self.rhos = rho_grid(self.prior.schedule.alphas_cumprod)  # [T], float64
        self.z_scale = torch.full_like(sigma, z_step_size).to(self.prior.dtype)

    # ----------------------------------------------------------------- schedule
    def time_for(self, rho: float) -> int:
        """The training time whose ``rho_t`` is the largest one ``<= rho`` (0 if none is)."""
        return max(
            int(torch.searchsorted(self.rhos, torch.tensor(rho, dtype=torch.float64), right=True)) - 1, 0
        )

    def rho_time(self, iteration: int, warmup_steps: int) -> int:
        """Time ``t`` of ``rho`` at ``iteration``: geometric decay during warm-up, then the floor."""
        if iteration < warmup_steps:
            rho = max(self.rho_start * self.rho_decay**iteration, self.rho_floor)
        else:
            rho = self.rho_floor
        return self.time_for(rho)

    def rho(self, state: GibbsState) -> float:
        """The ``rho`` (on the grid) of the next sweep from ``state``."""
        return float(self.rhos[self.rho_time(state.iteration, state.warmup_steps)])

    # ----------------------------------------------------------------- steps
    def init(self, x: Tensor, warmup_steps: int = 0) -> GibbsState:
        """Chains at ``x: [B, N, *event]``; ``rho`` anneals over the first ``warmup_steps`` sweeps."""
        check_int(warmup_steps, "warmup_steps")
        if x.dim() < 3 or x.shape[0] != self.problem.batch_size:
            raise ValueError(
                f"expected particles [{self.problem.batch_size}, N, *event_shape], got {list(x.shape)}"
            )
        return GibbsState(x, x.clone(), 0, warmup_steps, self.z_scale.clone())

    def likelihood_step(
        self, x: Tensor, t: int, generator: torch.Generator, z_scale: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``z ~ pi(z | x, y)`` at ``rho = rho_t``; returns ``z`` and the acceptance ``[B, N]``
        (``z_scale``: the nonlinear step's MALA scale ``[B]``, by default the initial one)."""
        rho2 = float(self.rhos[t]) ** 2
        if self.linear:
            return self._linear_z(x, rho2, generator), torch.ones(x.shape[:2], device=x.device, dtype=x.dtype)
        return self._langevin_z(x, rho2, generator, self.z_scale if z_scale is None else z_scale)

    def _linear_z(self, x: Tensor, rho2: float, generator: torch.Generator) -> Tensor:
        op = self.problem.operator
        assert isinstance(op, LinearOperator)
        B = x.shape[0]
        dt = x.dtype
        a = op.to_svd(x)  # [B, N, d]
        s, u = self.svd.s, self.svd.uy  # [r], [B, r]
        r = s.numel()
        sig2 = self.problem.sigma.to(dt).pow(2)  # [B]
        if self.correct_likelihood:
            exact = (rho2**0.5 * self.s.max() < self.problem.sigma.double()).to(dt)  # [B]
        else:
            exact = torch.zeros_like(sig2)
        # Likelihood variance per singular coordinate: sigma^2 - [exact] rho^2 s_i^2 (> 0).
        v = sig2[:, None] - exact[:, None] * rho2 * s.pow(2)[None]  # [B, r]
        prec = 1 / rho2 + s.pow(2)[None] / v  # [B, r]
        mean = a.clone()
        mean[..., :r] = (a[..., :r] / rho2 + (s[None] * u / v)[:, None]) / prec[:, None]
        std = torch.full_like(a[:1, :1], rho2**0.5).expand(B, 1, a.shape[-1]).clone()
        std[..., :r] = prec.rsqrt()[:, None]
        noise = torch.randn(a.shape, generator=generator, device=x.device, dtype=dt)
        z = mean + std * noise
        return op.from_svd(z)

    def _langevin_z(
        self, x: Tensor, rho2: float, generator: torch.Generator, z_scale: Tensor
    ) -> tuple[Tensor, Tensor]:
        problem = self.problem

        def log_cond(z: Tensor) -> Tensor:  # log p(y | z) - |z - x|^2 / (2 rho^2)
            return problem.log_likelihood(z) - (z - x).pow(2).reshape(*z.shape[:2], -1).sum(-1) / (2 * rho2)

        sig2 = problem.noise_scale().to(x.dtype).pow(2).clamp(max=rho2)
        kernel = MALA(FunctionTarget(log_cond), step_size=1.0)
        state = kernel.init(x)
        acc = torch.zeros(x.shape[:2], device=x.device, dtype=x.dtype)
        for _ in range(self.z_steps):
            state, info = kernel.step(generator, state, z_scale * sig2)
            acc = acc + info.acceptance
        return state.x, acc / self.z_steps

    def prior_step(self, z: Tensor, t: int, generator: torch.Generator) -> Tensor:
        """``x ~ p(x_0 | x_t = sqrt(abar_t) z)``: exact draws where the prior has them
        (``exact_prior_step``), else DDPM ancestral steps from ``t`` to clean (the last one the
        Tweedie mean ``E[x_0 | x_0-level]``, as in the prior's own sampler)."""
        B, N = z.shape[:2]
        flat = z.reshape(B * N, *z.shape[2:])
        abar = self.prior.schedule.alpha_bar(t).item()
        xt = abar**0.5 * flat
        if self.exact_prior_step:
            return self.prior.sample_x0(xt, t, generator).reshape(z.shape)
        if self.prior_steps is None or t + 1 <= self.prior_steps:
            times = list(range(t, -1, -1))
        else:
            times = torch.linspace(t, 0, self.prior_steps).round().long().unique().flip(0).tolist()
        for tt, ss in zip(times, [*times[1:], CLEAN], strict=True):
            mean, std, _ = self.prior.reverse_kernel(xt, tt, ss, eta=1.0)
            xt = (
                mean
                if ss == CLEAN
                else mean
                + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            )
        return xt.reshape(z.shape)

    def step(self, generator: torch.Generator, state: GibbsState) -> tuple[GibbsState, KernelInfo]:
        """One Gibbs sweep ``z | x, y`` then ``x | z`` for every chain."""
        t = self.rho_time(state.iteration, state.warmup_steps)
        z, acc = self.likelihood_step(state.x, t, generator, state.z_scale)
        z_scale = state.z_scale
        if not self.linear and state.iteration < state.warmup_steps:  # Robbins-Monro towards 0.574
            z_scale = z_scale * torch.exp(particle_mean(acc) - 0.574)
        x = self.prior_step(z, t, generator)
        finite = torch.isfinite(x.reshape(*x.shape[:2], -1)).all(-1) & torch.isfinite(
            z.reshape(*z.shape[:2], -1)
        ).all(-1)
        return GibbsState(x, z, state.iteration + 1, state.warmup_steps, z_scale), KernelInfo(
            acc, finite, ~finite
        )
