"""Latent diffusion priors: a diffusion prior on latents ``z`` and a decoder ``x = D(z)``.

A latent diffusion model (Rombach et al., 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models") is a denoiser on a latent ``z`` and a decoder ``D``; its prior on images is
the push-forward of the latent prior through ``D``. The posterior of ``x = D(z)`` given
``y ~ p(y | A(x))`` is the push-forward of the latent posterior
``p(z | y) propto p(z) p(y | A(D(z)))``: an inverse problem on ``z`` with the nonlinear operator
``A o D`` and the same noise model, which every method taking a differentiable nonlinear
operator samples as it is. ``ps.sample`` does this for a problem whose prior is a
:class:`LatentPrior` (see :mod:`posterior.samplers.latent`): it samples the latent posterior and
decodes the draws. Exact samplers stay exact: their latent draws converge to the latent posterior
of the chain they simulate, and the decoded draws to its push-forward.

:meth:`LatentPrior.from_pretrained` loads a local ``diffusers`` folder: ``unet/`` (a
``UNet2DModel`` on latents) + ``scheduler/`` + ``vae/`` (``AutoencoderKL``) or ``vqvae/``
(``VQModel``, the unconditional LDM layout), safetensors weights only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posterior._utils import check_device, check_dtype, check_positive_int
from posterior.priors.base import DiffusionPrior
from posterior.priors.diffusers import DiffusersPrior

__all__ = ["LatentPrior", "LinearDecoder"]

_WEIGHTS = "diffusion_pytorch_model.safetensors"


class LinearDecoder:
    """The affine decoder ``D(z) = W z + b``, ``W: [d, k]`` (tall: ``d >= k``), ``b: [d]``.

    With a Gaussian-mixture latent prior it makes a degenerate mixture prior in ``x``-space whose
    posterior is known in closed form (:func:`posterior.samplers.latent.latent_exact_posterior`):
    the reference of the exactness tests.

    Args:
        matrix: ``Tensor[d, k]``.
        bias: ``Tensor[d]`` (default zeros).
        latent_shape / event_shape: shapes of ``z`` (``k`` entries) and ``x`` (``d`` entries);
            default ``(k,)`` and ``(d,)``.
    """

    def __init__(
        self,
        matrix: Tensor,
        bias: Tensor | None = None,
        latent_shape: tuple[int, ...] | None = None,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        if not isinstance(matrix, Tensor) or matrix.dim() != 2 or not matrix.is_floating_point():
            raise ValueError("matrix must be a floating-point Tensor[d, k]")
        d, k = matrix.shape
        bias = torch.zeros(d, dtype=matrix.dtype, device=matrix.device) if bias is None else bias
        if not isinstance(bias, Tensor) or tuple(bias.shape) != (d,):
            raise ValueError(f"bias must be a Tensor[{d}]")
        self.latent_shape = (k,) if latent_shape is None else tuple(latent_shape)
        self.event_shape = (d,) if event_shape is None else tuple(event_shape)
        if math.prod(self.latent_shape) != k or math.prod(self.event_shape) != d:
            raise ValueError(
                f"latent_shape {list(self.latent_shape)} / event_shape {list(self.event_shape)} do not "
                f"match the matrix's {k} columns / {d} rows"
            )
        self.matrix, self.bias = matrix, bias.to(matrix)

    def __call__(self, z: Tensor) -> Tensor:
        flat = z.reshape(z.shape[0], -1) @ self.matrix.T + self.bias
        return flat.reshape(z.shape[0], *self.event_shape)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LinearDecoder:
        move = {"device": device, "dtype": dtype}
        return LinearDecoder(
            self.matrix.to(**move), self.bias.to(**move), self.latent_shape, self.event_shape
        )

    def __repr__(self) -> str:
        return f"LinearDecoder({list(self.latent_shape)} -> {list(self.event_shape)})"


class LatentPrior(DiffusionPrior):
    """A diffusion prior on latents with a decoder: the prior of ``x = D(z)``, ``z ~ latent_prior``.

    Args:
        latent_prior: a :class:`~posterior.priors.DiffusionPrior` on ``z: [*latent_shape]``.
        decoder: a differentiable callable ``Tensor[n, *latent_shape] -> Tensor[n, *event_shape]``
            acting per sample (a ``torch.nn.Module`` is put in eval mode with its parameters
            frozen). It is called once on two latents here to find ``event_shape``.
        encoder: optional ``Tensor[n, *event_shape] -> Tensor[n, *latent_shape]`` (an
            approximate inverse of ``decoder``: :meth:`encode`); the samplers do not need it.
        max_batch_size: largest batch the decoder sees at once outside autograd (the final
            decoding of the draws); default the latent prior's.

    Attributes:
        latent_shape: shape of ``z``; ``event_shape``: shape of ``x = D(z)``.
        schedule: the latent prior's. ``num_evals`` counts per-sample decoder calls (the latent
            network's calls are counted by ``latent_prior``); ``ps.sample`` reports both together.

    ``ps.sample`` on a problem with this prior samples the latent problem (operator ``A o D``,
    same noise, :func:`posterior.samplers.latent.latent_problem`) and decodes:
    ``result.samples`` are the decoded draws, ``result.latents`` the latent ones. The network
    itself acts on latents: :meth:`model_output` in ``x``-space refuses.
    """

    def __init__(
        self,
        latent_prior: DiffusionPrior,
        decoder: Callable[[Tensor], Tensor],
        encoder: Callable[[Tensor], Tensor] | None = None,
        *,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(latent_prior, DiffusionPrior) or isinstance(latent_prior, LatentPrior):
            raise TypeError(
                f"latent_prior must be a DiffusionPrior on latents, got {type(latent_prior).__name__}"
            )
        if not callable(decoder):
            raise TypeError(f"decoder must be callable, got {type(decoder).__name__}")
        if encoder is not None and not callable(encoder):
            raise TypeError(f"encoder must be callable or None, got {type(encoder).__name__}")
        for module in (decoder, encoder):
            if isinstance(module, torch.nn.Module):
                module.eval().requires_grad_(False)
        self.latent_prior, self.decoder, self.encoder = latent_prior, decoder, encoder
        self.schedule = latent_prior.schedule
        self.latent_shape = tuple(latent_prior.event_shape)
        self.max_batch_size = check_positive_int(max_batch_size, "max_batch_size", allow_none=True)
        if self.max_batch_size is None:
            self.max_batch_size = latent_prior.max_batch_size
        probe = torch.linspace(-1.0, 1.0, 2 * math.prod(self.latent_shape), dtype=self.dtype)
        with torch.no_grad():
            try:
                out = decoder(probe.to(self.device).reshape(2, *self.latent_shape))
            except Exception as err:
                raise ValueError(
                    f"decoder failed on latents [2, {', '.join(map(str, self.latent_shape))}] "
                    f"({type(err).__name__}: {err}); it must map Tensor[n, *latent_shape] to "
                    "Tensor[n, *event_shape]"
                ) from err
        if not isinstance(out, Tensor) or not out.is_floating_point() or out.dim() < 2 or out.shape[0] != 2:
            got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"decoder must return a floating Tensor[n, *event_shape]; on 2 latents it gave {got}"
            )
        self.event_shape = tuple(out.shape[1:])

    # ----------------------------------------------------------------- the latent side
    @property
    def device(self) -> torch.device:
        return self.latent_prior.device

    @property
    def dtype(self) -> torch.dtype:
        return self.latent_prior.dtype

    @property
    def linear_decoder(self) -> LinearDecoder | None:
        """The decoder where it is a :class:`LinearDecoder` (a closed-form posterior exists),
        else ``None``."""
        return self.decoder if isinstance(self.decoder, LinearDecoder) else None

    def decode(self, z: Tensor) -> Tensor:
        """``D(z)`` for ``z: Tensor[*lead, *latent_shape]``; returns ``Tensor[*lead, *event_shape]``.

        Differentiable when autograd is on (then in one call); otherwise in chunks of
        ``max_batch_size``. Counts one decoder evaluation per latent in :attr:`num_evals`.
        """
        k = len(self.latent_shape)
        if tuple(z.shape[z.dim() - k :]) != self.latent_shape:
            raise ValueError(
                f"expected latents [..., {', '.join(map(str, self.latent_shape))}], got {list(z.shape)}"
            )
        lead = z.shape[: z.dim() - k]
        flat = z.reshape(-1, *self.latent_shape)
        n = flat.shape[0]
        if torch.is_grad_enabled() and flat.requires_grad:
            x = self.decoder(flat)
        else:
            with torch.no_grad():
                x = torch.cat([self.decoder(flat[sl]) for sl in self._chunks(n)]) if n else self.decoder(flat)
        self.num_evals += n
        return x.reshape(*lead, *self.event_shape)

    def encode(self, x: Tensor) -> Tensor:
        """``E(x)`` for ``x: Tensor[*lead, *event_shape]`` (needs ``encoder``):
        ``Tensor[*lead, *latent_shape]``."""
        if self.encoder is None:
            raise ValueError("this LatentPrior has no encoder: pass encoder= to encode images")
        k = len(self.event_shape)
        lead = x.shape[: x.dim() - k]
        with torch.no_grad():
            z = self.encoder(x.reshape(-1, *self.event_shape))
        return z.reshape(*lead, *self.latent_shape)

    def model_output(self, x_t: Tensor, t: Tensor) -> Tensor:
        raise ValueError(
            "a LatentPrior's network acts on latents, not on x: ps.sample samples the latent posterior "
            "and decodes it; use prior.latent_prior for the latent denoiser"
        )

    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | int | None = None,
        *,
        num_steps: int | None = None,
        eta: float = 1.0,
        progress: bool = False,
    ) -> Tensor:
        """Decoded ancestral draws of the latent prior, ``Tensor[num_samples, *event_shape]``."""
        # the latent prior checks num_samples and makes the generator on its (= this) device
        z = self.latent_prior.sample(num_samples, generator, num_steps=num_steps, eta=eta, progress=progress)
        return self.decode(z)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LatentPrior:
        """This prior with its latent prior, decoder and encoder on ``device`` / ``dtype``."""
        device, dtype = check_device(device), check_dtype(dtype)
        if (device is None or device == self.device) and dtype in (None, self.dtype):
            return self

        def move(f: Any) -> Any:
            if isinstance(f, torch.nn.Module | LinearDecoder):
                return f.to(device=device, dtype=dtype)
            return f

        return LatentPrior(
            self.latent_prior.to(device, dtype),
            move(self.decoder),
            move(self.encoder),
            max_batch_size=self.max_batch_size,
        )

    def __repr__(self) -> str:
        shapes = f"latents {list(self.latent_shape)} -> {list(self.event_shape)}"
        return f"LatentPrior({self.latent_prior!r}, {shapes})"

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        max_batch_size: int | None = 256,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        quantize: bool = True,
    ) -> LatentPrior:
        """A latent diffusion model from a local ``diffusers`` folder (safetensors weights only).

        The folder holds ``unet/`` (a ``UNet2DModel`` on latents), ``scheduler/`` and either
        ``vae/`` (an ``AutoencoderKL``: ``D(z) = vae.decode(z / scaling_factor + shift_factor)``,
        encoder ``(mean(E(x)) - shift_factor) * scaling_factor``) or ``vqvae/`` (a ``VQModel``, the
        unconditional LDM layout: ``D(z) = vqvae.decode(z / scaling_factor)``, quantised as the
        LDM pipeline does unless ``quantize=False``). Anything else is refused in one line.
        """
        import diffusers

        device, dtype = check_device(device), check_dtype(dtype)
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"no such model folder: {root}")
        missing = [p for p in ("unet", "scheduler") if not (root / p).is_dir()]
        if missing:
            raise ValueError(
                f"{root} is not a latent diffusion folder: it has no {' or '.join(missing)}/ subfolder"
            )
        kinds = {"vae": "AutoencoderKL", "vqvae": "VQModel"}
        found = [p for p in kinds if (root / p).is_dir()]
        if len(found) != 1:
            raise ValueError(
                f"{root} must hold one autoencoder folder, vae/ (AutoencoderKL) or vqvae/ (VQModel)"
            )
        folder = root / found[0]
        if not (folder / "config.json").is_file() or not (folder / _WEIGHTS).is_file():
            raise FileNotFoundError(
                f"{folder} needs config.json and {_WEIGHTS} (weights are read from safetensors only)"
            )
        name = json.loads((folder / "config.json").read_text()).get("_class_name")
        if name != kinds[found[0]]:
            raise ValueError(f"{folder} holds a {name}, expected a {kinds[found[0]]}")
        load_kw: dict[str, Any] = {"use_safetensors": True, "low_cpu_mem_usage": False}
        if dtype is not None:
            load_kw["torch_dtype"] = dtype
        vae = getattr(diffusers, name).from_pretrained(folder, **load_kw)
        if device is not None:
            vae = vae.to(device)
        latent = DiffusersPrior.from_pretrained(
            root / "unet", root / "scheduler", max_batch_size=max_batch_size, device=device, dtype=dtype
        )
        scale = float(vae.config.get("scaling_factor") or 1.0)
        shift = float(vae.config.get("shift_factor") or 0.0)
        if name == "AutoencoderKL":
            decoder: Callable[[Tensor], Tensor] = _KLDecoder(vae, scale, shift)
            encoder: Callable[[Tensor], Tensor] | None = _KLEncoder(vae, scale, shift)
        else:
            decoder, encoder = _VQDecoder(vae, scale, quantize), None
        prior = cls(latent, decoder, encoder, max_batch_size=max_batch_size)
        prior.autoencoder = vae
        return prior


class _KLDecoder(torch.nn.Module):
    """``AutoencoderKL`` decoding of scaled latents."""

    def __init__(self, vae: Any, scale: float, shift: float) -> None:
        super().__init__()
        self.vae, self.scale, self.shift = vae, scale, shift

    def forward(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scale + self.shift).sample


class _KLEncoder(_KLDecoder):
    """``AutoencoderKL`` encoding (the posterior mean) to scaled latents."""

    def forward(self, x: Tensor) -> Tensor:
        return (self.vae.encode(x).latent_dist.mean - self.shift) * self.scale


class _VQDecoder(torch.nn.Module):
    """``VQModel`` decoding of scaled latents (quantised first, as the LDM pipeline does)."""

    def __init__(self, vae: Any, scale: float, quantize: bool) -> None:
        super().__init__()
        self.vae, self.scale, self.quantize = vae, scale, quantize

    def forward(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scale, force_not_quantize=not self.quantize).sample
