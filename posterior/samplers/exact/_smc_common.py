"""What the particle samplers share: options, the batched reverse kernel, the start, the result.

The start of every diffusion sampler is ``x_T ~ N(0, I)``. With ``exact_start``, a prior that can
draw its noised marginal exactly (``prior.sample_marginal``, the Gaussian mixture) starts from
``p_T`` itself; otherwise, where the prior has a density (``prior.has_log_prob``) the initial log
potential adds ``log p_T(x_T) - log N(x_T; 0, I)``. Either way the particle system targets the
path measure started from the right marginal. (The importance-weighted start degenerates in high
dimension: at d = 800 the log ratio's spread is a few units.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior.particles.engine import FeynmanKacModel, Move, SMCOutput, check_resampling_options, run_smc
from posterior.priors.base import Denoised, ddim_step
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler
from posterior.samplers.result import Result
from posterior.schedule import CLEAN

__all__ = [
    "DiffusionModel",
    "ParticleSampler",
    "SVDTwistModel",
    "TwistedSampler",
    "log_normal",
    "to_result",
]


def log_normal(x: Tensor, mean: Tensor | float, var: Tensor | float) -> Tensor:
    """``log N(x; mean, var I)`` summed over the last dim (``var`` broadcasts against it)."""
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    return (-0.5 * (x - mean).pow(2) / var - 0.5 * torch.log(2 * math.pi * var)).sum(-1)


class DiffusionModel(FeynmanKacModel):
    """A Feynman-Kac model on a diffusion prior: flat prior calls and the batched DDIM kernel."""

    def __init__(self, problem: InverseProblem, eta: float, exact_start: bool) -> None:
        super().__init__()
        self.problem, self.prior, self.eta, self.exact_start = problem, problem.prior, eta, exact_start
        self.event = tuple(problem.event_shape)

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
        return self.batched(mean, B), float(std) ** 2

    def denoise(self, x: Tensor, t: int) -> Denoised:
        """Predictions for batched particles, returned batched ``[B, N, *event]``."""
        d = self.prior.denoise(self.flat(x), t)
        return Denoised(self.batched(d.eps, x.shape[0]), self.batched(d.x0, x.shape[0]))

    def noise(self, like: Tensor, generator: torch.Generator) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class ParticleSampler(Sampler):
    """Options shared by the particle samplers (documented on each subclass)."""

    exact = True
    interacting = True

    def __init__(
        self,
        resampling: str = "systematic",
        threshold: float | str = 0.5,
        eta: float = 1.0,
        exact_start: bool = True,
        move: Move | None = None,
    ) -> None:
        check_resampling_options(resampling, threshold)
        if isinstance(eta, bool) or not 0.0 < float(eta) <= 1.0:
            raise ValueError(f"eta must be in (0, 1] (a stochastic reverse kernel), got {eta!r}")
        if move is not None and not callable(move):
            raise ValueError("move must be a callable move(particles, log_target_fn, generator)")
        self.resampling, self.threshold, self.eta = resampling, threshold, float(eta)
        self.exact_start, self.move = bool(exact_start), move

    def model(self, problem: InverseProblem, num_steps: int, generator: torch.Generator) -> FeynmanKacModel:
        raise NotImplementedError

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        pairs = problem.prior.schedule.time_pairs(num_steps)
        model = self.model(problem, num_steps, generator)
        if self.move is not None and getattr(model, "noiseless", False):
            raise ValueError(
                f"{self.name!r}: a move needs noise_std > 0 (with noise_std = 0 the intermediate "
                "target at the last noisy time lives on {A x = y}, where a Langevin move cannot stay)"
            )
        out = run_smc(
            model,
            pairs,
            problem.batch_size,
            num_particles,
            generator,
            resampling=self.resampling,
            threshold=self.threshold,
            move=self.move,
            progress=progress,
        )
        return to_result(out, self.name)


class TwistedSampler(ParticleSampler):
    """A particle sampler whose twist assumes a Gaussian prior on each coordinate: the prior's own
    per-coordinate mean (``prior.moments()``) and a variance ``V`` (``prior_var``: ``"auto"``, a
    positive float or ``math.inf``), documented on each subclass."""

    def __init__(
        self,
        resampling: str = "systematic",
        threshold: float | str = 0.5,
        eta: float = 1.0,
        exact_start: bool = True,
        move: Move | None = None,
        prior_var: float | str = "auto",
    ) -> None:
        super().__init__(resampling, threshold, eta, exact_start, move)
        if prior_var != "auto" and (isinstance(prior_var, (bool, str)) or not float(prior_var) > 0):
            raise ValueError(f"prior_var must be 'auto', a positive float or math.inf, got {prior_var!r}")
        self.prior_var = prior_var

    def prior_gaussian(self, problem: InverseProblem) -> tuple[Tensor | None, float]:
        """The twist's Gaussian stand-in for the prior: per-coordinate mean ``Tensor[*event]``
        (``None`` with ``V = inf``, where it does not enter) and variance ``V``. ``"auto"``: the
        mean of the prior's per-coordinate variances (``prior.moments()``: exact for the Gaussian
        mixture, estimated once from the prior's own draws otherwise)."""
        if self.prior_var != "auto" and float(self.prior_var) == math.inf:
            return None, math.inf
        mean, var = problem.prior.moments()
        V = float(var.mean()) if self.prior_var == "auto" else float(self.prior_var)
        return mean, V


def to_result(out: SMCOutput, name: str) -> Result:
    """A batched :class:`Result` from the engine's output."""
    return Result(
        samples=out.samples,
        method=name,
        log_evidence=out.log_evidence,
        ess=out.ess,
        log_weights=out.log_weights,
        resampled=out.resampled,
        acceptance=out.acceptance,
    )


class SVDTwistModel(DiffusionModel):
    """Twisted SMC for linear Gaussian problems in the operator's SVD basis (MCGdiff, FPS-SMC).

    With ``A = U diag(S) V^T``, ``z = V^T x`` and ``y~_i = (U^T y)_i / S_i`` on the observed
    coordinates (``S_i > 0``), the twist is ``g_t(x_t) = prod_i N(c_t,i; z_t,i, w_t,i)`` for a
    pseudo-observation path ``c_t`` and variances ``w_t`` given by :meth:`path`. The proposal is
    the prior's reverse kernel times ``g_s`` (a Gaussian product, coordinate-wise), so the
    incremental weight is the predictive ``prod_i N(c_s,i; mu_i, v + w_s,i)`` over ``g_t(x_t)``.
    The last step (``s = CLEAN``, a deterministic kernel) multiplies by the true likelihood over
    ``g_t``: the potentials telescope, so the final target is exactly the model's posterior and the
    product of increments estimates ``p(y)``.

    Noiseless problems (``noise_std = 0`` for the whole batch): the path is pinned at the last
    noisy time ``t_K`` instead of at ``CLEAN``, ``c_{t_K} = sqrt(abar_K) y~`` with ``w_{t_K} = 0``
    (:attr:`a_end` ``= abar_K``; ``1`` with noise): the step into ``t_K`` sets the observed
    coordinates to ``c_{t_K}`` exactly and weighs by the predictive ``N(c_{t_K}; mu, v)``, and the
    last, deterministic step sets them to ``y~`` and weighs nothing. The target is the model's
    ``x_{t_K}`` given ``V^T x_{t_K} = sqrt(abar_K) y~`` (observed coordinates), mapped by its last
    denoising step: ``p(x_0 | A x_0 = y)`` up to the ``1 - abar_K`` (``1e-4`` for DDPM) of noise left
    at ``t_K``. The log-evidence is then the density of ``y`` (the Jacobian of ``y -> c_{t_K}``
    added).
    """

    def __init__(
        self, problem: InverseProblem, num_steps: int, eta: float, exact_start: bool, method: str
    ) -> None:
        super().__init__(problem, eta, exact_start)
        self.name = method
        pairs = problem.prior.schedule.time_pairs(num_steps)
        self.times = [t for t, _ in pairs] + [CLEAN]  # the time after step k is times[k + 1]
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
        B = problem.batch_size
        s = op.singular_values.to(device=problem.prior.device, dtype=problem.prior.dtype)
        self.r = s.numel()
        self.observed = s > 0  # [r]
        s_safe = torch.where(self.observed, s, torch.ones_like(s))
        self.y_tilde = op.U_adjoint(problem.y_batch)[:, : self.r] / s_safe  # [B, r]
        self.obs_var = problem.sigma[:, None].pow(2) / s_safe.pow(2)  # [B, r]: variance of y~ given z0
        self.op, self.B = op, B
        # where the path is pinned: abar at t_K (noiseless) or at CLEAN (= 1, with noise)
        self.a_end = self.prior.schedule.alpha_bar(self.times[-2]).item() if self.noiseless else 1.0
        if self.noiseless:  # log p(y) = log p(c_{t_K}) + log |d c_{t_K} / d y|
            jac = 0.5 * math.log(self.a_end) * int(self.observed.sum()) - torch.log(s[self.observed]).sum()
            self.log_jacobian = float(jac)

    def pinned(self, t: int) -> bool:
        """Whether the twist at ``t`` is a point mass (``w_t = 0``: the noiseless path's end)."""
        return self.noiseless and t == self.times[-2]

    def path(self, t: int) -> tuple[Tensor, Tensor]:
        """Pseudo-observations ``c_t: [B, 1 or N, r]`` and twist variances ``w_t: [B, 1, r]``."""
        raise NotImplementedError

    def advance(self, t: int, s: int, generator: torch.Generator) -> None:
        """Move a per-particle pseudo-observation path from ``t`` to ``s`` (default: none)."""

    def coords(self, x: Tensor) -> Tensor:
        """``z = V^T x`` on the first ``r`` coordinates: ``[B, N, *event] -> [B, N, r]``."""
        return self.batched(self.op.V_adjoint(self.flat(x))[:, : self.r], x.shape[0])

    def log_twist(self, z: Tensor, t: int) -> Tensor:
        if self.pinned(t):  # a point mass, satisfied by construction: its normaliser is left out
            return z.new_zeros(z.shape[:2])
        c, w = self.path(t)
        return _masked_log_normal(z, c, w, self.observed)

    def init(self, B: int, N: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        # Exact draws of p_T are weighted by the twist g_T. Draws of N(0, I) instead move to the
        # target N(0, I) g_T(x_T) / Z, a Gaussian product on the observed coordinates (an affine
        # move), with the predictive N(c_T; 0, 1 + w_T) as weight (times p_T / N(0, I) at the moved
        # particles where the chain starts from p_T). Moving exact p_T draws by the same map would
        # need the ratio [p_T / N](x_new) / [p_T / N](x_old), whose spread is large where p_T is far
        # from N(0, I) (few steps).
        t0 = self.times[0]
        x, exact = self.start(B, N, t0, generator)
        c, w = self.path(t0)
        z = self.coords(x)
        if exact:
            self.cache["log_g"] = log_g = self.log_twist(z, t0)
            return x, log_g
        prec = 1 + 1 / w
        z_new = (c / w) / prec + prec.rsqrt() * z
        x = x + self._lift(torch.where(self.observed, z_new - z, torch.zeros_like(z)))
        log_w = _masked_log_normal(torch.zeros_like(z), c, 1 + w, self.observed)
        log_ratio = self.start_log_ratio(x, t0)
        self.cache["log_g"] = self.log_twist(z_new, t0)
        return x, log_w if log_ratio is None else log_w + log_ratio

    def step(self, k: int, t: int, s: int, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        log_g_t = self.cache.pop("log_g", None)
        if log_g_t is None:  # after an MCMC move
            log_g_t = self.log_twist(self.coords(x), t)
        self.advance(t, s, generator)
        mean, v = self.kernel(self.denoise(x, t), t, s, like=x)
        if s == CLEAN and self.noiseless:  # observed coordinates become y~; nothing to weigh
            return self.replace(mean, self.y_tilde[:, None]), -log_g_t
        if s == CLEAN or v == 0.0:  # deterministic last step: weight by the true likelihood
            x_s = mean
            new = self.problem.log_likelihood(x_s) if s == CLEAN else self.log_twist(self.coords(x_s), s)
            if s != CLEAN:
                self.cache["log_g"] = new
            return x_s, new - log_g_t
        c, w = self.path(s)
        mu = self.coords(mean)  # [B, N, r]
        if self.pinned(s):  # the twist is a point mass at c: set the observed coordinates to it
            x_s = self.replace(mean + v**0.5 * self.noise(x, generator), c)
            self.cache["log_g"] = x_s.new_zeros(x_s.shape[:2])  # log_twist at the point mass
            log_pred = _masked_log_normal(mu, c, torch.full_like(mu, v), self.observed)
            return x_s, log_pred + self.log_jacobian - log_g_t
        prec = 1 / v + 1 / w
        post_mean = (mu / v + c / w) / prec
        # x_s = mean + sqrt(v) eps, then the observed coordinates are replaced by their
        # Gaussian-product draw: move along V by the difference (V orthogonal).
        eps = self.noise(x, generator)
        x_s = mean + v**0.5 * eps
        z_s = self.coords(x_s)
        z_new = post_mean + prec.rsqrt() * (z_s - mu) / v**0.5  # same standard normal, new law
        delta = torch.where(self.observed, z_new - z_s, torch.zeros_like(z_s))
        x_s = x_s + self._lift(delta)
        log_pred = _masked_log_normal(mu, c, v + w, self.observed)
        new = self.log_twist(z_new, s)
        self.cache["log_g"] = new
        return x_s, log_pred - log_g_t

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

    def log_target(self, k: int, x: Tensor) -> Tensor:
        t = self.times[k + 1]
        return self.prior.log_prob(self.flat(x), t).reshape(x.shape[:2]) + self.log_twist(self.coords(x), t)


def _masked_log_normal(z: Tensor, c: Tensor, var: Tensor, mask: Tensor) -> Tensor:
    """``sum_{i in mask} log N(c_i; z_i, var_i)``: ``[B, N, r] -> [B, N]``."""
    var = torch.where(mask, var, torch.ones_like(var))
    terms = -0.5 * (c - z).pow(2) / var - 0.5 * torch.log(2 * math.pi * var)
    return torch.where(mask, terms, torch.zeros_like(terms)).sum(-1)
