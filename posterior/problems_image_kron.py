"""The observation Gram matrices ``S_k = A Sigma_k A^T + sigma^2 I`` of the image-mixture oracle.

:class:`~posterior.problems_image.ImageMixturePosterior` needs, per mixture component ``k``,
``S_k^{-1} r``, ``log det S_k`` and ``diag(Sigma_k A^T S_k^{-1} A Sigma_k)`` (``m`` observed
values, ``d = C H W`` pixels). Two exact ways:

- :class:`KroneckerGram`: when the operator is a Kronecker product ``A = A_C kron A_H kron A_W``
  (:meth:`~posterior.operators.base.LinearOperator.kronecker_factors`) whose factors have rows
  orthogonal with a common norm, ``A_i A_i^T = c_i I`` (the identity, a product-mask inpainting,
  average pooling), then with ``Sigma_k = a_k^2 (R_C kron K_H kron K_W) + w^2 I``

      S_k = a_k^2 (M_C kron M_H kron M_W) + (w^2 c_C c_H c_W + sigma^2) I,  M_i = A_i K_i A_i^T,

  so ``S_k = U diag(s_k) U^T`` with ``U = U_C kron U_H kron U_W`` from three small
  eigendecompositions ``M_i = U_i diag(e_i) U_i^T`` and ``s_k = a_k^2 e_C e_H e_W + w^2 c +
  sigma^2``: no ``m x m`` matrix, ``O(n m (m_C + m_H + m_W))`` per solve.
- :class:`DenseGram`: one ``m x m`` Cholesky factor per component (any linear operator), refused
  above :data:`DENSE_MAX_OBSERVED` observed values.

:func:`gram` picks the first that applies. Both are float64 and exact (up to rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from posterior.operators.base import LinearOperator
from posterior.priors.image_mixture import ImageMixturePrior, _eig

__all__ = ["DENSE_MAX_OBSERVED", "DenseGram", "KroneckerGram", "gram", "kronecker_scales"]

#: The most observed values the dense path factors (``[K, m, m]`` float64 Cholesky factors).
DENSE_MAX_OBSERVED = 4096


def kronecker_scales(operator: LinearOperator, rtol: float = 1e-10) -> tuple[list[Tensor], float] | None:
    """``([A_C, A_H, A_W], c_C c_H c_W)`` when ``operator`` is a Kronecker product whose factors
    satisfy ``A_i A_i^T = c_i I`` (to ``rtol``), else ``None``."""
    factors = operator.kronecker_factors()
    if factors is None:
        return None
    scale = 1.0
    for f in factors:
        g = f @ f.T
        c = float(g.diagonal().mean())
        if c <= 0 or (g - c * torch.eye(g.shape[0], dtype=g.dtype)).abs().max() > rtol * c:
            return None
        scale *= c
    return list(factors), scale


def _kron_apply(mats: tuple[Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    """``(M_C kron M_H kron M_W) x``: ``x: [n, c, h, w]``, ``M_i: [p_i, n_i]`` -> ``[n, p_C, p_H, p_W]``."""
    MC, MH, MW = mats
    return torch.einsum("ca,nahw->nchw", MC, MH @ x @ MW.T)


class KroneckerGram:
    """``S_k`` of every component, diagonal in a Kronecker basis (module docstring).

    Args:
        prior: the image mixture (its kernels, amplitudes and white term).
        factors: ``[A_C, A_H, A_W]`` of :func:`kronecker_scales`; ``scale``: ``c_C c_H c_W``.
        s2: the noise variance ``sigma^2``.
    """

    def __init__(self, prior: ImageMixturePrior, factors: list[Tensor], scale: float, s2: float) -> None:
        dev = prior.device
        p, kern = prior.params, prior.kernels
        self.A = tuple(f.to(dev) for f in factors)
        self.obs = tuple(f.shape[0] for f in factors)  # (m_C, m_H, m_W)
        self.K = prior.num_components
        self.basis: list[tuple[Tensor, Tensor, Tensor]] = []  # U_k = (U_C, U_H, U_W)
        self.kernels: list[tuple[Tensor, Tensor, Tensor]] = []  # K_i = Q_i diag(g_i) Q_i^T
        self.s = []  # [K] of [m_C, m_H, m_W]
        w2 = p["white"] ** 2
        for k in range(self.K):
            Us, es, ks = [], [], []
            for A_i, K_i in zip(self.A, (kern["C"], kern["H"][k], kern["W"][k]), strict=True):
                g, Q = _eig(K_i)  # the prior's own eigenbasis (clamped), as its covariance uses
                Q, g = Q.to(dev), g.to(dev)
                h = A_i @ Q * g.sqrt()  # M_i = A_i K_i A_i^T = h h^T
                e, U = torch.linalg.eigh(h @ h.T)
                Us.append(U)
                es.append(e.clamp_min(0))
                ks.append(Q * g @ Q.T)
            lam = p["amplitudes"][k].item() ** 2 * es[0][:, None, None] * es[1][None, :, None] * es[2]
            self.s.append(lam + w2 * scale + s2)
            self.basis.append(tuple(Us))  # type: ignore[arg-type]
            self.kernels.append(tuple(ks))  # type: ignore[arg-type]
        self.w2, self.amp = w2, [p["amplitudes"][k].item() for k in range(self.K)]

    def _rotate(self, r: Tensor, k: int, transpose: bool) -> Tensor:
        U = self.basis[k]
        mats = tuple(u.T for u in U) if transpose else U
        return _kron_apply(mats, r.reshape(-1, *self.obs)).reshape(r.shape[0], -1)  # type: ignore[arg-type]

    def solve(self, k: int, r: Tensor) -> Tensor:
        """``S_k^{-1} r`` for ``r: [n, m]``."""
        z = self._rotate(r, k, True) / self.s[k].reshape(-1)
        return self._rotate(z, k, False)

    def quad(self, k: int, r: Tensor) -> Tensor:
        """``r^T S_k^{-1} r``: ``[n]``."""
        return (self._rotate(r, k, True).pow(2) / self.s[k].reshape(-1)).sum(1)

    def logdet(self, k: int) -> Tensor:
        """``log det S_k`` (a scalar)."""
        return self.s[k].log().sum()

    def gram_diag(self, k: int) -> Tensor:
        """``diag(Sigma_k A^T S_k^{-1} A Sigma_k)`` as ``[C, H, W]``: with ``U^T A Sigma_k = a^2
        X_C kron X_H kron X_W + w^2 Y_C kron Y_H kron Y_W`` (``X_i = U_i^T A_i K_i``, ``Y_i =
        U_i^T A_i``), its squared columns expand into three Kronecker terms, each contracted with
        ``1 / s_k`` factor by factor."""
        Y = [u.T @ a for u, a in zip(self.basis[k], self.A, strict=True)]  # [m_i, n_i]
        X = [y @ kern for y, kern in zip(Y, self.kernels[k], strict=True)]
        inv = (1 / self.s[k])[None]
        a2, w2 = self.amp[k] ** 2, self.w2

        def term(P: list[Tensor]) -> Tensor:
            return _kron_apply((P[0].T, P[1].T, P[2].T), inv)[0]

        sq = term([x * x for x in X]) * a2**2 + term([y * y for y in Y]) * w2**2
        return sq + 2 * a2 * w2 * term([x * y for x, y in zip(X, Y, strict=True)])

    def __repr__(self) -> str:
        return f"KroneckerGram(K={self.K}, observed {list(self.obs)})"


class DenseGram:
    """``S_k`` of every component by its ``m x m`` Cholesky factor (any linear operator).

    Args:
        prior: the image mixture.
        A: ``x [n, C, H, W] -> [n, m]``; ``rows``: ``A^T e_i`` as ``[m, C, H, W]`` (float64).
        s2: the noise variance.
    """

    def __init__(
        self, prior: ImageMixturePrior, A: Callable[[Tensor], Tensor], rows: Tensor, s2: float
    ) -> None:
        m = rows.shape[0]
        if m > DENSE_MAX_OBSERVED:
            raise ValueError(
                f"the exact posterior of this operator needs a dense {m} x {m} factor per component "
                f"(at most {DENSE_MAX_OBSERVED} observed values)"
            )
        eye = torch.eye(m, dtype=torch.float64, device=rows.device)
        self.prior, self.rows, self.K = prior, rows, prior.num_components
        Ls = []
        for k in range(self.K):
            S = A(prior.cov_apply(rows, k))
            Ls.append(torch.linalg.cholesky(0.5 * (S + S.T) + s2 * eye))
        self.L = torch.stack(Ls)  # [K, m, m]

    def solve(self, k: int, r: Tensor) -> Tensor:
        return torch.cholesky_solve(r.T, self.L[k]).T

    def quad(self, k: int, r: Tensor) -> Tensor:
        return torch.linalg.solve_triangular(self.L[k], r.T, upper=False).pow(2).sum(0)

    def logdet(self, k: int) -> Tensor:
        return 2 * self.L[k].diagonal().log().sum()

    def gram_diag(self, k: int) -> Tensor:
        """``colsum((L_k^{-1} A Sigma_k)^2)`` as ``[C, H, W]``."""
        G = torch.linalg.solve_triangular(
            self.L[k], self.prior.cov_apply(self.rows, k).flatten(1), upper=False
        )
        return G.pow(2).sum(0).reshape(self.prior.event_shape)


def gram(
    prior: ImageMixturePrior,
    operator: LinearOperator,
    s2: float,
    A: Callable[[Tensor], Tensor],
    rows: Callable[[], Tensor],
) -> KroneckerGram | DenseGram:
    """The Gram matrices at noise variance ``s2``: :class:`KroneckerGram` when the operator allows
    it (:func:`kronecker_scales`), else :class:`DenseGram` (``rows()`` builds ``A^T I_m``)."""
    kron = kronecker_scales(operator)
    if kron is not None:
        return KroneckerGram(prior, kron[0], kron[1], s2)
    return DenseGram(prior, A, rows(), s2)
