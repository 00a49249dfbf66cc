"""Saving a :class:`~posterior.Result` to one safetensors file and loading it back, exactly.

The tensors (samples, traces, ``stats``, tensors among the options) are the file's tensors; the
rest (method, counters, wall time, options, which fields are absent) is JSON in the file's
metadata under ``"posterior.result"``. No pickle: loading a file runs no code. Round trip: every
tensor comes back with its dtype and values (on the CPU, or ``device``), numbers, strings, lists,
tuples, dicts, ``None`` and non-finite floats come back equal (NumPy scalars as Python numbers,
NumPy arrays as arrays); an option that is none of these (a callable, a kernel object) comes back
as its ``repr`` string, and saving says so with a warning. A tensor's name in the file is its path
(``options.a.b``), made unique with ``#n`` where keys holding dots would make two paths equal.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from posterior.samplers.result import Result


__all__ = ["FORMAT", "load_fields", "save_result"]

#: The metadata key holding the JSON part, and the format's version.
FORMAT = "posterior.result"
_VERSION = 1
_TENSOR_FIELDS = ("samples", "log_evidence", "ess", "log_weights", "resampled", "acceptance", "truth")
_TENSOR_FIELDS += ("latents",)  # a latent prior's draws behind the decoded samples
_PLAIN_FIELDS = ("method", "num_evals", "num_vjps", "wall_time", "batched")


def _unique(key: str, tensors: dict[str, Tensor]) -> str:
    """``key``, or ``key#n`` if a tensor already has that name (keys with dots: ``a.b`` / ``a: {b}``)."""
    name, n = key, 1
    while name in tensors:
        name, n = f"{key}#{n}", n + 1
    return name


def _encode(value: Any, key: str, tensors: dict[str, Tensor], lossy: list[str]) -> Any:
    """JSON for ``value``; tensors go to ``tensors`` under ``key`` and leave a reference."""
    if type(value).__module__ == "numpy":  # NumPy scalars as numbers, arrays as tagged tensors
        if getattr(value, "ndim", None) == 0:
            value = value.item()
        elif value.dtype.kind in "biuf":
            name = _unique(key, tensors)
            tensors[name] = torch.from_numpy(value.copy())
            return {"__numpy__": name}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):  # JSON has no inf / nan: tag them
        return value if value == value and abs(value) != float("inf") else {"__float__": repr(value)}
    if isinstance(value, Tensor):
        name = _unique(key, tensors)
        tensors[name] = value
        return {"__tensor__": name}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors, lossy) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{i}", tensors, lossy) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{key}.{k}", tensors, lossy) for k, v in value.items()}}
    lossy.append(key)
    return {"__repr__": repr(value)}


def _decode(value: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, inner), *_ = value.items()
    if tag == "__float__":
        return float(inner)
    if tag == "__tensor__":
        return tensors[inner]
    if tag == "__numpy__":
        return tensors[inner].cpu().numpy()
    if tag == "__tuple__":
        return tuple(_decode(v, tensors) for v in inner)
    if tag == "__dict__":
        return {k: _decode(v, tensors) for k, v in inner.items()}
    if tag == "__repr__":
        return inner
    raise ValueError(f"unknown tag {tag!r} in a saved Result")


def save_result(result: Result, path: str | Path) -> Path:
    """Write ``result`` to ``path`` (a ``.safetensors`` file, created or replaced)."""
    from safetensors.torch import save_file

    if not all(hasattr(result, name) for name in (*_TENSOR_FIELDS, *_PLAIN_FIELDS, "stats", "options")):
        raise TypeError(f"result must be a Result, got {type(result).__name__}")
    tensors: dict[str, Tensor] = {}
    lossy: list[str] = []
    meta: dict[str, Any] = {"version": _VERSION, "present": []}
    for name in _TENSOR_FIELDS:
        value = getattr(result, name)
        if value is not None:
            tensors[name] = value
            meta["present"].append(name)
    for name in _PLAIN_FIELDS:
        meta[name] = _encode(getattr(result, name), name, tensors, lossy)
    meta["stats"] = list(result.stats)
    for k, v in result.stats.items():
        tensors[f"stats.{k}"] = v
    parameters = getattr(result, "parameters", None)
    meta["parameters"] = None if parameters is None else list(parameters)
    for k, v in (parameters or {}).items():
        tensors[f"parameters.{k}"] = v
    meta["options"] = _encode(dict(result.options), "options", tensors, lossy)
    if lossy:
        warnings.warn(
            f"Result.save: {', '.join(lossy)} cannot be stored as data; saved as its repr (a string)",
            UserWarning,
            stacklevel=3,
        )
    # safetensors refuses views that share memory: store a contiguous CPU copy of each
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    path = Path(path)
    save_file(flat, str(path), metadata={FORMAT: json.dumps(meta)})
    return path


def load_fields(path: str | Path, device: torch.device | str | None = None) -> dict[str, Any]:
    """The fields of a :class:`~posterior.Result` written by :func:`save_result` (tensors on the
    CPU, or on ``device``): ``Result(**load_fields(path))`` is the saved result."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved Result at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a malformed file
        raise ValueError(f"cannot read {str(path)!r} as a saved Result: {err}") from None
    if FORMAT not in metadata:
        raise ValueError(
            f"{str(path)!r} is a safetensors file but not a saved Result (no {FORMAT!r} metadata)"
        )
    if device is not None:
        tensors = {k: v.to(device) for k, v in tensors.items()}
    try:
        return _fields(json.loads(metadata[FORMAT]), tensors, path)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        if str(err).startswith(repr(str(path))):  # a version mismatch, already one line
            raise
        what = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise ValueError(f"{str(path)!r} holds malformed {FORMAT!r} metadata ({what})") from None


def _fields(meta: Any, tensors: dict[str, Tensor], path: Path) -> dict[str, Any]:
    if meta.get("version") != _VERSION:
        raise ValueError(
            f"{str(path)!r} holds a saved Result of version {meta.get('version')}, not {_VERSION}"
        )
    fields: dict[str, Any] = {name: tensors.get(name) for name in _TENSOR_FIELDS}
    for name in meta["present"]:
        fields[name] = tensors[name]
    for name in _PLAIN_FIELDS:
        fields[name] = _decode(meta[name], tensors)
    fields["stats"] = {k: tensors[f"stats.{k}"] for k in meta["stats"]}
    names = meta.get("parameters")
    fields["parameters"] = None if names is None else {k: tensors[f"parameters.{k}"] for k in names}
    fields["options"] = _decode(meta["options"], tensors)
    return fields
