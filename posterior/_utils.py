"""Small shared helpers: seeding, progress bars, finite checks, device checks, option validation.

The ``check_*`` validators return the value (converted where noted) or raise a one-line
``ValueError`` naming the argument; every sampler and kernel validates its options with them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = [
    "SUPPORTED_DTYPES",
    "as_generator",
    "cast_data",
    "check_bool",
    "check_choice",
    "check_count",
    "check_device",
    "check_dtype",
    "check_finite",
    "check_fraction",
    "check_int",
    "check_number",
    "check_positive",
    "check_positive_int",
    "progress_bar",
]

#: The dtypes the samplers run in (half precision cannot hold the particle weights nor the schedule).
SUPPORTED_DTYPES = (torch.float32, torch.float64)


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
    if dev.type == "meta":
        raise ValueError(f"{name}={str(device)!r}: the meta device holds no data; use e.g. 'cpu' or 'cuda'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={str(device)!r} requested but MPS is not available on this machine")
    return dev


def check_dtype(dtype: torch.dtype | None, name: str = "dtype") -> torch.dtype | None:
    """``dtype`` if it is one of :data:`SUPPORTED_DTYPES` (``None`` passes through), else a one-line
    ``ValueError`` naming ``name`` (a string such as ``"float64"`` would be ignored downstream;
    float16 and bfloat16 would fail mid-run)."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name}={dtype} is not supported: {UNSUPPORTED_DTYPE}")
    return dtype


#: Why a half-precision dtype is refused, and the fix.
UNSUPPORTED_DTYPE = (
    "use torch.float32 or torch.float64 (half precision cannot hold the particle weights and the "
    "noise schedule)"
)


def cast_data(value: Any, dtype: torch.dtype, device: torch.device, what: str) -> Tensor:
    """``value`` (a tensor or an array of real numbers) as a ``Tensor`` of ``dtype`` on ``device``,
    with a ``UserWarning`` naming ``what`` if the cast changes values beyond rounding: a finite
    value that overflows, a non-zero one that underflows (to zero or a subnormal), an integer that
    the new dtype cannot hold. Booleans and complex numbers are a one-line ``TypeError``."""
    v = torch.as_tensor(value)
    if v.dtype == torch.bool or v.is_complex():
        raise TypeError(f"{what} must hold real numbers, got a {v.dtype} tensor")
    out = v.to(device=device, dtype=dtype)
    if v.dtype == dtype:
        return out
    src = v.to(torch.float64) if v.dtype != torch.float64 else v
    back = out.to(device=src.device, dtype=torch.float64)
    tiny = torch.finfo(dtype).tiny
    lost = (torch.isfinite(src) & ~torch.isfinite(back)) | ((src != 0) & (back.abs() < tiny))
    lost |= (src == src.round()) & (back != src) & torch.isfinite(back)
    if lost.any():
        i = int(lost.flatten().nonzero()[0])
        warnings.warn(
            f"{what} converted from {v.dtype} to the prior's {dtype}: {int(lost.sum())} of {v.numel()} "
            f"values changed beyond rounding (e.g. {src.flatten()[i].item():g} -> "
            f"{back.flatten()[i].item():g})",
            stacklevel=3,
        )
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(value: Any, name: str, minimum: int = 0, allow_none: bool = False) -> Any:
    """``value`` if it is an integer ``>= minimum`` (``None`` passes where ``allow_none``), else a
    one-line ``ValueError`` naming ``name``. ``True``/``False`` are refused."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < minimum:
        if minimum == 1:
            what = "a positive integer"
        elif minimum == 0:
            what = "a non-negative integer"
        else:
            what = f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_positive_int(value: Any, name: str, allow_none: bool = False) -> Any:
    """``value`` if it is a positive integer (or ``None`` where ``allow_none``), else a ``ValueError``."""
    return check_int(value, name, 1, allow_none)


def check_count(n: int, name: str) -> int:
    """``n`` if it is a positive integer, else a one-line ``ValueError`` naming ``name``."""
    return check_int(n, name, 1)


def check_number(
    value: Any,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> Any:
    """``float(value)`` if it is a real number (not a bool) in the interval from ``low`` to
    ``high`` (open at an end where ``*_open``; an infinite end is always open, so the value is
    finite), else a one-line ``ValueError`` naming ``name`` and the interval. ``None`` passes
    through where ``allow_none``."""
    if value is None and allow_none:
        return None
    ok = _is_real(value) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        if low == 0 and high == math.inf:
            what = "a positive finite number" if low_open else "a non-negative finite number"
        else:
            lo = "(" if low_open or low == -math.inf else "["
            hi = ")" if high_open or high == math.inf else "]"
            what = f"a number in {lo}{low:g}, {high:g}{hi}"
        raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")
    return float(value)


def check_positive(value: Any, name: str, allow_none: bool = False) -> Any:
    """``float(value)`` if it is a positive finite number (or ``None`` where ``allow_none``)."""
    return check_number(value, name, 0.0, low_open=True, allow_none=allow_none)


def check_fraction(value: Any, name: str, open_interval: bool = False) -> float:
    """``float(value)`` if it lies in ``[0, 1]`` (``(0, 1)`` with ``open_interval``), else a
    one-line ``ValueError`` naming ``name``."""
    return check_number(value, name, 0.0, 1.0, low_open=open_interval, high_open=open_interval)


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a ``bool``, else a one-line ``ValueError`` naming ``name`` (a string
    such as ``"false"`` would otherwise read as true)."""
    if not isinstance(value, bool):
        hint = " (a string, not a bool)" if isinstance(value, str) else ""
        raise ValueError(f"{name} must be True or False, got {value!r}{hint}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a one-line ``ValueError`` naming ``name``."""
    if isinstance(value, Tensor) or value not in tuple(choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
