"""Priors shipped with the package (``ps.load_prior``) and the held-out MNIST digits.

The weights live in ``posterior/priors/weights/<name>/`` as diffusers folders (``unet/`` +
``scheduler/``, safetensors only), trained by ``scripts/train_mnist_prior.py``, with the estimate
of the prior's moments that TDS's covariance twist uses (``moments.safetensors``, written by
``scripts/prior_moments.py``; :mod:`posterior.priors.moment_cache`); the 500 digits
the MNIST prior never saw are in ``posterior/data/mnist_heldout.npz`` (MIT licence notice in
``mnist_heldout.LICENSE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posterior._utils import check_device, check_dtype
from posterior.priors.diffusers import DiffusersPrior
from posterior.priors.latent import LatentPrior

__all__ = ["available_priors", "load_prior", "mnist_heldout", "moments_path", "weights_path"]

_PACKAGE = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = _PACKAGE / "priors" / "weights"
DATA_DIR = _PACKAGE / "data"

#: Default options per shipped prior (images in [-1, 1] get their denoiser clipped there).
_DEFAULTS: dict[str, dict[str, Any]] = {"mnist": {"clip_denoised": (-1.0, 1.0)}}


def available_priors() -> list[str]:
    """Names of the priors whose weights are present in the package."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(
        p.name for p in WEIGHTS_DIR.iterdir() if (p / "unet").is_dir() and not p.name.startswith(".")
    )


def weights_path(name: str = "mnist") -> Path:
    """The diffusers folder of a shipped prior (a clear error naming the available ones)."""
    available = available_priors()
    if name not in available:
        have = ", ".join(available) or "none (the weights folder is empty)"
        raise ValueError(f"unknown prior {name!r}; available priors: {have}")
    return WEIGHTS_DIR / name


def load_prior(
    name: str = "mnist",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> DiffusersPrior | LatentPrior:
    """A prior shipped with the package, loaded offline from its safetensors weights.

    Args:
        name: the prior's name (``"mnist"``: a small DDPM UNet on ``[1, 28, 28]`` digits in
            ``[-1, 1]``, v-prediction, 1000 linear steps; ``"mnist-latent"``: a
            :class:`~posterior.LatentPrior`, a DDPM UNet on ``[4, 7, 7]`` latents and the decoder
            of a small VAE to ``[1, 28, 28]``, trained by ``scripts/train_mnist_latent_prior.py``).
        device, dtype: where to put the network (default: CPU, float32).
        **kwargs: passed to :meth:`DiffusersPrior.from_pretrained` (``clip_denoised`` defaults to
            ``(-1, 1)`` for image priors, ``max_batch_size``).
    """
    device = check_device(device)
    path = weights_path(name)
    options = {**_DEFAULTS.get(name, {}), **kwargs}
    if (path / "vae").is_dir():  # a latent model: unet/ + scheduler/ on latents, vae/
        return LatentPrior.from_pretrained(path, device=device, dtype=dtype, **options)
    prior = DiffusersPrior.from_pretrained(path, device=device, dtype=dtype, **options)
    prior.moment_file = moments_path(name)  # used where its fingerprint matches this prior's
    return prior


def moments_path(name: str = "mnist") -> Path:
    """Where a shipped prior's moment estimate is stored, beside its weights
    (``moments.safetensors``; written by ``python scripts/prior_moments.py NAME``)."""
    return weights_path(name) / "moments.safetensors"


def mnist_heldout(
    indices: int | slice | list[int] | Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """The 500 held-out MNIST digits (never seen by the shipped prior), scaled to ``[-1, 1]``.

    Args:
        indices: which digits (an int, a slice, a list / LongTensor of indices; default all 500).

    Returns:
        ``images: Tensor[n, 1, 28, 28]`` in ``[-1, 1]`` (``-1`` = background) and
        ``labels: LongTensor[n]`` (the digit 0..9).
    """
    import numpy as np

    device, dtype = check_device(device), check_dtype(dtype)
    with np.load(DATA_DIR / "mnist_heldout.npz") as data:
        images, labels = data["images"], data["labels"]
    n = images.shape[0]
    if indices is None:
        indices = slice(None)
    if isinstance(indices, int):
        if not -n <= indices < n:
            raise IndexError(f"index {indices} out of range: there are {n} held-out digits")
        indices = [indices]
    if isinstance(indices, Tensor):
        indices = indices.tolist()
    if isinstance(indices, list) and any(not -n <= int(i) < n for i in indices):
        raise IndexError(f"indices out of range: there are {n} held-out digits")
    x = torch.from_numpy(images[indices].astype(np.float32)) / 127.5 - 1.0
    y = torch.from_numpy(labels[indices].astype(np.int64))
    return x.unsqueeze(1).to(device=device, dtype=dtype), y.to(device)
