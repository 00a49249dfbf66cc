"""Forward operators ``x -> A(x)`` acting on a leading batch dimension.

Every linear operator offers ``A``, ``A_adjoint`` and, where it can, a singular value
decomposition ``A = U diag(S) V^T`` applied as functions (``V_adjoint`` maps an input to its
coordinates in the right singular basis, ``U`` maps singular coordinates to an output), so that
SVD-based samplers (MCGdiff, DDRM, PiGDM) scale to images without dense matrices. Shapes:
``x: [n, *in_shape]``, ``y: [n, *out_shape]``, ``d = prod(in_shape)``, ``m = prod(out_shape)``,
``r = min(m, d)`` singular values.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["LinearOperator", "Nonlinear", "Operator", "SVDCoordinates"]


class Operator(ABC):
    """A differentiable forward model. Subclasses set ``in_shape`` / ``out_shape``."""

    linear: bool = False
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None

    @abstractmethod
    def A(self, x: Tensor) -> Tensor:
        """``x: Tensor[n, *in_shape] -> Tensor[n, *out_shape]``."""

    def __call__(self, x: Tensor) -> Tensor:
        return self.A(x)

    def bind(self, event_shape: tuple[int, ...]) -> Operator:
        """This operator checked (or completed) for inputs of shape ``event_shape``."""
        if self.in_shape is not None and tuple(self.in_shape) != tuple(event_shape):
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape {list(self.in_shape)}, "
                f"the prior draws {list(event_shape)}"
            )
        return self

    def tensors(self) -> list[Tensor]:
        """Tensors the operator holds (to check device and dtype against the prior)."""
        return [v for v in vars(self).values() if isinstance(v, Tensor)]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Operator:
        """A copy with every tensor it holds (directly, or in tuples, lists, dicts and helper
        objects) on ``device``, floating ones in ``dtype`` (``None``: unchanged). A wrapped
        callable (:class:`Nonlinear`) is kept as it is."""
        return _moved(self, device, dtype)

    @property
    def in_dim(self) -> int:
        return math.prod(self.in_shape) if self.in_shape is not None else 0

    @property
    def out_dim(self) -> int:
        return math.prod(self.out_shape) if self.out_shape is not None else 0


class SVDCoordinates(NamedTuple):
    """Observations in an operator's SVD basis (:meth:`LinearOperator.svd_coordinates`)."""

    s: Tensor  # [r] singular values (r = min(m, d)); the first r coordinates of V^T x go with them
    observed: Tensor  # [r] bool: s > 0 (a zero singular value observes nothing)
    s_safe: Tensor  # [r] s where observed, 1 elsewhere (safe to divide by)
    uy: Tensor  # [B, r] U^T y
    y_tilde: Tensor  # [B, r] U^T y / s_safe: the observation of z = V^T x, noise std sigma / s


class LinearOperator(Operator):
    """A linear forward model with adjoint and (optionally) an SVD."""

    linear = True
    has_svd: bool = True

    @abstractmethod
    def A_adjoint(self, y: Tensor) -> Tensor:
        """``y: Tensor[n, *out_shape] -> Tensor[n, *in_shape]``."""

    # SVD: A x = U(pad_m(S * V_adjoint(x)[:, :r])). Subclasses with has_svd implement these.
    @property
    def singular_values(self) -> Tensor:
        """``Tensor[r]``, ``r = min(m, d)``, non-negative (zeros allowed)."""
        raise NotImplementedError(self._no_svd())

    def V_adjoint(self, x: Tensor) -> Tensor:
        """``Tensor[n, *in_shape] -> Tensor[n, d]``: coordinates in the right singular basis."""
        raise NotImplementedError(self._no_svd())

    def V(self, z: Tensor) -> Tensor:
        """``Tensor[n, d] -> Tensor[n, *in_shape]``."""
        raise NotImplementedError(self._no_svd())

    def U_adjoint(self, y: Tensor) -> Tensor:
        """``Tensor[n, *out_shape] -> Tensor[n, m]``."""
        raise NotImplementedError(self._no_svd())

    def U(self, z: Tensor) -> Tensor:
        """``Tensor[n, m] -> Tensor[n, *out_shape]``."""
        raise NotImplementedError(self._no_svd())

    def _no_svd(self) -> str:
        return f"{type(self).__name__} has no singular value decomposition"

    def require_svd(self, method: str) -> None:
        """Raise a clear error if a method needing the SVD is given an operator without one."""
        if not self.has_svd:
            raise ValueError(f"{method!r} needs an operator with an SVD; {type(self).__name__} has none")

    def svd_coordinates(
        self, y: Tensor, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> SVDCoordinates:
        """The observations ``y: Tensor[B, *out_shape]`` in the SVD basis, with the singular
        values, on ``dtype`` / ``device`` (default: ``y``'s): what every sampler working in that
        basis starts from (``y = A x + noise`` reads ``y~_i = s_i z_i + noise_i / s_i`` with
        ``z = V^T x``, for each observed coordinate ``i < r``). See :class:`SVDCoordinates`."""
        dtype, device = dtype or y.dtype, device or y.device
        s = self.singular_values.to(device=device, dtype=dtype)
        r = s.numel()
        observed = s > 0
        s_safe = torch.where(observed, s, torch.ones_like(s))
        uy = self.U_adjoint(y)[:, :r].to(device=device, dtype=dtype)
        return SVDCoordinates(s, observed, s_safe, uy, uy / s_safe)

    def to_svd(self, x: Tensor) -> Tensor:
        """``z = V^T x``: ``Tensor[*lead, *in_shape] -> Tensor[*lead, d]`` (any leading dims)."""
        lead = x.shape[: x.dim() - len(self.in_shape or ())]
        return self.V_adjoint(x.reshape(-1, *x.shape[len(lead) :])).reshape(*lead, -1)

    def from_svd(self, z: Tensor) -> Tensor:
        """``x = V z``: ``Tensor[*lead, d] -> Tensor[*lead, *in_shape]`` (any leading dims)."""
        x = self.V(z.reshape(-1, z.shape[-1]))
        return x.reshape(*z.shape[:-1], *x.shape[1:])

    def A_pinv(self, y: Tensor) -> Tensor:
        """Moore-Penrose pseudo-inverse through the SVD: ``Tensor[n, *out_shape] -> [n, *in_shape]``."""
        s = self.singular_values
        r = s.numel()
        coef = self.U_adjoint(y)[:, :r]
        inv = torch.where(s > 0, 1 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        z = torch.zeros(y.shape[0], self.in_dim, dtype=y.dtype, device=y.device)
        z[:, :r] = coef * inv
        return self.V(z)

    def A_via_svd(self, x: Tensor) -> Tensor:
        """``U diag(S) V^T x``: equals :meth:`A` (used by the SVD tests)."""
        s = self.singular_values
        r = s.numel()
        z = torch.zeros(x.shape[0], self.out_dim, dtype=x.dtype, device=x.device)
        z[:, :r] = s * self.V_adjoint(x)[:, :r]
        return self.U(z)

    def kronecker_factors(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(A_C [m_C, C], A_H [m_H, H], A_W [m_W, W])`` in float64 when ``A`` acts on images
        ``[C, H, W]`` as their Kronecker product: ``A(x)`` flattened in its own output order is
        ``kron(A_C, A_H, A_W) vec(x)``, ``vec`` in (channel, row, column) order. ``None`` when it
        does not (or its image shape is not bound). Lets structured computations (the exact
        posterior of :func:`~posterior.problems_image.gmm_image`) avoid ``m x m`` matrices."""
        return None

    def matrix(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Tensor:
        """The dense ``Tensor[m, d]`` (columns are ``A e_j``); for small problems and tests."""
        if self.in_shape is None:
            raise ValueError(f"{type(self).__name__} needs an input shape first (call bind)")
        eye = torch.eye(self.in_dim, dtype=dtype or torch.float64, device=device)
        return self.A(eye.reshape(-1, *self.in_shape)).reshape(self.in_dim, -1).T


class Nonlinear(Operator):
    """Wraps any differentiable callable ``fn: Tensor[n, *in_shape] -> Tensor[n, *out_shape]``.

    ``fn`` must act per sample (row ``i`` of the output depends on row ``i`` of the input only).
    Its output shape is found by :class:`~posterior.InverseProblem`, which calls it on a small
    batch on the prior's device and dtype and refuses a callable that is not per sample.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], in_shape: tuple[int, ...] | None = None) -> None:
        if not callable(fn):
            raise TypeError("a nonlinear operator must be callable")
        self.fn = fn
        self.in_shape = tuple(in_shape) if in_shape is not None else None

    def A(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def bind(self, event_shape: tuple[int, ...]) -> Operator:
        if self.in_shape is None:
            return Nonlinear(self.fn, event_shape)
        return super().bind(event_shape)

    def __repr__(self) -> str:
        return f"Nonlinear({getattr(self.fn, '__name__', type(self.fn).__name__)})"


def _moved(obj: object, device: torch.device | str | None, dtype: torch.dtype | None) -> Any:
    """``obj`` with its tensors moved (see :meth:`Operator.to`); other values shared."""
    if isinstance(obj, Tensor):
        return obj.to(device=device, dtype=dtype if obj.is_floating_point() else None)
    if isinstance(obj, (tuple, list)):
        items = [_moved(v, device, dtype) for v in obj]
        return type(obj)(items) if not hasattr(obj, "_fields") else type(obj)(*items)
    if isinstance(obj, dict):
        return {k: _moved(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, Operator) or (
        hasattr(obj, "__dict__") and not callable(obj) and not isinstance(obj, type)
    ):
        out = copy.copy(obj)
        out.__dict__.update({k: _moved(v, device, dtype) for k, v in vars(obj).items()})
        return out
    return obj
