"""Vector operators: identity (denoising), a dense matrix, random compressed sensing."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor

from posterior.operators.base import LinearOperator, Nonlinear, Operator

__all__ = ["CompressedSensing", "Identity", "Matrix", "as_operator"]


class Identity(LinearOperator):
    """``A = I`` (denoising). Its shape is taken from the prior when the problem is built."""

    def __init__(self, shape: tuple[int, ...] | None = None) -> None:
        self.in_shape = self.out_shape = tuple(shape) if shape is not None else None

    def bind(self, event_shape: tuple[int, ...]) -> Identity:
        return Identity(event_shape) if self.in_shape is None else super().bind(event_shape)

    def A(self, x: Tensor) -> Tensor:
        return x

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y

    @property
    def singular_values(self) -> Tensor:
        return torch.ones(self.in_dim)

    def V_adjoint(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    def V(self, z: Tensor) -> Tensor:
        return z.reshape(z.shape[0], *self.in_shape)

    U_adjoint = V_adjoint
    U = V

    def A_pinv(self, y: Tensor) -> Tensor:
        return y

    def kronecker_factors(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(I_C, I_H, I_W)`` on bound images ``[C, H, W]``."""
        if self.in_shape is None or len(self.in_shape) != 3:
            return None
        return tuple(torch.eye(n, dtype=torch.float64) for n in self.in_shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Identity({list(self.in_shape) if self.in_shape else ''})"


class Matrix(LinearOperator):
    """A dense matrix ``Tensor[m, d]`` acting on vectors ``x: Tensor[n, d]``.

    Bound to a prior whose draws have another shape with ``d`` entries (e.g. images ``[C, H, W]``
    with ``C H W = d``), it acts on them flattened in row-major order (``x.reshape(n, d)``), and
    its adjoint and ``V`` return that shape. Its SVD is computed once (``torch.linalg.svd``, full
    matrices) in float64.
    """

    def __init__(self, matrix: Tensor) -> None:
        matrix = torch.as_tensor(matrix)
        if matrix.dim() != 2:
            raise ValueError(f"a matrix operator needs a 2-D Tensor[m, d], got shape {list(matrix.shape)}")
        if not matrix.is_floating_point():
            matrix = matrix.float()
        if not torch.isfinite(matrix).all():
            raise ValueError("the operator matrix contains NaN or inf")
        self.weight = matrix
        self.out_shape, self.in_shape = (matrix.shape[0],), (matrix.shape[1],)
        self._svd: tuple[Tensor, Tensor, Tensor] | None = None

    def tensors(self) -> list[Tensor]:
        return [self.weight]

    def bind(self, event_shape: tuple[int, ...]) -> Matrix:
        event_shape = tuple(int(s) for s in event_shape)
        if event_shape != self.in_shape and math.prod(event_shape) == self.weight.shape[1]:
            bound = copy.copy(self)  # the same matrix on flattened inputs of that shape
            bound.in_shape = event_shape
            return bound
        return super().bind(event_shape)  # type: ignore[return-value]

    def _flat(self, x: Tensor) -> Tensor:
        return x.flatten(x.dim() - len(self.in_shape)) if len(self.in_shape) > 1 else x

    def _shaped(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, self.in_shape) if len(self.in_shape) > 1 else x

    def A(self, x: Tensor) -> Tensor:
        return self._flat(x) @ self.weight.T.to(x.dtype)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self._shaped(y @ self.weight.to(y.dtype))

    def matrix(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Tensor:
        return self.weight.to(dtype=dtype or self.weight.dtype, device=device or self.weight.device)

    def svd(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(U [m, m], S [r], V [d, d])`` with ``A = U[:, :r] diag(S) V[:, :r]^T``."""
        if self._svd is None:
            U, S, Vh = torch.linalg.svd(self.weight.double(), full_matrices=True)
            dt = self.weight.dtype
            self._svd = (U.to(dt), S.to(dt), Vh.T.to(dt))
        return self._svd

    @property
    def singular_values(self) -> Tensor:
        return self.svd()[1]

    def V_adjoint(self, x: Tensor) -> Tensor:
        return self._flat(x) @ self.svd()[2].to(x.dtype)

    def V(self, z: Tensor) -> Tensor:
        return self._shaped(z @ self.svd()[2].T.to(z.dtype))

    def U_adjoint(self, y: Tensor) -> Tensor:
        return y @ self.svd()[0].to(y.dtype)

    def U(self, z: Tensor) -> Tensor:
        return z @ self.svd()[0].T.to(z.dtype)

    def __repr__(self) -> str:
        on = f" on {list(self.in_shape)}" if len(self.in_shape) > 1 else ""
        return f"Matrix({self.out_shape[0]} x {self.weight.shape[1]}{on})"


class CompressedSensing(Matrix):
    """``m`` random Gaussian measurements of a ``d``-vector: ``A_ij ~ N(0, 1/m)``, seeded."""

    def __init__(self, m: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        if m <= 0 or d <= 0:
            raise ValueError(f"need m > 0 and d > 0, got m={m}, d={d}")
        gen = torch.Generator().manual_seed(seed)
        super().__init__(torch.randn(m, d, generator=gen, dtype=torch.float64).div(m**0.5).to(dtype))

    def __repr__(self) -> str:
        return f"CompressedSensing(m={self.out_shape[0]}, d={self.weight.shape[1]})"


def as_operator(op: Operator | Tensor | Callable[[Tensor], Tensor]) -> Operator:
    """An :class:`Operator` from an operator, a ``Tensor[m, d]`` matrix, or a callable."""
    if isinstance(op, Operator):
        return op
    if isinstance(op, Tensor):
        return Matrix(op)
    if callable(op):
        return Nonlinear(op)
    raise TypeError(
        f"cannot use {type(op).__name__} as an operator: pass an Operator, a Tensor[m, d] or a callable"
    )
