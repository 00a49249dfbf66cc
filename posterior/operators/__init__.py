"""Forward operators: one class per operator, each with ``A``, ``A_adjoint`` and an SVD."""

from posterior.operators.base import LinearOperator, Nonlinear, Operator
from posterior.operators.image import Inpainting, box_mask, half_mask, random_mask
from posterior.operators.linear import CompressedSensing, Identity, Matrix, as_operator
from posterior.operators.parametric import OperatorFamily, Parametric
from posterior.operators.separable import Blur, SuperResolution, gaussian_kernel

__all__ = [
    "Blur",
    "CompressedSensing",
    "Identity",
    "Inpainting",
    "LinearOperator",
    "Matrix",
    "Nonlinear",
    "Operator",
    "OperatorFamily",
    "Parametric",
    "SuperResolution",
    "as_operator",
    "box_mask",
    "gaussian_kernel",
    "half_mask",
    "random_mask",
]
