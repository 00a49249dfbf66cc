"""Batched linear solves for the data-consistency steps of the approximate baselines.

* :func:`conjugate_gradient`: many independent symmetric positive-definite systems ``M_i x_i = b_i``
  at once, given only ``v -> M v`` (Hestenes & Stiefel, 1952). Used by MMPS in observation space
  and by the ridge solve below when the operator has no SVD.
* :func:`tweedie_solve`: ``(sigma^2 I + gamma_t A J A^T) u = y - A x0_hat`` with the denoiser's
  Jacobian ``J`` (Tweedie's covariance of ``x_0`` given ``x_t``), shared by MMPS and TDS's
  ``twist_var="tweedie"``.
* :func:`ridge_solve`: ``argmin_x ||y - A x||^2 + rho ||x - z||^2``, the quadratic subproblem of
  half-quadratic splitting (DiffPIR) and of ADMM, in closed form through the SVD of a linear
  operator, by conjugate gradients otherwise.

Shapes: a batch of ``n`` systems; vectors are ``Tensor[n, *shape]`` and inner products run over
the trailing dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from posterior._utils import check_int
from posterior.operators.base import LinearOperator
from posterior.priors.base import Denoised
from posterior.problem import InverseProblem

__all__ = ["batch_dot", "conjugate_gradient", "ridge_solve", "tweedie_solve"]


def batch_dot(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise inner products of ``u, v: Tensor[n, *shape]``: ``Tensor[n]``."""
    return (u * v).reshape(u.shape[0], -1).sum(-1)


def _rows(v: Tensor, like: Tensor) -> Tensor:
    """``v: Tensor[n]`` shaped ``[n, 1, ...]`` to broadcast against ``like: [n, *shape]``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int,
    x0: Tensor | None = None,
    rtol: float = 0.0,
) -> Tensor:
    """Solve ``M_i x_i = b_i`` for ``n`` symmetric positive-definite ``M_i`` by conjugate gradients.

    Args:
        matvec: ``v: Tensor[n, *shape] -> Tensor[n, *shape]``, row ``i`` multiplied by ``M_i``.
        b: ``Tensor[n, *shape]``, the right-hand sides.
        iters: at most this many iterations (``k`` iterations are exact for ``k = dim`` in exact
            arithmetic; ``0`` returns the initial guess).
        x0: initial guess (default zeros).
        rtol: stop once every row has ``||b - M x|| <= rtol ||b||`` (``0``: run ``iters``).

    Returns:
        ``x: Tensor[n, *shape]``. Rows whose residual already vanished stay fixed (no division by 0).
    """
    check_int(iters, "iters")
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = batch_dot(r, r)
    stop = (rtol * batch_dot(b, b).sqrt()).pow(2)
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        Mp = matvec(p)
        pMp = batch_dot(p, Mp)
        active = (rs > stop) & (pMp > 0)
        alpha = torch.where(active, rs / torch.where(active, pMp, torch.ones_like(pMp)), torch.zeros_like(rs))
        x = x + _rows(alpha, x) * p
        r = r - _rows(alpha, r) * Mp
        rs_new = batch_dot(r, r)
        beta = torch.where(
            active & (rs > 0), rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs)
        )
        p = r + _rows(beta, p) * p
        rs = rs_new
    return x


def tweedie_solve(
    problem: InverseProblem, x: Tensor, t: int, N: int, cg_iters: int, scale: float = 1.0
) -> tuple[Denoised, Tensor, Tensor, Callable[[Tensor], Tensor]]:
    """Solve ``(sigma^2 I + scale * gamma_t A J A^T) u = r``, ``r = y - A x0_hat(x_t)``, at flat
    states ``x: Tensor[B * N, *event]`` (rows ``b * N + n``) with ``cg_iters`` conjugate-gradient
    steps from zero; ``gamma_t = (1 - abar_t) / sqrt(abar_t)``, so ``gamma_t J = Cov[x_0 | x_t]``
    (Tweedie), and ``J`` is applied as ``J^T`` (symmetric for an exact denoiser).

    Returns ``(Denoised, r, u, vjp)``: the predictions, ``r`` and ``u`` (``[B * N, *obs]``) and the
    denoiser's ``vjp`` closure (each call one more counted VJP per row). Costs one network
    evaluation and ``cg_iters`` VJPs per row. ``problem``: a linear operator, Gaussian noise.
    """
    op = problem.require_linear("tweedie_solve")
    prior = problem.prior
    d, vjp = prior.denoise_vjp(x, t)
    abar = prior.schedule.alpha_bar(t).item()
    gamma = scale * (1 - abar) / abar**0.5
    sig2 = problem.sigma.to(x.dtype).pow(2).repeat_interleave(N)  # [B * N]
    sig2 = sig2.reshape(-1, *([1] * len(problem.obs_shape)))
    y = problem.y_batch.repeat_interleave(N, dim=0)  # [B * N, *obs]

    def cov_y(v: Tensor) -> Tensor:  # (sigma^2 I + gamma A J A^T) v, J applied as J^T
        return sig2 * v + gamma * op.A(vjp(op.A_adjoint(v)))

    r = y - op.A(d.x0)
    return d, r, conjugate_gradient(cov_y, r, cg_iters), vjp


def ridge_solve(
    op: LinearOperator,
    y: Tensor,
    z: Tensor,
    rho: Tensor,
    cg_iters: int = 100,
    rtol: float = 1e-6,
) -> Tensor:
    """``argmin_x ||y - A x||^2 + rho ||x - z||^2 = (A^T A + rho I)^{-1} (A^T y + rho z)``.

    With an SVD ``A = U diag(S) V^T`` the solution is coordinate-wise in the right singular basis:
    ``(S_i (U^T y)_i + rho (V^T z)_i) / (S_i^2 + rho)`` for the first ``r`` coordinates and
    ``(V^T z)_i`` on the null space. Without one, conjugate gradients started at ``z``.

    Args:
        op: a linear operator.
        y: ``Tensor[n, *out_shape]`` observations (one per row).
        z: ``Tensor[n, *in_shape]`` the point the proximal term pulls towards.
        rho: ``Tensor[n]`` (or a scalar), ``> 0``.
        cg_iters / rtol: conjugate-gradient budget when the operator has no SVD.

    Returns:
        ``Tensor[n, *in_shape]``.
    """
    rho = torch.as_tensor(rho, dtype=z.dtype, device=z.device).expand(z.shape[0])
    if op.has_svd:
        s = op.singular_values.to(dtype=z.dtype, device=z.device)
        r = s.numel()
        zc = op.V_adjoint(z)  # [n, d]
        yc = op.U_adjoint(y)[:, :r]  # [n, r]
        rho_c = rho[:, None]
        head = (s * yc + rho_c * zc[:, :r]) / (s.pow(2) + rho_c)
        return op.V(torch.cat([head, zc[:, r:]], dim=1))
    rhs = op.A_adjoint(y) + _rows(rho, z) * z
    return conjugate_gradient(
        lambda v: op.A_adjoint(op.A(v)) + _rows(rho, v) * v, rhs, cg_iters, x0=z, rtol=rtol
    )
