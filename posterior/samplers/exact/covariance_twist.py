"""A twist that knows the prior's pixel correlations: ``N(y; A x0_hat(x_t), A Sigma_t A^T + sigma^2 I)``.

TDS's twist approximates ``p(y | x_t) = int p(y | x_0) p(x_0 | x_t) dx_0`` by a Gaussian around the
denoiser's ``x0_hat(x_t)``. How far ``x_0`` may stray from ``x0_hat`` is the covariance
``Sigma_t`` of ``x_0`` given ``x_t``. With an isotropic stand-in for the prior, ``N(m, V I)``,
``Sigma_t = r_t^2 I``; with the prior's own covariance ``Sigma`` (``prior.covariance()``), the
covariance of ``x_0`` given ``x_t`` for a Gaussian prior ``N(m, Sigma)`` is

    Sigma_t = (Sigma^{-1} + abar_t / (1 - abar_t) I)^{-1} = Q diag(l / (1 + k_t l)) Q^T,
    k_t = abar_t / (1 - abar_t),   Sigma = Q diag(l) Q^T.

On images this matters most at high noise: ``x0_hat`` then moves along the prior's leading
directions (stroke thickness, slant, a whole digit's shape), which the prior finds plausible and
``Sigma_t`` allows, while an isotropic ``r_t^2 I`` charges every pixel separately. Measured on an
MNIST half-inpainting problem (128 prior particles, first six steps of the 25-step grid): the
twist's ESS over the particles is 1.2-6.8 with ``r_t^2 I`` and 23-71 with ``Sigma_t``. Any positive
twist keeps TDS exact; this one only changes how fast its weights degenerate.

Linear operators and Gaussian noise: with ``G = A Q`` (``[m, d]``, once) and the eigenpairs
``(U_t, mu_t)`` of ``G diag(l_t) G^T`` (``[m, m]``, once per time), the twist per problem ``b`` is
``N(U_t^T (y - A x0_hat); 0, diag(mu_t + sigma_b^2))``: one ``[n, m] x [m, m]`` product per call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior.operators.base import LinearOperator
from posterior.schedule import VPSchedule

__all__ = ["CovarianceTwist"]


class CovarianceTwist:
    """``log N(y; A x0, A Sigma_t A^T + sigma^2 I)`` for a linear operator and Gaussian noise.

    Args:
        operator: the linear operator ``A`` (bound to the event shape).
        covariance: ``Tensor[d, d]``, the prior's covariance of ``x_0`` (flattened event).
        event_shape: the shape of ``x``.
        schedule: the prior's noise schedule (``alpha_bar(t)``).
        scale: multiplies ``Sigma_t`` (TDS's ``twist_scale``).
    """

    def __init__(
        self,
        operator: LinearOperator,
        covariance: Tensor,
        event_shape: tuple[int, ...],
        schedule: VPSchedule,
        scale: float = 1.0,
    ) -> None:
        cov = covariance.double()
        cov = 0.5 * (cov + cov.T)
        lam, Q = torch.linalg.eigh(cov)
        self.lam = lam.clamp_min(0.0)  # [d]
        d = Q.shape[0]
        # G = A Q: the operator applied to each eigenvector (as an image), [m, d]
        cols = operator.A(Q.T.reshape(d, *event_shape).to(covariance.dtype)).reshape(d, -1)
        self.G = cols.T.double()
        self.schedule, self.scale = schedule, scale
        self.dtype = covariance.dtype
        self._at: dict[int, tuple[Tensor, Tensor]] = {}

    def at(self, t: int) -> tuple[Tensor, Tensor]:
        """``(U_t [m, m], mu_t [m])``: eigenpairs of ``A Sigma_t A^T`` (``scale`` included)."""
        if t not in self._at:
            abar = self.schedule.alpha_bar(t).item()
            k = abar / (1 - abar)
            lam_t = self.scale * self.lam / (1 + k * self.lam)
            M = (self.G * lam_t) @ self.G.T
            mu, U = torch.linalg.eigh(0.5 * (M + M.T))
            self._at[t] = (U.to(self.dtype), mu.clamp_min(0.0).to(self.dtype))
        return self._at[t]

    def log_prob(self, t: int, resid: Tensor, noise_var: Tensor) -> Tensor:
        """``log N(resid; 0, A Sigma_t A^T + noise_var I)`` per row: ``resid: [n, m]``,
        ``noise_var: [n]`` -> ``[n]``."""
        U, mu = self.at(t)
        var = mu[None] + noise_var[:, None]  # [n, m]
        z = resid @ U
        return -0.5 * (z.pow(2) / var + torch.log(2 * math.pi * var)).sum(-1)
