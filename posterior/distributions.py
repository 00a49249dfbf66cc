"""Closed-form densities: a diagonal Gaussian's log-density and a batched Gaussian mixture with
exact sampling, density and score.

It is both the clean prior of :class:`~posterior.priors.GaussianMixturePrior` (and each of its
noised marginals ``p_t``) and the closed-form posterior of a linear Gaussian problem.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior._utils import as_generator

__all__ = ["GaussianMixture", "log_normal"]


def log_normal(x: Tensor, mean: Tensor | float, var: Tensor | float, mask: Tensor | None = None) -> Tensor:
    """``log N(x; mean, diag(var))`` summed over the last dim: ``[..., d] -> [...]``.

    ``mean`` and ``var`` broadcast against ``x``. With ``mask: BoolTensor[d]`` (broadcastable) only
    the coordinates where it holds count (``var`` may be anything, even ``0``, elsewhere)."""
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    if mask is not None:
        var = torch.where(mask, var, torch.ones_like(var))
    terms = -0.5 * (x - mean).pow(2) / var - 0.5 * torch.log(2 * math.pi * var)
    if mask is not None:
        terms = torch.where(mask, terms, torch.zeros_like(terms))
    return terms.sum(-1)


class GaussianMixture:
    """``sum_k w_k N(mu_k, Sigma_k)``, optionally batched over leading dims ``*b``.

    Args:
        weights: ``Tensor[*b, K]``, non-negative, summing to one.
        means: ``Tensor[*b, K, d]``.
        covs: ``Tensor[*b, K, d, d]`` (full, positive definite) or, with ``diagonal=True``,
            ``Tensor[*b, K, d]`` of variances. Leading dims broadcast against ``means``.
        diagonal: whether ``covs`` holds variances only (fast path for large ``d``).
        validate: check weights, shapes and positive definiteness.
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        covs: Tensor,
        *,
        diagonal: bool = False,
        validate: bool = True,
    ) -> None:
        self.weights, self.means, self.covs, self.diagonal = weights, means, covs, diagonal
        if validate:
            self._validate()
        # Cholesky factors in float64 for accuracy; cast back per use.
        if diagonal:
            self._scale = covs.double().sqrt()  # [*b, K, d]
        else:
            self._scale = torch.linalg.cholesky(covs.double())  # [*b, K, d, d]

    def _validate(self) -> None:
        w, m, c = self.weights, self.means, self.covs
        if m.dim() < 2 or w.shape[-1] != m.shape[-2]:
            raise ValueError(f"weights {tuple(w.shape)} and means {tuple(m.shape)} disagree on K")
        want = m.shape[-1:] if self.diagonal else (m.shape[-1], m.shape[-1])
        if c.shape[-len(want) :] != want or c.shape[-len(want) - 1] != m.shape[-2]:
            kind = "[K, d] variances" if self.diagonal else "[K, d, d] covariances"
            raise ValueError(f"covs {tuple(c.shape)} should be {kind} for means {tuple(m.shape)}")
        for name, v in (("weights", w), ("means", m), ("covs", c)):
            if not torch.isfinite(v).all():
                raise ValueError(f"{name} contain NaN or inf")
        if (w < 0).any():
            raise ValueError("mixture weights must be non-negative")
        total = w.double().sum(-1)
        if not torch.allclose(total, torch.ones_like(total), atol=1e-4):
            raise ValueError(f"mixture weights must sum to one, they sum to {total.flatten()[:4].tolist()}")
        if self.diagonal:
            if (c <= 0).any():
                raise ValueError("variances must be positive")
        else:
            if not torch.allclose(c, c.transpose(-1, -2), atol=1e-5 * (1 + c.abs().max().item())):
                raise ValueError("covariances must be symmetric")
            _, info = torch.linalg.cholesky_ex(c.double())
            if (info != 0).any():
                raise ValueError("covariances must be positive definite")

    # ----------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def num_components(self) -> int:
        return self.means.shape[-2]

    @property
    def batch_shape(self) -> torch.Size:
        return torch.broadcast_shapes(self.weights.shape[:-1], self.means.shape[:-2])

    @property
    def mean(self) -> Tensor:
        """``Tensor[*b, d]``."""
        return (self.weights.unsqueeze(-1) * self.means).sum(-2)

    @property
    def covariance(self) -> Tensor:
        """``Tensor[*b, d, d]``: within-component plus between-component covariance."""
        cov = torch.diag_embed(self.covs) if self.diagonal else self.covs
        w = self.weights[..., None, None]
        centred = self.means - self.mean.unsqueeze(-2)
        return (w * (cov + centred.unsqueeze(-1) * centred.unsqueeze(-2))).sum(-3)

    def full_covs(self) -> Tensor:
        """Component covariances as ``Tensor[*b, K, d, d]``."""
        return torch.diag_embed(self.covs) if self.diagonal else self.covs

    # ----------------------------------------------------------------- sampling
    def sample(self, num_samples: int, generator: torch.Generator | int | None = None) -> Tensor:
        """Exact draws, ``Tensor[*b, num_samples, d]``."""
        generator = as_generator(generator, self.means.device)
        b, K, d = self.batch_shape, self.num_components, self.dim
        w = self.weights.expand(*b, K).reshape(-1, K)
        comp = torch.multinomial(w, num_samples, replacement=True, generator=generator)  # [B', n]
        comp = comp.reshape(*b, num_samples)
        noise = torch.randn(
            *b, num_samples, d, generator=generator, device=self.means.device, dtype=self.means.dtype
        )
        means = self.means.expand(*b, K, d)
        out = torch.gather(means, -2, comp.unsqueeze(-1).expand(*b, num_samples, d))
        scale = self._scale.to(self.means.dtype)
        if self.diagonal:
            scale = scale.expand(*b, K, d)
            return out + noise * torch.gather(scale, -2, comp.unsqueeze(-1).expand(*b, num_samples, d))
        # One matmul per component (K is small); never a [n, d, d] gather.
        for k in range(K):
            hit = (comp == k).unsqueeze(-1)
            out = out + hit * (noise @ scale[..., k, :, :].transpose(-1, -2))
        return out

    # ----------------------------------------------------------------- density and score
    def _component_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Whitened residuals and log component joint densities for ``x``: ``[*b, n, d]``.

        Returns ``z: [*b, K, n, d]`` with ``z = L_k^{-1} (x - mu_k)`` and
        ``log w_k + log N(x; mu_k, Sigma_k)``: ``[*b, K, n]``.
        """
        xd = x.double()
        diff = xd.unsqueeze(-3) - self.means.double().unsqueeze(-2)  # [*b, K, n, d]
        if self.diagonal:
            scale = self._scale.unsqueeze(-2)
            z = diff / scale
            logdet = scale.log().sum(-1)  # [*b, K, 1]
        else:
            L = self._scale
            z = torch.linalg.solve_triangular(L, diff.transpose(-1, -2), upper=False).transpose(-1, -2)
            logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1).unsqueeze(-1)
        logn = -0.5 * z.pow(2).sum(-1) - logdet - 0.5 * self.dim * math.log(2 * math.pi)
        return z, self.weights.double().log().unsqueeze(-1) + logn

    def _diagonal_log_joint(self, xd: Tensor) -> tuple[Tensor, Tensor]:
        """Diagonal fast path: ``log w_k + log N(x; mu_k, diag v_k)`` as ``[*b, n, K]`` and the
        precisions ``[*b, K, d]``, through matmuls (never a ``[K, n, d]`` tensor).

        ``(x - mu)^2 / v = x^2 . (1/v) - 2 x . (mu/v) + mu^2 . (1/v)``, in float64.
        """
        prec = self._scale.pow(-2)  # [*b, K, d]
        mu = self.means.double()
        mp = mu * prec
        quad = (xd * xd) @ prec.transpose(-1, -2) - 2 * (xd @ mp.transpose(-1, -2))  # [*b, n, K]
        const = (mu * mp).sum(-1) + 2 * self._scale.log().sum(-1) + self.dim * math.log(2 * math.pi)
        return self.weights.double().log().unsqueeze(-2) - 0.5 * (quad + const.unsqueeze(-2)), prec

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` for ``x: Tensor[*b, n, d]`` (or ``[n, d]`` broadcast); returns ``[*b, n]``."""
        if self.diagonal:
            logj, _ = self._diagonal_log_joint(x.double())
            return torch.logsumexp(logj, dim=-1).to(x.dtype)
        _, logj = self._component_terms(x)
        return torch.logsumexp(logj, dim=-2).to(x.dtype)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities ``p(k | x)`` for ``x: [*b, n, d]``: ``[*b, n, K]`` (float64)."""
        if self.diagonal:
            logj, _ = self._diagonal_log_joint(x.double())
            return torch.softmax(logj, dim=-1)
        _, logj = self._component_terms(x)
        return torch.softmax(logj, dim=-2).transpose(-1, -2)

    def score(self, x: Tensor) -> Tensor:
        """``grad_x log p(x)`` in closed form, same shape as ``x: [*b, n, d]``."""
        if self.diagonal:  # sum_k r_k (mu_k - x) / v_k = r @ (mu / v) - x * (r @ (1 / v))
            xd = x.double()
            logj, prec = self._diagonal_log_joint(xd)
            resp = torch.softmax(logj, dim=-1)  # [*b, n, K]
            return (resp @ (self.means.double() * prec) - xd * (resp @ prec)).to(x.dtype)
        z, logj = self._component_terms(x)
        resp = torch.softmax(logj, dim=-2).unsqueeze(-1)  # [*b, K, n, 1]
        if self.diagonal:
            per = -z / self._scale.unsqueeze(-2)
        else:  # -Sigma^{-1}(x - mu) = -L^{-T} z
            per = -torch.linalg.solve_triangular(
                self._scale.transpose(-1, -2), z.transpose(-1, -2), upper=True
            ).transpose(-1, -2)
        return (resp * per).sum(-3).to(x.dtype)

    def __repr__(self) -> str:
        kind = "diagonal" if self.diagonal else "full"
        return (
            f"GaussianMixture(K={self.num_components}, d={self.dim}, batch={tuple(self.batch_shape)}, "
            f"{kind} covariances)"
        )
