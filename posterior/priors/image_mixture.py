"""A Gaussian mixture on images whose components are diagonal in a Kronecker eigenbasis.

Component ``k`` is ``N(mu_k, Sigma_k)`` on ``[C, H, W]`` images with

    Sigma_k = a_k^2 (R_C kron K_H(l_k) kron K_W(l_k)) + w^2 I,

``K_n(l)`` the squared-exponential correlation ``exp(-(i - j)^2 / (2 l^2))`` between the ``n`` rows
(columns) of pixels, ``R_C`` a correlation between channels (``rho`` off the diagonal), ``a_k`` a
per-component amplitude, ``l_k`` a per-component length scale and ``w^2`` a small white term. With
``K_n = Q_n diag(g_n) Q_n^T`` the covariance is ``Q_k diag(lam_k) Q_k^T`` with ``Q_k = Q_C kron
Q_H kron Q_W`` and ``lam_k = a_k^2 g_C g_H g_W + w^2``, so every noised marginal
``p_t = sum_k w_k N(sqrt(abar_t) mu_k, Q_k diag(abar_t lam_k + 1 - abar_t) Q_k^T)`` has an exact
score, density, denoiser and ``p(x_0 | x_t)`` at the cost of three small matrix products per
component: ``O(n d (C + H + W) K)`` per call, no ``d x d`` matrix (``d = C H W``). This is the prior
of :func:`posterior.problems_image.gmm_image`, the image-sized problem with a known posterior.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior._utils import as_generator, check_count
from posterior.priors.base import DiffusionPrior
from posterior.schedule import CLEAN, NoiseSchedule, VPSchedule

__all__ = ["ImageMixturePrior", "rbf_correlation"]


def rbf_correlation(n: int, length: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """``Tensor[n, n]``: ``exp(-(i - j)^2 / (2 length^2))``."""
    i = torch.arange(n, dtype=dtype)
    return torch.exp(-0.5 * (i[:, None] - i[None, :]).pow(2) / length**2)


def _eig(K: Tensor) -> tuple[Tensor, Tensor]:
    g, Q = torch.linalg.eigh(0.5 * (K + K.T))
    return g.clamp_min(0.0), Q


class ImageMixturePrior(DiffusionPrior):
    """Exact diffusion prior for ``x_0 ~ sum_k w_k N(mu_k, Sigma_k)`` on ``[C, H, W]`` images
    (module docstring for ``Sigma_k``).

    Args:
        weights: ``Tensor[K]``, positive, summing to one.
        means: ``Tensor[K, C, H, W]``.
        amplitudes: ``Tensor[K]``, the per-component standard deviation ``a_k`` (positive).
        lengths: ``Tensor[K]``, the per-component correlation length ``l_k`` in pixels (positive).
        white: the standard deviation ``w > 0`` of the white term.
        rho: the correlation between channels, in ``(-1 / (C - 1), 1)``.
        schedule: the noise schedule (default: DDPM linear, 1000 steps).
        max_batch_size: evaluate at most this many images at once.
    """

    prediction_type = "epsilon"
    has_closed_form_sample = True

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        amplitudes: Tensor,
        lengths: Tensor,
        white: float = 0.05,
        rho: float = 0.5,
        schedule: NoiseSchedule | None = None,
        max_batch_size: int | None = 1024,
    ) -> None:
        super().__init__()
        means = torch.as_tensor(means)
        if means.dim() != 4:
            raise ValueError(f"means must be Tensor[K, C, H, W], got shape {list(means.shape)}")
        K, C, H, W = means.shape
        dt, dev = means.dtype, means.device
        w, a, ls = (
            torch.as_tensor(v, dtype=torch.float64).reshape(-1).cpu() for v in (weights, amplitudes, lengths)
        )
        for name, v in (("weights", w), ("amplitudes", a), ("lengths", ls)):
            if v.numel() != K or not torch.isfinite(v).all() or (v <= 0).any():
                raise ValueError(f"{name} must be {K} positive finite numbers, got {v.tolist()}")
        if abs(float(w.sum()) - 1) > 1e-4:
            raise ValueError(f"weights must sum to one, they sum to {float(w.sum())}")
        if not (math.isfinite(white) and white > 0):
            raise ValueError(f"white must be a positive number, got {white!r}")
        if C > 1 and not -1 / (C - 1) < rho < 1:
            raise ValueError(f"rho must lie in ({-1 / (C - 1):.3g}, 1) for {C} channels, got {rho!r}")
        if schedule is not None and not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule or VPSchedule.linear()
        self.event_shape = (C, H, W)
        self.max_batch_size = max_batch_size
        self.params = {"weights": w, "amplitudes": a, "lengths": ls, "white": float(white), "rho": float(rho)}
        self._means = means
        # kernels and eigenbases in float64 (kept for the oracle), cast copies for the samplers
        R = (1 - rho) * torch.eye(C, dtype=torch.float64) + rho
        self.kernels = {"C": R, "H": [rbf_correlation(H, float(li)) for li in ls]}
        self.kernels["W"] = [rbf_correlation(W, float(li)) for li in ls]
        gC, QC = _eig(R)
        eH = [_eig(k) for k in self.kernels["H"]]
        eW = [_eig(k) for k in self.kernels["W"]]
        lam = torch.stack(
            [
                a[k] ** 2 * gC[:, None, None] * eH[k][0][None, :, None] * eW[k][0][None, None, :] + white**2
                for k in range(K)
            ]
        )  # [K, C, H, W]
        self.basis64 = tuple(
            q.to(dev) for q in (QC, torch.stack([e[1] for e in eH]), torch.stack([e[1] for e in eW]))
        )
        self.lam64 = lam.to(dev)
        self.basis = tuple(q.to(device=dev, dtype=dt) for q in self.basis64)
        self.lam = lam.to(device=dev, dtype=dt)
        self.log_weights = w.log().to(device=dev, dtype=dt)

    # ----------------------------------------------------------------- properties
    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    @property
    def means(self) -> Tensor:
        """``Tensor[K, C, H, W]``."""
        return self._means

    @property
    def num_components(self) -> int:
        return self._means.shape[0]

    @property
    def device(self) -> torch.device:
        return self._means.device

    @property
    def dtype(self) -> torch.dtype:
        return self._means.dtype

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ImageMixturePrior:
        """The same mixture on ``device`` / ``dtype``."""
        p = self.params
        return ImageMixturePrior(
            p["weights"], self._means.to(device=device, dtype=dtype), p["amplitudes"], p["lengths"],
            p["white"], p["rho"], self.schedule, self.max_batch_size,
        )  # fmt: skip

    # ----------------------------------------------------------------- the Kronecker basis
    def to_basis(self, x: Tensor, k: int, basis: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """``Q_k^T x`` for ``x: Tensor[n, C, H, W]`` (same shape)."""
        QC, QH, QW = basis or self.basis
        z = x @ QW[k]
        z = QH[k].T @ z
        return z if QC.shape[0] == 1 else torch.einsum("dc,nchw->ndhw", QC.T, z)

    def from_basis(self, z: Tensor, k: int, basis: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """``Q_k z`` for ``z: Tensor[n, C, H, W]`` (same shape)."""
        QC, QH, QW = basis or self.basis
        x = z @ QW[k].T
        x = QH[k] @ x
        return x if QC.shape[0] == 1 else torch.einsum("cd,ndhw->nchw", QC, x)

    def cov_apply(self, x: Tensor, k: int, power: float = 1.0) -> Tensor:
        """``Sigma_k^power x`` for ``x: Tensor[n, C, H, W]`` in float64 (the oracle's products)."""
        z = self.to_basis(x.double(), k, self.basis64)
        return self.from_basis(z * self.lam64[k].pow(power), k, self.basis64)

    # ----------------------------------------------------------------- densities and the score
    def _component_terms(self, x: Tensor, t: int) -> tuple[Tensor, list[Tensor]]:
        """``log w_k + log N(x; m_k, S_k)``: ``[n, K]`` and ``-S_k^{-1}(x - m_k)`` per component."""
        abar = 1.0 if t == CLEAN else self.schedule.alpha_bar(t).item()
        var = abar * self.lam + (1 - abar)  # [K, C, H, W]
        logj, scores = [], []
        d = x[0].numel()
        for k in range(self.num_components):
            z = self.to_basis(x - abar**0.5 * self._means[k], k)
            quad = (z.pow(2) / var[k]).flatten(1).double().sum(1)
            logdet = var[k].double().log().sum()
            logj.append(self.log_weights[k].double() - 0.5 * (quad + logdet + d * math.log(2 * math.pi)))
            scores.append(-self.from_basis(z / var[k], k))
        return torch.stack(logj, -1), scores

    def model_output(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Exact noise prediction ``eps = -sqrt(1 - abar_t) grad log p_t(x_t)``."""
        out = torch.empty_like(x_t)
        for ti in t.unique().tolist():
            rows = t == ti
            out[rows] = -((1 - self.schedule.alpha_bar(ti).item()) ** 0.5) * self.marginal_score(
                x_t[rows], ti
            )
        return out

    def marginal_score(self, x: Tensor, t: int) -> Tensor:
        """``grad log p_t(x)`` for ``x: Tensor[n, C, H, W]``."""
        logj, scores = self._component_terms(x, t)
        resp = torch.softmax(logj, -1).to(x.dtype)  # [n, K]
        return sum(resp[:, k, None, None, None] * s for k, s in enumerate(scores))

    def log_prob(self, x: Tensor, t: int = CLEAN) -> Tensor:
        """Exact ``log p_t(x)`` for ``x: Tensor[n, C, H, W]``; returns ``Tensor[n]``."""
        self._check_input(x)
        return torch.logsumexp(self._component_terms(x, t)[0], -1).to(x.dtype)

    # ----------------------------------------------------------------- exact draws
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | int | None = None,
        *,
        num_steps: int | None = None,
        eta: float = 1.0,
        progress: bool = False,
    ) -> Tensor:
        """Exact draws ``Tensor[num_samples, C, H, W]``; with ``num_steps``, ancestral sampling instead."""
        check_count(num_samples, "num_samples")
        if num_steps is not None:
            return super().sample(num_samples, generator, num_steps=num_steps, eta=eta, progress=progress)
        gen = as_generator(generator, self.device)
        comp = torch.multinomial(self.weights, num_samples, replacement=True, generator=gen)
        # mu_k + Q_k (sqrt(lam_k) eps) per row, with k = comp[row]
        eps = torch.randn(num_samples, *self.event_shape, generator=gen, device=self.device, dtype=self.dtype)
        out = torch.empty_like(eps)
        for k in comp.unique().tolist():
            rows = comp == k
            out[rows] = self._means[k] + self.from_basis(self.lam[k].sqrt() * eps[rows], k)
        return out

    def sample_marginal(self, num_samples: int, t: int, generator: torch.Generator) -> Tensor:
        """Exact draws ``Tensor[num_samples, C, H, W]`` of ``p_t``."""
        x0 = self.sample(num_samples, generator)
        if t == CLEAN:
            return x0
        abar = self.schedule.alpha_bar(t).item()
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return abar**0.5 * x0 + (1 - abar) ** 0.5 * eps

    def sample_x0(self, x_t: Tensor, t: int, generator: torch.Generator) -> Tensor:
        """Exact draws of ``p(x_0 | x_t)`` for ``x_t: Tensor[n, C, H, W]``: the component by its
        responsibility, then per eigen-coordinate ``N(mu + g z, lam (1 - a) / (a lam + 1 - a))``
        with ``z = Q_k^T (x_t - sqrt(a) mu_k)``, ``g = sqrt(a) lam / (a lam + 1 - a)``."""
        self._check_input(x_t)
        if t == CLEAN:
            return x_t.clone()
        a = self.schedule.alpha_bar(t).item()
        logj, _ = self._component_terms(x_t, t)
        comp = torch.multinomial(torch.softmax(logj, -1).to(x_t.device), 1, generator=generator)[:, 0]
        out = torch.empty_like(x_t)
        eps = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        for k in comp.unique().tolist():
            rows = comp == k
            lam = self.lam[k]
            z = self.to_basis(x_t[rows] - a**0.5 * self._means[k], k)
            mean = a**0.5 * lam / (a * lam + 1 - a) * z
            std = (lam * (1 - a) / (a * lam + 1 - a)).sqrt()
            out[rows] = self._means[k] + self.from_basis(mean + std * eps[rows], k)
        return out

    # ----------------------------------------------------------------- moments
    def component_variances(self) -> Tensor:
        """``diag(Sigma_k)`` as ``Tensor[K, C, H, W]`` (float64)."""
        QC, QH, QW = (q.pow(2) for q in self.basis64)
        K = self.num_components
        return torch.stack([self.from_basis(self.lam64[k][None], k, (QC, QH, QW))[0] for k in range(K)])

    def moments(self) -> tuple[Tensor, Tensor]:
        """Exact per-pixel mean and variance, each ``Tensor[C, H, W]``."""
        w = self.params["weights"].to(self.device)[:, None, None, None]
        mu = self._means.double()
        mean = (w * mu).sum(0)
        var = (w * (self.component_variances() + mu.pow(2))).sum(0) - mean.pow(2)
        return mean.to(self._means), var.to(self._means)

    def covariance(self) -> Tensor:
        """Exact covariance over the flattened image, ``Tensor[d, d]`` (dense: ``d^2`` numbers)."""
        p, (C, H, W) = self.params, self.event_shape
        mu = self._means.double().cpu().reshape(self.num_components, -1)
        w = p["weights"]
        mean = w @ mu
        centred = mu - mean
        cov = (centred.T * w) @ centred + p["white"] ** 2 * torch.eye(C * H * W, dtype=torch.float64)
        for k in range(self.num_components):
            kron = torch.kron(self.kernels["C"], torch.kron(self.kernels["H"][k], self.kernels["W"][k]))
            cov += w[k] * p["amplitudes"][k] ** 2 * kron
        return cov.to(device=self.device, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"ImageMixturePrior(K={self.num_components}, event={list(self.event_shape)}, {self.schedule})"
