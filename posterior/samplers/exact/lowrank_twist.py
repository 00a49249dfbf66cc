"""TDS's covariance twist at any image size: the prior's covariance as low rank plus isotropic.

:mod:`posterior.samplers.exact.covariance_twist` uses the prior's full ``d x d`` covariance and one
``m x m`` eigendecomposition per time: beyond a few thousand values that is minutes per run. Here
the covariance comes from ``n`` of the prior's own draws (``prior.sample``; any prior), shrunk a
tenth of the way to the isotropic ``v I`` (``v`` the mean per-pixel variance):

    Sigma = W diag(lam) W^T + delta (I - W W^T),   lam = 0.9 s^2 + delta,   delta = 0.1 v,

with ``W [d, r]`` (``r < n``) the draws' principal directions and ``s^2`` their variances. Given
``x_t`` under a Gaussian prior ``N(m, Sigma)`` (see ``covariance_twist``) the covariance of ``x_0``
keeps the eigenvectors: ``Sigma_t = delta_t I + W diag(lam_t - delta_t) W^T`` with
``f_t(l) = l / (1 + k_t l)``, ``k_t = abar_t / (1 - abar_t)``. With ``A = U diag(S) V^T`` the twist
``N(y; A x0_hat, A Sigma_t A^T + sigma^2 I)`` reads, in the basis ``U``,

    N(U^T (y - A x0_hat); 0, D_t + F_t F_t^T),   D_t = delta_t S^2 + sigma^2,
    F_t = U^T A W diag(lam_t - delta_t)^{1/2}   ([m, r]),

evaluated by Woodbury and the matrix determinant lemma with one ``r x r`` Cholesky per time:
``O(n m r)`` per call, no ``d x d`` or ``m x m`` matrix. Any positive twist keeps TDS exact.
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import torch
from torch import Tensor

from posterior.operators.base import LinearOperator
from posterior.priors.base import DiffusionPrior
from posterior.schedule import NoiseSchedule

__all__ = ["LowRankCovariance", "LowRankTwist", "lowrank_covariance"]

#: Prior draws behind the low-rank covariance, and its shrinkage to the isotropic part.
LOWRANK_DRAWS = 256
SHRINK = 0.1

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class LowRankCovariance(NamedTuple):
    """``W diag(lam) W^T + delta (I - W W^T)``: ``W: [d, r]`` orthonormal, ``lam: [r]``, float64."""

    W: Tensor
    lam: Tensor
    delta: float


def lowrank_covariance(prior: DiffusionPrior, num_draws: int = LOWRANK_DRAWS) -> LowRankCovariance:
    """The prior's covariance from ``num_draws`` of its own draws (exact draws where
    ``prior.has_closed_form_sample``, else DDPM over ``prior.moment_steps`` steps, seed 0), shrunk a
    tenth of the way to isotropic; computed once per prior (a one-off cost kept out of its counters)."""
    key = (num_draws,)
    cached = _CACHE.get(prior, {})
    if key not in cached:
        counts = prior.num_evals, prior.num_vjps
        gen = torch.Generator(device=prior.device).manual_seed(0)
        steps = None if prior.has_closed_form_sample else prior.moment_steps
        x = prior.sample(num_draws, gen, num_steps=steps).reshape(num_draws, -1).double()
        prior.num_evals, prior.num_vjps = counts
        x = (x - x.mean(0)) / math.sqrt(num_draws - 1)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        keep = s > 1e-8 * s[0]
        v = float(s.pow(2).sum()) / x.shape[1]
        delta = SHRINK * v
        cached[key] = LowRankCovariance(vh[keep].T.contiguous(), (1 - SHRINK) * s[keep].pow(2) + delta, delta)
        _CACHE[prior] = cached
    return cached[key]


class LowRankTwist:
    """``log N(y; A x0, A Sigma_t A^T + sigma^2 I)`` with a :class:`LowRankCovariance` ``Sigma``
    (module docstring), for a linear operator with an SVD and Gaussian noise.

    Args:
        operator: the linear operator ``A`` (bound, ``has_svd``).
        covariance: the prior's :class:`LowRankCovariance`.
        event_shape: the shape of ``x``.
        schedule: the prior's noise schedule.
        scale: multiplies ``Sigma_t`` (TDS's ``twist_scale``).
    """

    def __init__(
        self,
        operator: LinearOperator,
        covariance: LowRankCovariance,
        event_shape: tuple[int, ...],
        schedule: NoiseSchedule,
        scale: float = 1.0,
    ) -> None:
        if not operator.has_svd:
            raise ValueError(f"the low-rank covariance twist needs an operator with an SVD, got {operator!r}")
        self.op, self.cov, self.schedule, self.scale = operator, covariance, schedule, scale
        W = covariance.W
        self.obs_shape = tuple(operator.out_shape)
        AW = operator.A(W.T.reshape(-1, *event_shape))  # [r, *obs]
        self.G = operator.U_adjoint(AW).double().T  # U^T A W: [m, r]
        m = self.G.shape[0]
        s = operator.singular_values.double().to(W.device)
        self.s2 = torch.zeros(m, dtype=torch.float64, device=W.device)
        self.s2[: s.numel()] = s.pow(2)
        self._at: dict[tuple[int, float], tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def at(self, t: int, noise_var: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(D_t [m], F_t [m, r], L_t [r, r], log det(D_t + F_t F_t^T))`` (float64), cached."""
        if (t, noise_var) not in self._at:
            abar = self.schedule.alpha_bar(t).item()
            k = abar / (1 - abar)
            lam_t = self.scale * self.cov.lam / (1 + k * self.cov.lam)
            delta_t = self.scale * self.cov.delta / (1 + k * self.cov.delta)
            D = delta_t * self.s2 + noise_var
            F = self.G * (lam_t - delta_t).clamp_min(0).sqrt()
            M = torch.eye(F.shape[1], dtype=torch.float64, device=F.device) + F.T @ (F / D[:, None])
            L = torch.linalg.cholesky(M)
            logdet = D.log().sum() + 2 * L.diagonal().log().sum()
            self._at[(t, noise_var)] = (D, F, L, logdet)
        return self._at[(t, noise_var)]

    def log_prob(self, t: int, resid: Tensor, noise_var: Tensor) -> Tensor:
        """``log N(resid; 0, A Sigma_t A^T + noise_var I)`` per row: ``resid: [n, m]``,
        ``noise_var: [n]`` -> ``[n]``."""
        rho = self.op.U_adjoint(resid.reshape(-1, *self.obs_shape))  # [n, m]
        out = torch.empty(rho.shape[0], dtype=rho.dtype, device=rho.device)
        for v in noise_var.unique().tolist():
            rows = noise_var == v
            D, F, L, logdet = (c.to(rho.dtype) for c in self.at(t, v))
            r = rho[rows]
            a = r / D
            b = torch.linalg.solve_triangular(L, (a @ F).T, upper=False)  # [r, n]
            quad = (r * a).sum(-1) - b.pow(2).sum(0)
            out[rows] = -0.5 * (quad + logdet + r.shape[1] * math.log(2 * math.pi))
        return out
