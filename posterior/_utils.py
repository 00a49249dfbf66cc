"""Small shared helpers: seeding, progress bars, finite checks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = ["as_generator", "check_finite", "progress_bar"]


def as_generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` from an int seed (or pass one through).

    ``None`` draws a fresh seed from torch's global generator, so results follow
    ``torch.manual_seed``.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed)
    return gen


def progress_bar(
    iterable: Iterable[T], enabled: bool = True, desc: str | None = None, total: int | None = None
) -> Iterator[T]:
    """``tqdm`` over ``iterable`` when ``enabled``, the bare iterable otherwise."""
    if not enabled:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True))


def check_finite(x: Tensor, what: str) -> None:
    """Raise ``FloatingPointError`` naming ``what`` if ``x`` holds NaN or inf."""
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{what}: NaN or inf encountered")
