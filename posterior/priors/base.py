"""The interface every diffusion prior offers the samplers.

A prior is a denoiser on a noise schedule, seen by the samplers in its variance-preserving
parametrisation: ``x_t`` and ``t`` below are the VP variable and the integer time, ``abar_t`` the
schedule's VP-equivalent ``alpha_bar(t)`` (see :mod:`posterior.schedule`). A prior on a
variance-exploding (EDM) or flow-matching schedule maps ``x_t`` to its native
``schedule.to_native(x_t, t)`` inside :meth:`DiffusionPrior.model_output`; the noise prediction
and the denoiser ``x_0`` are the same in both parametrisations. Subclasses give one raw model output
(:meth:`DiffusionPrior.model_output`) in one parameterisation (``"epsilon"``, ``"sample"`` or
``"v_prediction"``); this module converts it, in one place, into the noise prediction, the
Tweedie denoiser ``E[x_0 | x_t]`` and the score ``grad log p_t(x_t)``. It also owns the chunking of
large particle batches (``max_batch_size``), the counters of network evaluations and
vector-Jacobian products, the DDPM/DDIM reverse kernel, and ancestral sampling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from posterior._utils import as_generator, check_count, progress_bar
from posterior.distributions import GaussianMixture
from posterior.schedule import CLEAN, NoiseSchedule

__all__ = ["PREDICTION_TYPES", "Denoised", "DiffusionPrior"]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class Denoised(NamedTuple):
    """Network predictions at ``(x_t, t)``, each ``Tensor[n, *event_shape]``."""

    eps: Tensor  # predicted noise
    x0: Tensor  # Tweedie denoiser E[x_0 | x_t]


class DiffusionPrior(ABC):
    """Base class of diffusion priors.

    Attributes:
        schedule: the :class:`~posterior.schedule.NoiseSchedule` the model was trained on.
        event_shape: shape of one sample ``x`` (``(d,)`` or ``(C, H, W)``).
        prediction_type: what :meth:`model_output` returns.
        max_batch_size: largest batch sent to the network at once (``None``: no limit).
        clip_denoised: optional ``(low, high)`` range to clip ``x0`` into (images: ``(-1, 1)``).
        num_evals / num_vjps: running counts of per-sample network evaluations and VJPs.
        has_closed_form_sample: whether :meth:`sample` draws exactly and cheaply in closed form
            (the Gaussian mixture) instead of running the reverse chain.
        distribution: the clean prior as a :class:`~posterior.GaussianMixture` where it is one
            (then a linear Gaussian problem has a closed-form posterior and evidence), else ``None``.
    """

    schedule: NoiseSchedule
    event_shape: tuple[int, ...]
    prediction_type: str = "epsilon"
    max_batch_size: int | None = None
    clip_denoised: tuple[float, float] | None = None
    has_closed_form_sample: bool = False
    distribution: GaussianMixture | None = None

    def __init__(self) -> None:
        self.num_evals = 0
        self.num_vjps = 0

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def model_output(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Raw prediction for ``x_t: Tensor[n, *event_shape]`` at times ``t: LongTensor[n]``."""

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> DiffusionPrior:
        """This prior on ``device`` / ``dtype``; a prior that cannot move refuses by name."""
        if (device is None or torch.device(device) == self.device) and dtype in (None, self.dtype):
            return self
        raise NotImplementedError(f"{type(self).__name__} cannot move to another device or dtype")

    def log_prob(self, x: Tensor, t: int = CLEAN) -> Tensor:
        """``log p_t(x)`` for ``x: Tensor[n, *event_shape]``; only priors with a density."""
        raise NotImplementedError(f"{type(self).__name__} has no tractable log density")

    @property
    def has_log_prob(self) -> bool:
        return type(self).log_prob is not DiffusionPrior.log_prob

    def sample_marginal(self, num_samples: int, t: int, generator: torch.Generator) -> Tensor:
        """Exact draws ``Tensor[num_samples, *event_shape]`` of the noised marginal ``p_t``; only
        priors where :attr:`has_exact_marginal` (the Gaussian mixture)."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw its noised marginals exactly")

    @property
    def has_exact_marginal(self) -> bool:
        return type(self).sample_marginal is not DiffusionPrior.sample_marginal

    # ----------------------------------------------------------------- moments
    def moments(self) -> tuple[Tensor, Tensor]:
        """Per-coordinate mean and variance of ``x_0``, each ``Tensor[*event_shape]``.

        Exact where the prior knows them (the Gaussian mixture); otherwise given by
        :meth:`set_moments`, or estimated once from the prior's own ancestral draws
        (:attr:`moment_draws` draws, :attr:`moment_steps` DDPM steps, seed 0) and cached. Twisted
        samplers use them to centre and scale their twists.
        """
        if self._moments is None:
            self._estimate_moments()
        return self._moments

    def covariance(self) -> Tensor:
        """Covariance of ``x_0`` over the flattened event, ``Tensor[d, d]``.

        Exact where the prior knows it (the Gaussian mixture); otherwise given by
        :meth:`set_moments`, or estimated with :meth:`moments` from the same draws, shrunk a tenth
        of the way to its diagonal (``n`` draws give a rank ``n - 1`` estimate, singular when
        ``n <= d``). TDS's ``prior_var="covariance"`` twist uses it."""
        if self._covariance is None:
            if self._moments is not None:  # moments given without a covariance: diagonal
                return torch.diag(self._moments[1].reshape(-1))
            self._estimate_moments()
        return self._covariance

    def _estimate_moments(self) -> None:
        """Mean, variance and covariance from the prior's own draws: a one-off cost, kept out of
        the samplers' counters, and stored on disk for a network prior
        (:mod:`posterior.priors.moment_cache`: :attr:`moment_file` beside shipped weights, else the
        user cache, keyed by a hash of the weights), so that the next process reads it back."""
        from posterior.priors import moment_cache

        key = moment_cache.fingerprint(self)
        user = None if key is None else moment_cache.cache_path(key)
        if key is not None:
            for path in (self.moment_file, user):
                found = None if path is None else moment_cache.load_moments(Path(path), key, self)
                if found is not None:
                    self._moments, self._covariance = found[:2], found[2]
                    return
        self._moments, self._covariance = self.estimate_moments()
        if key is not None and user is not None:
            moment_cache.save_moments(user, key, *self._moments, self._covariance)

    def estimate_moments(self) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """``((mean, var), covariance)`` estimated from :attr:`moment_draws` ancestral draws of
        :attr:`moment_steps` DDPM steps (seed 0), always computed (no cache); the covariance is
        shrunk a tenth of the way to its diagonal."""
        counts = self.num_evals, self.num_vjps
        gen = torch.Generator(device=self.device).manual_seed(0)
        x = self.sample(self.moment_draws, gen, num_steps=self.moment_steps)
        flat = x.reshape(x.shape[0], -1).double()
        cov = torch.cov(flat.T).reshape(flat.shape[1], flat.shape[1])
        shrink = 0.1
        cov = (1 - shrink) * cov + shrink * torch.diag(cov.diagonal())
        self.num_evals, self.num_vjps = counts
        return (x.mean(0), x.var(0)), cov.to(self.dtype)

    def set_moments(self, mean: Tensor, var: Tensor, covariance: Tensor | None = None) -> None:
        """Give the prior's per-coordinate mean and variance (``Tensor[*event_shape]`` or scalars)
        and, optionally, its covariance ``Tensor[d, d]`` over the flattened event."""
        shape = tuple(self.event_shape)
        mean = torch.as_tensor(mean, device=self.device, dtype=self.dtype).expand(shape).clone()
        var = torch.as_tensor(var, device=self.device, dtype=self.dtype).expand(shape).clone()
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all() and (var > 0).all()):
            raise ValueError("set_moments: mean must be finite and var finite and > 0")
        if covariance is not None:
            d = mean.numel()
            covariance = torch.as_tensor(covariance, device=self.device, dtype=self.dtype)
            if covariance.shape != (d, d) or not torch.isfinite(covariance).all():
                raise ValueError(f"set_moments: covariance must be a finite [{d}, {d}] tensor")
        self._moments, self._covariance = (mean, var), covariance

    _moments: tuple[Tensor, Tensor] | None = None
    _covariance: Tensor | None = None
    moment_draws: int = 256
    moment_steps: int = 25
    #: a stored estimate checked before the user cache (a shipped prior's ``moments.safetensors``)
    moment_file: Path | None = None

    def denoiser_reference(self, t: int) -> tuple[Tensor, Tensor]:
        """Draws ``x_0`` of the prior and the denoiser's ``x0_hat`` at their forward-noised
        ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, each ``Tensor[n, *event_shape]``
        (``n =`` :attr:`reference_draws`), cached per ``t``.

        ``E|x0_hat(x_t) - x_0|^2`` is the posterior variance of ``x_0`` given ``x_t`` plus the
        denoiser's own error: how much a twist may trust ``x0_hat`` at ``t`` (large where the
        network's prediction from nearly pure noise is unreliable). ``x_0`` are exact draws where
        :attr:`has_closed_form_sample`, otherwise ancestral draws over :attr:`moment_steps` DDPM
        steps (seed 1); the noise has seed ``t``. A one-off cost, kept out of the call counters.
        """
        cache: dict[int, tuple[Tensor, Tensor]] = self.__dict__.setdefault("_reference", {})
        if t not in cache:
            counts = self.num_evals, self.num_vjps
            if "_reference_x0" not in self.__dict__:
                gen = torch.Generator(device=self.device).manual_seed(1)
                steps = None if self.has_closed_form_sample else self.moment_steps
                self._reference_x0 = self.sample(self.reference_draws, gen, num_steps=steps)
            x0 = self._reference_x0
            gen = torch.Generator(device=self.device).manual_seed(int(t))
            eps = torch.randn(x0.shape, generator=gen, device=self.device, dtype=self.dtype)
            abar = self.schedule.alpha_bar(t).item()
            cache[t] = (x0, self.denoise(abar**0.5 * x0 + (1 - abar) ** 0.5 * eps, t).x0)
            self.num_evals, self.num_vjps = counts
        return cache[t]

    #: draws behind :meth:`denoiser_reference`
    reference_draws: int = 64

    def sample_x0(self, x_t: Tensor, t: int, generator: torch.Generator) -> Tensor:
        """Exact draws ``x_0 ~ p(x_0 | x_t)`` for ``x_t: Tensor[n, *event_shape]``; only priors
        where :attr:`has_exact_x0_sampler` (a network prior can only simulate its reverse chain)."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw p(x_0 | x_t) exactly")

    @property
    def has_exact_x0_sampler(self) -> bool:
        """Whether :meth:`sample_x0` draws the denoising posterior ``p(x_0 | x_t)`` exactly."""
        return type(self).sample_x0 is not DiffusionPrior.sample_x0

    # ----------------------------------------------------------------- conversions
    def _coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """``sqrt(abar_t)`` and ``sqrt(1 - abar_t)`` shaped to broadcast against ``like``."""
        abar = self.schedule.alpha_bar(t, like=like).reshape(-1, *([1] * (like.dim() - 1)))
        return abar.sqrt(), (1 - abar).sqrt()

    def _convert(self, out: Tensor, x_t: Tensor, t: Tensor) -> Denoised:
        a, s = self._coefficients(t, x_t)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x_t - s * eps) / a
        elif self.prediction_type == "sample":
            x0 = out
            eps = (x_t - a * x0) / s
        elif self.prediction_type == "v_prediction":  # v = a eps - s x0 (Salimans & Ho, 2022)
            x0 = a * x_t - s * out
            eps = s * x_t + a * out
        else:
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}; use {PREDICTION_TYPES}")
        if self.clip_denoised is not None:
            x0 = x0.clamp(*self.clip_denoised)
            eps = (x_t - a * x0) / s
        return Denoised(eps, x0)

    def _times(self, t: int | Tensor, n: int, device: torch.device) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.long, device=device)
        if t.dim() == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"t must be a scalar or have shape [{n}], got {tuple(t.shape)}")
        if (t < 0).any():
            raise ValueError("the denoiser is only defined for times t >= 0")
        return t

    def _check_input(self, x_t: Tensor) -> None:
        if tuple(x_t.shape[1:]) != tuple(self.event_shape):
            raise ValueError(
                f"expected x_t of shape [n, {', '.join(map(str, self.event_shape))}], got {list(x_t.shape)}"
            )

    # ----------------------------------------------------------------- evaluation
    def _chunks(self, n: int) -> list[slice]:
        size = n if not self.max_batch_size else max(1, self.max_batch_size)
        return [slice(i, min(i + size, n)) for i in range(0, n, size)] or [slice(0, 0)]

    def denoise(self, x_t: Tensor, t: int | Tensor) -> Denoised:
        """Noise prediction and Tweedie denoiser for ``x_t: Tensor[n, *event_shape]``.

        Runs without autograd, in chunks of ``max_batch_size``.
        """
        self._check_input(x_t)
        t = self._times(t, x_t.shape[0], x_t.device)
        eps, x0 = [], []
        with torch.no_grad():
            for sl in self._chunks(x_t.shape[0]):
                d = self._convert(self.model_output(x_t[sl], t[sl]), x_t[sl], t[sl])
                eps.append(d.eps)
                x0.append(d.x0)
        self.num_evals += x_t.shape[0]
        return Denoised(torch.cat(eps), torch.cat(x0))

    def denoise_with_grad(
        self,
        x_t: Tensor,
        t: int | Tensor,
        fn: Callable[[Denoised, Tensor, slice], Tensor],
    ) -> tuple[Denoised, Tensor, Tensor]:
        """Predictions plus the value and ``x_t``-gradient of a per-sample function of them.

        ``fn(denoised, x_t, rows) -> Tensor[n_chunk]`` is called on each chunk (``rows`` is the
        chunk's slice of the full batch, to pick per-sample data such as ``y``). One network
        evaluation and one vector-Jacobian product per sample.

        Returns ``(Denoised, value: Tensor[n], grad: Tensor[n, *event_shape])``, all detached.
        """
        self._check_input(x_t)
        t = self._times(t, x_t.shape[0], x_t.device)
        eps, x0, vals, grads = [], [], [], []
        for sl in self._chunks(x_t.shape[0]):
            with torch.enable_grad():
                x = x_t[sl].detach().requires_grad_(True)
                d = self._convert(self.model_output(x, t[sl]), x, t[sl])
                v = fn(d, x, sl)
                (g,) = torch.autograd.grad(v.sum(), x)
            eps.append(d.eps.detach())
            x0.append(d.x0.detach())
            vals.append(v.detach())
            grads.append(g)
        self.num_evals += x_t.shape[0]
        self.num_vjps += x_t.shape[0]
        return Denoised(torch.cat(eps), torch.cat(x0)), torch.cat(vals), torch.cat(grads)

    def denoise_vjp(self, x_t: Tensor, t: int | Tensor) -> tuple[Denoised, Callable[[Tensor], Tensor]]:
        """Predictions plus a closure applying the transposed Jacobian of the denoiser.

        Evaluates the network once (counted) and keeps its autograd graph, so that
        ``vjp(v: Tensor[n, *event_shape]) -> (d x0 / d x_t)^T v: Tensor[n, *event_shape]`` can be
        called repeatedly (each call counts one VJP per sample), as conjugate-gradient solves with
        the Tweedie covariance ``Cov[x_0 | x_t] = (1 - abar_t) / sqrt(abar_t) * d x0 / d x_t`` need
        (MMPS, Rozet et al., 2024). The graph lives as long as the closure.

        Returns ``(Denoised, vjp)``; the predictions are detached.
        """
        self._check_input(x_t)
        n = x_t.shape[0]
        t = self._times(t, n, x_t.device)
        graphs, eps, x0 = [], [], []
        for sl in self._chunks(n):
            with torch.enable_grad():
                x = x_t[sl].detach().requires_grad_(True)
                d = self._convert(self.model_output(x, t[sl]), x, t[sl])
            graphs.append((sl, x, d.x0))
            eps.append(d.eps.detach())
            x0.append(d.x0.detach())
        self.num_evals += n

        def vjp(v: Tensor) -> Tensor:
            if v.shape != x_t.shape:
                raise ValueError(f"vjp expects a Tensor{list(x_t.shape)}, got {list(v.shape)}")
            out = []
            for sl, x, x0_chunk in graphs:
                (g,) = torch.autograd.grad(
                    x0_chunk, x, grad_outputs=v[sl], retain_graph=True, allow_unused=True
                )
                out.append(torch.zeros_like(x) if g is None else g)
            self.num_vjps += n
            return torch.cat(out)

        return Denoised(torch.cat(eps), torch.cat(x0)), vjp

    def eps(self, x_t: Tensor, t: int | Tensor) -> Tensor:
        """Predicted noise, ``Tensor[n, *event_shape]``."""
        return self.denoise(x_t, t).eps

    def x0(self, x_t: Tensor, t: int | Tensor) -> Tensor:
        """Tweedie denoiser ``E[x_0 | x_t]``, ``Tensor[n, *event_shape]``."""
        return self.denoise(x_t, t).x0

    def score(self, x_t: Tensor, t: int | Tensor) -> Tensor:
        """``grad log p_t(x_t) = -eps / sqrt(1 - abar_t)``, ``Tensor[n, *event_shape]``."""
        t_ = self._times(t, x_t.shape[0], x_t.device)
        _, s = self._coefficients(t_, x_t)
        return -self.denoise(x_t, t_).eps / s

    # ----------------------------------------------------------------- reverse kernel
    def reverse_kernel(
        self, x_t: Tensor, t: int, s: int, eta: float = 1.0, denoised: Denoised | None = None
    ) -> tuple[Tensor, Tensor, Denoised]:
        """Gaussian reverse transition ``x_s ~ N(mean, std^2 I)`` from ``t`` to ``s < t``.

        DDIM with stochasticity ``eta`` (Song et al., 2021); ``eta = 1`` is the DDPM ancestral
        kernel ``q(x_s | x_t, x_0 = x0_hat)`` and ``eta = 0`` deterministic DDIM.

        Returns ``mean: Tensor[n, *event_shape]``, ``std``: a 0-d tensor, and the predictions.
        """
        if not t > s >= CLEAN:
            raise ValueError(f"need t > s >= -1, got t={t}, s={s}")
        if denoised is None:
            denoised = self.denoise(x_t, t)
        mean, std = ddim_step(self.schedule, denoised, t, s, eta, like=x_t)
        return mean, std, denoised

    # ----------------------------------------------------------------- sampling
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | int | None = None,
        *,
        num_steps: int | None = None,
        eta: float = 1.0,
        progress: bool = False,
    ) -> Tensor:
        """Ancestral samples, ``Tensor[num_samples, *event_shape]``.

        DDPM (``eta = 1``) or DDIM (``eta = 0`` deterministic) over ``num_steps`` times
        (default: every training step).
        """
        check_count(num_samples, "num_samples")
        gen = as_generator(generator, self.device)
        steps = self.schedule.num_train_steps if num_steps is None else num_steps
        x = torch.randn(num_samples, *self.event_shape, generator=gen, device=self.device, dtype=self.dtype)
        for t, s in progress_bar(self.schedule.time_pairs(steps), enabled=progress, desc="prior"):
            x, std, _ = self.reverse_kernel(x, t, s, eta)
            if s != CLEAN and eta > 0:
                x = x + std * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return x


def ddim_step(
    schedule: NoiseSchedule, denoised: Denoised, t: int, s: int, eta: float, like: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and std of the DDIM(eta) transition ``t -> s`` given the predictions at ``t``.

    ``sigma = eta sqrt((1-abar_s)/(1-abar_t)) sqrt(1 - abar_t/abar_s)``,
    ``mean = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps``.
    """
    abar_t = schedule.alpha_bar(t).item()
    abar_s = schedule.alpha_bar(s).item()
    var = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
    var = min(max(var, 0.0), 1 - abar_s)
    mean = abar_s**0.5 * denoised.x0 + max(1 - abar_s - var, 0.0) ** 0.5 * denoised.eps
    return mean, torch.tensor(var**0.5, device=like.device, dtype=like.dtype)
