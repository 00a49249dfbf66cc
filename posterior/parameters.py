"""Unknown parameters of the observation: ``ps.Unknown(prior)`` in place of a number.

>>> import pyro.distributions as dist
>>> noise = ps.noise.Gaussian(ps.Unknown(dist.LogNormal(-1.0, 0.5)))        # unknown noise level
>>> blur = ps.operators.Blur.gaussian(ps.Unknown(dist.Uniform(0.5, 3.0)))   # unknown blur width
>>> op = ps.operators.Parametric(lambda x, gain: gain * x, gain=ps.Unknown(dist.Gamma(4.0, 4.0)))

A noise model or operator holding an :class:`Unknown` records it in its ``unknowns``
(``{key: Unknown}``) and holds a placeholder value (a point of the prior's support) so that the
problem can be built and checked; only the joint samplers (``"pmmh"``, ``"pgibbs"``) run on such a
problem. :class:`Parameters` is the problem's registry of its unknowns: names, priors, the
bijection of each support to the real line (Stan's and pyro's ``biject_to``), and the problem
instantiated at given values (``B`` problems times ``R`` values per problem: one batched problem
when only noise parameters are unknown, one problem per value when the operator's are).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.distributions.constraint_registry import biject_to

if TYPE_CHECKING:
    from posterior.problem import InverseProblem

__all__ = ["Parameters", "Unknown", "check_positive_support", "split_unknown"]


class Unknown:
    """A scalar parameter that is not known, with a prior distribution.

    Args:
        prior: a scalar ``torch`` / ``pyro`` distribution (``batch_shape == event_shape == ()``),
            e.g. ``pyro.distributions.LogNormal(-1.0, 0.5)``.
        name: the parameter's name in ``result.parameters`` (default: the argument it replaces,
            e.g. ``"std"``, ``"gain"``, ``"width"``).
    """

    def __init__(self, prior: Distribution, name: str | None = None) -> None:
        if not isinstance(prior, Distribution):
            raise TypeError(
                f"Unknown needs a torch or pyro distribution (e.g. pyro.distributions.LogNormal(-1, 0.5)), "
                f"got {type(prior).__name__}"
            )
        if tuple(prior.batch_shape) or tuple(prior.event_shape):
            raise ValueError(
                f"Unknown needs a scalar distribution, got batch_shape {list(prior.batch_shape)} and "
                f"event_shape {list(prior.event_shape)}"
            )
        if prior.support.is_discrete:
            raise ValueError(f"Unknown needs a continuous distribution, got the discrete {prior!r}")
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise ValueError(f"Unknown: name must be an identifier, got {name!r}")
        self.prior, self.name = prior, name
        self.transform = biject_to(prior.support)  # the real line -> the support

    def placeholder(self) -> float:
        """A point of the support (the image of ``0`` on the real line): the value a problem holds
        where this parameter is unknown, for shapes and checks only."""
        return float(self.transform(torch.zeros(())))

    def __repr__(self) -> str:
        named = "" if self.name is None else f", name={self.name!r}"
        return f"Unknown({self.prior!r}{named})"


def split_unknown(value: Any) -> tuple[Any, Unknown | None]:
    """``(value, None)`` for a known value; ``(placeholder, unknown)`` for an :class:`Unknown`."""
    if isinstance(value, Unknown):
        return value.placeholder(), value
    return value, None


def check_positive_support(unknown: Unknown, what: str) -> None:
    """A one-line ``ValueError`` naming ``what`` unless the prior's support lies in ``(0, inf)``
    or ``[0, inf)``."""
    s = unknown.prior.support
    base = getattr(s, "base_constraint", s)  # constraints.independent wraps others
    low = getattr(base, "lower_bound", None)
    if isinstance(low, Tensor):
        low = float(low)
    ok = isinstance(low, (int, float)) and low >= 0
    if not ok:
        raise ValueError(f"{what}: an Unknown here needs a prior with support in [0, inf), got {s}")


@dataclass(frozen=True)
class _Entry:
    name: str
    unknown: Unknown
    where: str  # "noise" or "operator"
    key: str  # the parameter's key in the noise model's params / the operator's values


class Parameters:
    """The unknown parameters of a problem (its noise model's and its operator's ``unknowns``).

    Values are dicts ``{name: Tensor[*shape]}`` (float64); the unconstrained parametrisation is
    ``u: Tensor[*shape, P]`` with ``theta_p = transform_p(u_p)`` (``P`` = :attr:`size`, the
    order of :attr:`names`).
    """

    def __init__(self, problem: InverseProblem) -> None:
        entries: list[_Entry] = []
        for where, holder in (("noise", problem.noise), ("operator", problem.operator)):
            for key, unknown in getattr(holder, "unknowns", {}).items():
                entries.append(_Entry(unknown.name or key, unknown, where, key))
        names = [e.name for e in entries]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(
                    f"two unknown parameters are named {n!r}: name them apart, ps.Unknown(prior, name=...)"
                )
        self.entries = entries
        self.names = names
        self.operator_unknown = any(e.where == "operator" for e in entries)

    @property
    def size(self) -> int:
        """``P``, the number of unknowns."""
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"Parameters({', '.join(f'{e.name}={e.unknown!r}' for e in self.entries)})"

    # ------------------------------------------------------------------ priors and transforms
    def sample_prior(self, shape: tuple[int, ...], generator: torch.Generator) -> dict[str, Tensor]:
        """``{name: Tensor[*shape]}`` (float64) drawn from the priors with ``generator``."""
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {e.name: e.unknown.prior.sample(shape).double().cpu() for e in self.entries}

    def log_prior(self, values: dict[str, Tensor]) -> Tensor:
        """``sum_p log p(theta_p)``: ``Tensor[*shape]`` (float64; ``-inf`` outside a support)."""
        total = 0.0
        for e in self.entries:
            v = values[e.name]
            inside = e.unknown.prior.support.check(v)
            safe = torch.where(inside, v, torch.full_like(v, e.unknown.placeholder()))
            lp = e.unknown.prior.log_prob(safe.to(_dtype(e.unknown)))
            total = total + torch.where(inside, lp.double(), torch.full_like(v, -math.inf))
        return total  # type: ignore[return-value]

    def to_unconstrained(self, values: dict[str, Tensor], shape: tuple[int, ...] = ()) -> Tensor:
        """``u: Tensor[*shape, P]`` with ``transform(u) = values`` (``shape`` for ``P = 0``)."""
        if not self.entries:
            return torch.zeros(*shape, 0, dtype=torch.float64)
        return torch.stack([e.unknown.transform.inv(values[e.name].double()) for e in self.entries], -1)

    def from_unconstrained(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``(values, log |d theta / d u|)`` for ``u: Tensor[*shape, P]``; the log-Jacobian
        ``Tensor[*shape]`` makes ``log p(theta) + log_jac`` the log-density of ``u``."""
        values, log_jac = {}, torch.zeros(u.shape[:-1], dtype=torch.float64, device=u.device)
        for i, e in enumerate(self.entries):
            ui = u[..., i].double()
            v = e.unknown.transform(ui)
            values[e.name] = v
            log_jac = log_jac + e.unknown.transform.log_abs_det_jacobian(ui, v).double()
        return values, log_jac

    def log_density_unconstrained(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``(values, log p(theta(u)) + log |d theta / d u|)``: the prior density of ``u``."""
        values, log_jac = self.from_unconstrained(u)
        return values, self.log_prior(values) + log_jac

    # ------------------------------------------------------------------ problems at given values
    def instantiate(self, problem: InverseProblem, values: dict[str, Tensor]) -> list[InverseProblem]:
        """The problem at the values ``{name: Tensor[B, R]}``: ``B * R`` problems, row
        ``b * R + r`` holding problem ``b`` at value ``r`` (as :meth:`InverseProblem.repeat`).

        One batched problem when only the noise model has unknowns (its parameters become
        ``Tensor[B * R]``); otherwise ``B * R`` problems of one row each (an operator per value).
        The list's problems, in order, hold the rows ``0 .. B * R - 1``.
        """
        B = problem.batch_size
        first = values[self.names[0]]
        if first.dim() != 2 or first.shape[0] != B:
            raise ValueError(f"instantiate needs values of shape [B={B}, R], got {list(first.shape)}")
        R = first.shape[1]
        index = torch.arange(B, device=problem.y_batch.device).repeat_interleave(R)
        flat = {k: v.reshape(-1) for k, v in values.items()}
        noise = problem.noise.select(index)
        noise = copy.copy(noise)
        noise.params = dict(noise.params)
        for e in self.entries:
            if e.where == "noise":
                noise.set_parameter(
                    e.key, flat[e.name].to(dtype=problem.prior.dtype, device=problem.prior.device)
                )
        noise.unknowns = {}
        y = problem.y_batch[index]
        truth = None
        if problem.truth is not None:
            truth = (problem.truth if problem.batched else problem.truth[None])[index]
        build = type(problem)
        if not self.operator_unknown:
            out = build(problem.prior, problem.operator, y, noise)
            out.truth = truth
            return [out]
        problems = []
        for i in range(B * R):
            ops = {e.key: float(flat[e.name][i]) for e in self.entries if e.where == "operator"}
            op = problem.operator.at(**ops)
            one = build(problem.prior, op, y[i : i + 1], noise.select(slice(i, i + 1)))
            one.truth = None if truth is None else truth[i : i + 1]
            problems.append(one)
        return problems

    def describe(self) -> list[str]:
        """One line per unknown: ``name ~ prior (where)``."""
        return [f"{e.name} ~ {e.unknown.prior!r} ({e.where})" for e in self.entries]


def _dtype(unknown: Unknown) -> torch.dtype:
    """The floating dtype of a distribution's parameters (float32 for ``LogNormal(-1.0, 0.5)``)."""
    for v in vars(unknown.prior).values():
        if isinstance(v, Tensor) and v.is_floating_point():
            return v.dtype
    return torch.get_default_dtype()
