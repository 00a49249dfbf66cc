"""A disk cache for a network prior's estimated moments (mean, variance, covariance of ``x_0``).

Estimating them costs ``moment_draws`` ancestral draws of ``moment_steps`` steps (6,400 network
evaluations for the defaults: over a minute on a CPU for the shipped MNIST prior), once per prior
and process. The estimate is stored in a safetensors file (``mean``, ``var``, ``covariance``) whose
metadata holds the prior's :func:`fingerprint`: a SHA-256 of its networks' weights and of every
setting that changes its draws. A file whose fingerprint differs is ignored.

Where: a shipped prior's file sits beside its weights (``posterior/priors/weights/<name>/
moments.safetensors``, written by ``python scripts/prior_moments.py``); any other prior's in
:func:`cache_dir` (``$POSTERIOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/posterior``, else
``~/.cache/posterior``), named by its fingerprint. ``POSTERIOR_CACHE_DIR=off`` turns the user
cache off. Priors without a network (``torch.nn.Module`` attributes) are never cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from posterior.priors.base import DiffusionPrior

__all__ = ["cache_dir", "cache_path", "fingerprint", "load_moments", "save_moments"]

#: Bump when the estimator changes: older files are then ignored.
ESTIMATOR_VERSION = 1
#: Largest flattened event whose covariance is cached (a float32 ``d x d`` file of 64 MiB).
MAX_CACHED_DIM = 4096


def cache_dir() -> Path | None:
    """The user cache folder, or ``None`` when ``POSTERIOR_CACHE_DIR`` is ``off``."""
    explicit = os.environ.get("POSTERIOR_CACHE_DIR")
    if explicit is not None:
        return None if explicit.strip().lower() in ("", "0", "off", "none") else Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "posterior"


def fingerprint(prior: DiffusionPrior) -> str | None:
    """SHA-256 (hex) of the prior's network weights and of everything else its draws depend on
    (class, event shape, dtype, schedule, prediction type, clipping, the estimator's draws and
    steps); ``None`` for a prior without a ``torch.nn.Module`` attribute or too large an event."""
    modules = {k: v for k, v in sorted(vars(prior).items()) if isinstance(v, torch.nn.Module)}
    d = math.prod(int(s) for s in prior.event_shape)
    if not modules or d > MAX_CACHED_DIM:
        return None
    h = hashlib.sha256()
    settings = {
        "version": ESTIMATOR_VERSION,
        "class": type(prior).__qualname__,
        "event_shape": list(prior.event_shape),
        "dtype": str(prior.dtype),
        "prediction_type": getattr(prior, "prediction_type", None),
        "clip_denoised": getattr(prior, "clip_denoised", None),
        "moment_draws": prior.moment_draws,
        "moment_steps": prior.moment_steps,
    }
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(
        prior.schedule.alpha_bar(torch.arange(prior.schedule.num_train_steps))
        .double()
        .cpu()
        .numpy()
        .tobytes()
    )
    for name, module in modules.items():
        for key, value in sorted(module.state_dict().items()):
            h.update(f"{name}.{key}:{tuple(value.shape)}:{value.dtype}".encode())
            h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_path(key: str) -> Path | None:
    """The user cache file for a fingerprint (``None`` when the cache is off)."""
    folder = cache_dir()
    return None if folder is None else folder / f"moments-{key[:32]}.safetensors"


def load_moments(path: Path, key: str, prior: DiffusionPrior) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(mean, var, covariance)`` from ``path`` if it exists, is readable and holds ``key``."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != key:
                return None
            mean, var, cov = (f.get_tensor(n) for n in ("mean", "var", "covariance"))
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError):  # unreadable: recompute
        return None
    shape, d = tuple(prior.event_shape), mean.numel()
    if tuple(mean.shape) != shape or tuple(var.shape) != shape or tuple(cov.shape) != (d, d):
        return None
    placed: dict[str, Any] = {"device": prior.device, "dtype": prior.dtype}
    return mean.to(**placed), var.to(**placed), cov.to(**placed)


def save_moments(path: Path, key: str, mean: Tensor, var: Tensor, covariance: Tensor) -> Path | None:
    """Write the estimate to ``path`` (atomically: a temporary file renamed into place). A folder
    that cannot be written is not an error: returns ``None`` and the estimate stays in memory."""
    from safetensors.torch import save_file

    tensors = {
        "mean": mean.detach().cpu().contiguous(),
        "var": var.detach().cpu().contiguous(),
        "covariance": covariance.detach().cpu().contiguous(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata={"fingerprint": key})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return path
