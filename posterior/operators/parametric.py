"""Operators with named parameters, some of them unknown (:class:`~posterior.Unknown`).

:class:`OperatorFamily` holds a builder ``build(**values) -> Operator`` and the parameters' values
or priors; :class:`Parametric` is a user's forward model ``A(x, **values)``, differentiable in ``x``.
Samplers never call a family's own ``A`` (it is the member at the placeholder values, for shapes and
checks): the joint samplers instantiate a member per drawn value with :meth:`OperatorFamily.at`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from posterior.operators.base import Nonlinear, Operator
from posterior.parameters import Unknown, split_unknown

__all__ = ["OperatorFamily", "Parametric"]


class OperatorFamily(Operator):
    """The operators ``build(**values)`` over parameter values, some of them unknown.

    Args:
        build: ``build(**values) -> Operator`` (e.g. ``lambda width: Blur.gaussian(width)``).
        in_shape: the input shape (default: the prior's, set when the problem is built).
        **params: each parameter a number or a :class:`~posterior.Unknown` (a prior).

    Attributes:
        unknowns: ``{name: Unknown}``, the parameters the joint samplers draw.
        values: ``{name: float}``, the known values and the unknowns' placeholders.
    """

    linear = False

    def __init__(
        self, build: Callable[..., Operator], in_shape: tuple[int, ...] | None = None, **params: Any
    ) -> None:
        if not callable(build):
            raise TypeError("build must be a callable returning an operator")
        if not params:
            raise ValueError("an operator family needs at least one parameter")
        self.build = build
        self.values, self.unknowns = {}, {}
        for k, v in params.items():
            value, unknown = split_unknown(v)
            self.values[k] = value
            if unknown is not None:
                self.unknowns[k] = unknown
        self.in_shape = None if in_shape is None else tuple(in_shape)
        self.member = self.at()
        self.out_shape = self.member.out_shape

    def at(self, **values: float) -> Operator:
        """The member at ``values`` (the other parameters at their known values or placeholders),
        bound to :attr:`in_shape` when it is known."""
        unknown = set(values) - set(self.values)
        if unknown:
            raise ValueError(f"{self!r} has no parameter {', '.join(sorted(unknown))}")
        op = self.build(**{**self.values, **values})
        if not isinstance(op, Operator):
            raise TypeError(f"build must return an operator, got {type(op).__name__}")
        return op if self.in_shape is None else op.bind(self.in_shape)

    def A(self, x: Tensor) -> Tensor:
        return self.member.A(x)

    def bind(self, event_shape: tuple[int, ...]) -> Operator:
        if self.in_shape is None:
            out = OperatorFamily.__new__(type(self))
            out.__dict__.update(self.__dict__)
            out.in_shape = tuple(event_shape)
            out.member = out.at()
            out.out_shape = out.member.out_shape
            return out
        return super().bind(event_shape)

    def tensors(self) -> list[Tensor]:
        return self.member.tensors()

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={self.unknowns.get(k, v)!r}" for k, v in self.values.items())
        return f"{type(self).__name__}({getattr(self.build, '__name__', 'build')}, {shown})"


class Parametric(OperatorFamily):
    """A user forward model ``A(x, **params)``: ``fn(x: Tensor[n, *in_shape], **values) ->
    Tensor[n, *out_shape]``, differentiable in ``x`` and acting per sample.

    Args:
        fn: the forward model; each keyword gets a float.
        in_shape: the input shape (default: the prior's).
        **params: each parameter a number or a :class:`~posterior.Unknown`.

    E.g. ``Parametric(lambda x, gain: gain * x, gain=ps.Unknown(dist.Gamma(4.0, 4.0)))``.
    """

    def __init__(
        self, fn: Callable[..., Tensor], in_shape: tuple[int, ...] | None = None, **params: float | Unknown
    ) -> None:
        if not callable(fn):
            raise TypeError("fn must be a callable A(x, **params)")
        self.fn = fn
        super().__init__(self._member, in_shape, **params)

    def _member(self, **values: float) -> Operator:
        fn = self.fn

        def forward(x: Tensor) -> Tensor:
            return fn(x, **values)

        forward.__name__ = getattr(fn, "__name__", "fn")
        return Nonlinear(forward, self.in_shape)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={self.unknowns.get(k, v)!r}" for k, v in self.values.items())
        return f"Parametric({getattr(self.fn, '__name__', 'fn')}, {shown})"
