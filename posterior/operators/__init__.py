"""Forward operators: one class per operator, each with ``A``, ``A_adjoint`` and an SVD."""

from posterior.operators.base import LinearOperator, Nonlinear, Operator, as_operator
from posterior.operators.linear import CompressedSensing, Identity, Matrix

__all__ = [
    "Operator",
    "LinearOperator",
    "Nonlinear",
    "as_operator",
    "Identity",
    "Matrix",
    "CompressedSensing",
]
