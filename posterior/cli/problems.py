"""The named problems of ``compare`` and ``calibrate`` and the image prior behind them, from
:mod:`posterior.problems` with a bad name reported as a usage error."""

from __future__ import annotations

from typing import Any

from posterior.cli._common import UsageError
from posterior.problems import PROBLEMS_HELP

__all__ = ["PROBLEMS_HELP", "image_prior", "make_problem"]


def image_prior(spec: str, device: Any) -> Any:
    """:func:`posterior.problems.prior_from_spec`, a bad name as a :class:`UsageError`."""
    from posterior.problems import SpecError, prior_from_spec

    try:
        return prior_from_spec(spec, device)
    except SpecError as err:
        raise UsageError(str(err)) from None


def make_problem(
    spec: str,
    num_problems: int = 1,
    seed: int = 0,
    device: str = "cpu",
    prior: str = "mnist",
    noise: float | None = None,
) -> Any:
    """:func:`posterior.problems.named_problem`, a bad name as a :class:`UsageError`."""
    from posterior.problems import SpecError, named_problem

    try:
        return named_problem(spec, num_problems, seed, device, prior, noise)
    except SpecError as err:
        raise UsageError(str(err)) from None
