"""A Gaussian-mixture prior whose every noised marginal is known in closed form.

Under ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` a mixture stays a mixture:
``p_t = sum_k w_k N(sqrt(abar_t) mu_k, abar_t Sigma_k + (1 - abar_t) I)``, so the score, the
Tweedie denoiser and the density are exact. Any schedule ``x_t = alpha_t x_0 + sigma_t eps``
(VP, EDM, flow) works through its VP-equivalent ``abar_t`` (see :mod:`posterior.schedule`): the
methods below speak of the VP variable, and :meth:`GaussianMixturePrior.native_marginal` gives
the marginal of the native ``x_t``. This is the oracle against which the samplers are
proven (the MCGdiff benchmark of Cardoso et al., ICLR 2024, uses it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from posterior._utils import (
    SUPPORTED_DTYPES,
    UNSUPPORTED_DTYPE,
    as_generator,
    check_count,
    check_device,
    check_dtype,
)
from posterior.distributions import GaussianMixture
from posterior.priors.base import DiffusionPrior
from posterior.schedule import CLEAN, NoiseSchedule, VPSchedule

__all__ = ["GaussianMixturePrior"]


class GaussianMixturePrior(DiffusionPrior):
    """Exact diffusion prior for ``x_0 ~ sum_k w_k N(mu_k, Sigma_k)`` in ``R^d``.

    Args:
        weights: ``Tensor[K]``, non-negative, summing to one.
        means: ``Tensor[K, d]``.
        covs: ``Tensor[K, d, d]`` positive definite (or ``Tensor[K, d]`` variances: diagonal).
        schedule: the noise schedule, any :class:`~posterior.schedule.NoiseSchedule`
            (``VPSchedule``, ``EDMSchedule``, ``FlowSchedule``; default: DDPM linear, 1000 steps).
        max_batch_size: evaluate at most this many samples at once.
    """

    prediction_type = "epsilon"
    has_closed_form_sample = True

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        covs: Tensor,
        schedule: NoiseSchedule | None = None,
        max_batch_size: int | None = 65536,
    ) -> None:
        super().__init__()
        weights, means, covs = (torch.as_tensor(v) for v in (weights, means, covs))
        if not means.is_floating_point():
            means = means.float()
        if weights.dim() != 1 or means.dim() != 2:
            raise ValueError(
                f"expected weights [K] and means [K, d], got {list(weights.shape)}, {list(means.shape)}"
            )
        if {weights.device, covs.device} != {means.device} or {weights.dtype, covs.dtype} != {means.dtype}:
            raise ValueError("weights, means and covs must share a device and dtype")
        if means.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                f"GaussianMixturePrior: dtype {means.dtype} is not supported: {UNSUPPORTED_DTYPE}"
            )
        diagonal = covs.dim() == 2
        if not diagonal and _is_diagonal(covs):  # identity-like covariances: use the fast path
            covs, diagonal = covs.diagonal(dim1=-2, dim2=-1).clone(), True
        self.distribution = GaussianMixture(weights, means, covs, diagonal=diagonal)
        if schedule is not None and not isinstance(schedule, NoiseSchedule):
            raise TypeError(
                f"schedule must be a noise schedule (VPSchedule, EDMSchedule, FlowSchedule), got "
                f"{type(schedule).__name__}"
            )
        self.schedule = schedule or VPSchedule.linear()
        self.event_shape = (means.shape[-1],)
        self.max_batch_size = max_batch_size
        self._marginals: dict[int, GaussianMixture] = {}

    @property
    def weights(self) -> Tensor:
        return self.distribution.weights

    @property
    def means(self) -> Tensor:
        return self.distribution.means

    @property
    def covs(self) -> Tensor:
        """Full component covariances ``Tensor[K, d, d]``."""
        return self.distribution.full_covs()

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> GaussianMixturePrior:
        """The same mixture (schedule, batch size) with its tensors on ``device`` / ``dtype``."""
        d, device, dtype = self.distribution, check_device(device), check_dtype(dtype)
        moved = [v.to(device=device, dtype=dtype) for v in (d.weights, d.means, d.covs)]
        return GaussianMixturePrior(*moved, schedule=self.schedule, max_batch_size=self.max_batch_size)

    def marginal(self, t: int) -> GaussianMixture:
        """The noised marginal ``p_t`` (``t = -1``: the clean prior), cached per time."""
        if t == CLEAN:
            return self.distribution
        if t not in self._marginals:
            d = self.distribution
            abar = self.schedule.alpha_bar(t).item()
            if d.diagonal:
                covs = abar * d.covs + (1 - abar)
            else:
                covs = abar * d.covs + (1 - abar) * torch.eye(d.dim, dtype=d.covs.dtype, device=d.covs.device)
            self._marginals[t] = GaussianMixture(
                d.weights, abar**0.5 * d.means, covs, diagonal=d.diagonal, validate=False
            )
        return self._marginals[t]

    def native_marginal(self, t: int) -> GaussianMixture:
        """The marginal of the native ``x_t = alpha_t x_0 + sigma_t eps``:
        ``sum_k w_k N(alpha_t mu_k, alpha_t^2 Sigma_k + sigma_t^2 I)`` (the VP marginal scaled by
        ``s_t = sqrt(alpha_t^2 + sigma_t^2)``); its ``score`` is the native score."""
        d = self.distribution
        if t == CLEAN:
            return d
        a, sig = self.schedule.alpha(t).item(), self.schedule.sigma(t).item()
        if d.diagonal:
            covs = a**2 * d.covs + sig**2
        else:
            covs = a**2 * d.covs + sig**2 * torch.eye(d.dim, dtype=d.covs.dtype, device=d.covs.device)
        return GaussianMixture(d.weights, a * d.means, covs, diagonal=d.diagonal, validate=False)

    def sample_marginal(self, num_samples: int, t: int, generator: torch.Generator) -> Tensor:
        """Exact draws ``Tensor[num_samples, d]`` of ``p_t``."""
        return self.marginal(t).sample(num_samples, generator)

    def moments(self) -> tuple[Tensor, Tensor]:
        """Exact per-coordinate mean and variance of the mixture, each ``Tensor[d]``."""
        d = self.distribution
        return d.mean, d.covariance.diagonal()

    def covariance(self) -> Tensor:
        """Exact covariance of the mixture, ``Tensor[d, d]``."""
        return self.distribution.covariance

    def model_output(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Exact noise prediction ``eps = -sqrt(1 - abar_t) grad log p_t(x_t)``."""
        times = t.unique().tolist()
        if len(times) == 1:  # the usual case: one time for the whole batch
            sigma = (1 - self.schedule.alpha_bar(times[0]).item()) ** 0.5
            return -sigma * self.marginal(times[0]).score(x_t)
        out = torch.empty_like(x_t)
        for ti in times:  # samplers pass one time; loop only for mixed batches
            rows = t == ti
            sigma = (1 - self.schedule.alpha_bar(ti).item()) ** 0.5
            out[rows] = -sigma * self.marginal(ti).score(x_t[rows])
        return out

    def log_prob(self, x: Tensor, t: int = CLEAN) -> Tensor:
        """Exact ``log p_t(x)`` for ``x: Tensor[n, d]``; returns ``Tensor[n]``."""
        return self.marginal(t).log_prob(x)

    def sample_x0(self, x_t: Tensor, t: int, generator: torch.Generator) -> Tensor:
        """Exact draws ``x_0 ~ p(x_0 | x_t)`` for ``x_t: Tensor[n, d]``; returns ``Tensor[n, d]``.

        ``x_t = sqrt(a) x_0 + sqrt(1 - a) eps`` with ``a = abar_t``: the denoising posterior is a
        mixture again. Its weights are the component responsibilities under ``p_t``; component
        ``k`` is ``N(mu_k + G_k (x_t - sqrt(a) mu_k), Sigma_k - G_k S_k G_k^T)`` with
        ``S_k = a Sigma_k + (1 - a) I`` and ``G_k = sqrt(a) Sigma_k S_k^{-1}`` (a Kalman update).
        """
        self._check_input(x_t)
        if t == CLEAN:
            return x_t.clone()
        a = self.schedule.alpha_bar(t).item()
        d = self.distribution
        xd = x_t.double()
        n, dim = xd.shape
        resp = self.marginal(t).responsibilities(xd)  # [n, K]
        comp = torch.multinomial(resp.to(x_t.device), 1, generator=generator)[:, 0]  # [n]
        eps = torch.randn(n, dim, generator=generator, device=x_t.device, dtype=torch.float64)
        out = torch.empty_like(xd)
        mus, covs = d.means.double(), d.covs.double()
        for k in comp.unique().tolist():
            rows = comp == k
            mu, resid = mus[k], xd[rows] - a**0.5 * mus[k]
            if d.diagonal:  # coordinate-wise: G = sqrt(a) v / (a v + 1 - a), variance v - G sqrt(a) v
                gain = a**0.5 * covs[k] / (a * covs[k] + 1 - a)
                var = covs[k] - gain * a**0.5 * covs[k]
                out[rows] = mu + gain * resid + var.sqrt() * eps[rows]
            else:
                S = a * covs[k] + (1 - a) * torch.eye(dim, dtype=torch.float64, device=xd.device)
                gain = a**0.5 * torch.linalg.solve(S, covs[k]).T  # Sigma S^-1 (both symmetric)
                cov = covs[k] - gain @ S @ gain.T
                L = torch.linalg.cholesky(0.5 * (cov + cov.T))
                out[rows] = mu + resid @ gain.T + eps[rows] @ L.T
        return out.to(x_t.dtype)

    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | int | None = None,
        *,
        num_steps: int | None = None,
        eta: float = 1.0,
        progress: bool = False,
    ) -> Tensor:
        """Exact draws ``Tensor[num_samples, d]``; with ``num_steps`` given, ancestral sampling instead."""
        check_count(num_samples, "num_samples")
        if num_steps is not None:
            return super().sample(num_samples, generator, num_steps=num_steps, eta=eta, progress=progress)
        return self.distribution.sample(num_samples, as_generator(generator, self.device))

    def __repr__(self) -> str:
        K, d = self.distribution.num_components, self.event_shape[0]
        return f"GaussianMixturePrior(K={K}, d={d}, {self.schedule})"


def _is_diagonal(covs: Tensor) -> bool:
    off = covs - torch.diag_embed(covs.diagonal(dim1=-2, dim2=-1))
    return bool((off == 0).all())
