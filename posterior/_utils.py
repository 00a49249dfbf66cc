"""Small shared helpers: seeding, progress bars, finite checks, device checks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = ["as_generator", "check_count", "check_device", "check_dtype", "check_finite", "progress_bar"]


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


def check_device(device: torch.device | str | None, name: str = "device") -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` passes through), or a one-line ``ValueError``
    naming the argument ``name`` when it is not a device string or is not available here
    (``"cuda"`` without CUDA, ``"cuda:3"`` on a two-GPU machine, ``"mps"`` without MPS)."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"{name} must be a torch.device or a string such as 'cpu' or 'cuda', got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown {name} {device!r} (use e.g. 'cpu', 'cuda', 'cuda:0')") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(device)!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ValueError(f"{name}={str(device)!r} requested but this machine has {count} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={str(device)!r} requested but MPS is not available on this machine")
    return dev


def check_dtype(dtype: torch.dtype | None, name: str = "dtype") -> torch.dtype | None:
    """``dtype`` if it is a floating ``torch.dtype`` (``None`` passes through), else a one-line
    ``ValueError`` naming ``name`` (a string such as ``"float64"`` would be ignored downstream)."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    return dtype


def check_count(n: int, name: str) -> int:
    """``n`` if it is a positive integer, else a one-line ``ValueError`` naming ``name``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n
