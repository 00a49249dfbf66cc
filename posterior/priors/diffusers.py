"""A diffusion prior from a ``diffusers`` ``UNet2DModel`` and its scheduler.

The scheduler decides the schedule and what the network predicts:

* DDPM / DDIM and every scheduler with ``alphas_cumprod``: a :class:`VPSchedule`; the UNet's raw
  output (``epsilon``, ``sample`` or ``v_prediction``, from the scheduler's config) is converted
  to the noise prediction, Tweedie denoiser and score by
  :class:`~posterior.priors.base.DiffusionPrior` (Ho et al., 2020; Song et al., 2021).
* EDM schedulers (``EDMEulerScheduler``, ``EDMDPMSolverMultistepScheduler``): an
  :class:`EDMSchedule` on the scheduler's noise levels; the UNet sees Karras et al.'s (2022)
  preconditioned input ``c_in x`` and noise ``0.25 log sigma``, and its output (``epsilon`` or
  ``v_prediction``) gives the denoiser ``c_skip x + c_out F``.
* ``FlowMatchEulerDiscreteScheduler``: a :class:`FlowSchedule`; the UNet sees ``x_tau`` and the
  timestep ``tau T`` and predicts the velocity ``v = eps - x_0``, so ``x_0 = x_tau - tau v``.

The samplers call the prior in the VP parametrisation (see :mod:`posterior.schedule`); for EDM
and flow models :meth:`DiffusersPrior.model_output` maps ``x`` to the native variable first and
returns the denoiser (``prediction_type = "sample"``). ``diffusers`` is imported lazily so that
``import posterior`` stays fast, and weights are only ever read from safetensors files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posterior._utils import check_device, check_dtype
from posterior.priors.base import PREDICTION_TYPES, DiffusionPrior
from posterior.schedule import EDMSchedule, FlowSchedule, NoiseSchedule, VPSchedule

__all__ = ["DiffusersPrior"]

_WEIGHTS = "diffusion_pytorch_model.safetensors"


class DiffusersPrior(DiffusionPrior):
    """A pretrained ``diffusers.UNet2DModel`` with its noise schedule, as a diffusion prior.

    Args:
        unet: a ``diffusers.UNet2DModel`` (any module with its ``config`` and call signature
            ``unet(x_t, t).sample``) on images ``[C, H, W]``.
        scheduler: the diffusers scheduler the model was trained with: ``DDPMScheduler``,
            ``DDIMScheduler``, ... (anything with ``alphas_cumprod`` and ``config.prediction_type``),
            an EDM scheduler (``EDMEulerScheduler``) or ``FlowMatchEulerDiscreteScheduler``. Any
            other raises a ``ValueError`` naming its class.
        clip_denoised: optional ``(low, high)`` range into which the denoiser ``x0`` is clipped
            (``(-1, 1)`` for images in the diffusers convention); ``None``: no clipping.
        max_batch_size: largest batch sent through the UNet at once.

    Attributes:
        event_shape: ``(in_channels, H, W)`` from the UNet config.
        prediction_type: what :meth:`model_output` returns: the scheduler's for VP models,
            ``"sample"`` (the denoiser) for EDM and flow models.
        network_prediction: what the UNet itself predicts (``"epsilon"``, ``"sample"``,
            ``"v_prediction"``, or ``"velocity"`` for flows).
        schedule: ``VPSchedule.from_diffusers(scheduler)``, an :class:`EDMSchedule` or a
            :class:`FlowSchedule`.

    Inputs are ``x_t: Tensor[n, C, H, W]`` on the UNet's device and dtype. The network runs under
    ``torch.no_grad`` except inside :meth:`denoise_with_grad`; its parameters never require
    gradients.
    """

    def __init__(
        self,
        unet: Any,
        scheduler: Any,
        clip_denoised: tuple[float, float] | None = None,
        max_batch_size: int | None = 256,
    ) -> None:
        super().__init__()
        if not isinstance(unet, torch.nn.Module) or not hasattr(unet, "config"):
            raise TypeError(f"unet must be a diffusers UNet2DModel, got {type(unet).__name__}")
        cfg = unet.config
        in_ch, out_ch, size = _get(cfg, "in_channels"), _get(cfg, "out_channels"), _get(cfg, "sample_size")
        if in_ch is None or size is None:
            raise ValueError("the UNet config has no in_channels / sample_size: is this a UNet2DModel?")
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.event_shape = (int(in_ch), int(h), int(w))

        if not hasattr(scheduler, "config"):
            raise TypeError(f"scheduler must be a diffusers scheduler, got {type(scheduler).__name__}")
        self.schedule, self.network_prediction = _schedule_of(scheduler)
        self.prediction_type = "sample" if self.schedule.kind in ("edm", "flow") else self.network_prediction
        # learned-variance models (out_channels = 2 C) output [mean part, variance part]
        variance = str(_get(scheduler.config, "variance_type") or "")
        if (
            out_ch is not None
            and out_ch != in_ch
            and not (out_ch == 2 * in_ch and variance.startswith("learned"))
        ):
            raise ValueError(
                f"the UNet maps {in_ch} channels to {out_ch}: expected out_channels == in_channels "
                "(or 2 x in_channels with a learned-variance scheduler)"
            )
        self._out_channels = int(in_ch)
        self._sigma_data = float(_get(scheduler.config, "sigma_data") or 0.5)
        self._timestep_scale = float(_get(scheduler.config, "num_train_timesteps") or 1000)

        if clip_denoised is not None:
            lo, hi = (float(v) for v in clip_denoised)
            if not lo < hi:
                raise ValueError(f"clip_denoised must be (low, high) with low < high, got {clip_denoised}")
            clip_denoised = (lo, hi)
        self.clip_denoised = clip_denoised
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive integer or None, got {max_batch_size}")
        self.max_batch_size = max_batch_size

        unet.eval()
        unet.requires_grad_(False)  # VJPs are taken with respect to x_t only
        self.unet = unet
        self.scheduler = scheduler

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        scheduler: Any | str | Path | None = None,
        *,
        clip_denoised: tuple[float, float] | None = None,
        max_batch_size: int | None = 256,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> DiffusersPrior:
        """Load a UNet and its scheduler from a local folder (safetensors weights only).

        ``path`` is either a pipeline folder holding ``unet/`` and ``scheduler/`` subfolders, or a
        model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) with the
        scheduler given as ``scheduler`` (a scheduler object or a folder holding
        ``scheduler_config.json``), or found in the model folder itself or in a ``scheduler/``
        folder next to it.
        """
        from diffusers import UNet2DModel

        device, dtype = check_device(device), check_dtype(dtype)
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"no such model folder: {root}")
        latent = [p for p in ("vae", "vqvae") if (root / p).is_dir()]
        if latent:
            raise ValueError(
                f"{root} is a latent diffusion folder (unet/ + {latent[0]}/): load it with "
                "ps.LatentPrior.from_pretrained"
            )
        if (root / "unet").is_dir():
            unet_dir = root / "unet"
            candidates = [root / "scheduler"]
        elif (root / "config.json").is_file():
            unet_dir = root
            candidates = [root, root.parent / "scheduler"]
        else:
            raise FileNotFoundError(
                f"{root} holds no UNet: expected a pipeline folder with a unet/ subfolder, or a model "
                "folder with config.json and diffusion_pytorch_model.safetensors"
            )
        if not (unet_dir / "config.json").is_file():
            raise FileNotFoundError(f"{unet_dir} has no config.json")
        if not ((unet_dir / _WEIGHTS).is_file() or (unet_dir / f"{_WEIGHTS}.index.json").is_file()):
            found = sorted(p.name for p in unet_dir.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
            extra = f" (found {', '.join(found)}; convert them to safetensors)" if found else ""
            raise FileNotFoundError(
                f"{unet_dir} has no {_WEIGHTS}: weights are only read from safetensors files{extra}"
            )

        if scheduler is None:
            sched_dir = next((c for c in candidates if (c / "scheduler_config.json").is_file()), None)
            if sched_dir is None:
                raise FileNotFoundError(
                    f"no scheduler found for {root}: expected scheduler_config.json in "
                    f"{' or '.join(str(c) for c in candidates)}; pass scheduler= (an object or a folder)"
                )
            scheduler = _load_scheduler(sched_dir)
        elif isinstance(scheduler, (str, Path)):
            if not (Path(scheduler) / "scheduler_config.json").is_file():
                raise FileNotFoundError(f"{scheduler} has no scheduler_config.json")
            scheduler = _load_scheduler(Path(scheduler))

        cfg = json.loads((unet_dir / "config.json").read_text())
        if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
            raise ValueError(f"{unet_dir} holds a {cfg['_class_name']}, not a UNet2DModel")
        load_kw: dict[str, Any] = {"use_safetensors": True, "low_cpu_mem_usage": False}
        if dtype is not None:
            load_kw["torch_dtype"] = dtype
        unet = UNet2DModel.from_pretrained(unet_dir, **load_kw)
        if device is not None:
            unet = unet.to(device)
        return cls(unet, scheduler, clip_denoised=clip_denoised, max_batch_size=max_batch_size)

    # ----------------------------------------------------------------- DiffusionPrior
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> DiffusersPrior:
        """Move the UNet (in place) and return ``self``."""
        self.unet.to(device=check_device(device), dtype=check_dtype(dtype))
        return self

    def _check_input(self, x_t: Tensor) -> None:
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != self.event_shape:
            C, H, W = self.event_shape
            raise ValueError(
                f"this model works on images of {C} channel(s) and size {H}x{W}: expected x_t of shape "
                f"[n, {C}, {H}, {W}], got {list(x_t.shape)}"
            )

    def model_output(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The prediction for the VP variable ``x_t: Tensor[n, C, H, W]`` at times
        ``t: LongTensor[n]``: the UNet's raw output for VP models; for EDM and flow models, the
        denoiser ``x_0`` from the UNet run on the native ``x = s_t x_t`` and noise level."""
        kind = self.schedule.kind
        if kind == "vp":
            return self._unet(x_t, t)
        x = self.schedule.to_native(x_t, t)
        level = self.schedule.sigma(t, like=x_t)  # EDM: sigma; flow: tau
        col = level.reshape(-1, 1, 1, 1)
        if kind == "edm":  # Karras et al. (2022), Table 1; diffusers' EDM preconditioning
            sd2 = self._sigma_data**2
            norm = (col**2 + sd2).sqrt()
            out = self._unet(x / norm, 0.25 * level.log())
            c_out = col * self._sigma_data / norm
            sign = -1.0 if self.network_prediction == "v_prediction" else 1.0
            return sd2 / norm**2 * x + sign * c_out * out
        # flow matching: the UNet predicts v = eps - x_0 at timestep tau * T
        v = self._unet(x, level * self._timestep_scale)
        return x - col * v

    def _unet(self, x: Tensor, timestep: Tensor) -> Tensor:
        out = self.unet(x, timestep).sample
        return out[:, : self._out_channels] if out.shape[1] != self._out_channels else out

    def __repr__(self) -> str:
        clip = f", clip_denoised={self.clip_denoised}" if self.clip_denoised else ""
        return (
            f"DiffusersPrior({list(self.event_shape)}, {self.network_prediction}, "
            f"{type(self.scheduler).__name__} T={self.schedule.num_train_steps}{clip})"
        )


def _schedule_of(scheduler: Any) -> tuple[NoiseSchedule, str]:
    """The schedule of a diffusers scheduler and what its network predicts; a ``ValueError``
    naming the scheduler class when it maps to none of VP, EDM and flow matching."""
    name = type(scheduler).__name__
    cfg = scheduler.config
    pred = _get(cfg, "prediction_type") or "epsilon"
    if name.startswith("EDM"):
        if pred not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"unsupported prediction_type {pred!r} for {name}; use 'epsilon' or 'v_prediction'"
            )
        T = int(_get(cfg, "num_train_timesteps") or 1000)
        smin, smax = float(_get(cfg, "sigma_min")), float(_get(cfg, "sigma_max"))
        if (_get(cfg, "sigma_schedule") or "karras") == "exponential":
            sigmas = torch.linspace(math.log(smin), math.log(smax), T, dtype=torch.float64).exp()
            return EDMSchedule.from_sigmas(sigmas), pred
        return EDMSchedule(smin, smax, float(_get(cfg, "rho") or 7.0), num_train_steps=T), pred
    if name.startswith("FlowMatch"):
        if _get(cfg, "use_dynamic_shifting"):
            raise ValueError(
                f"{name} with use_dynamic_shifting=True (resolution-dependent shift) is not supported"
            )
        if _get(cfg, "invert_sigmas") or _get(cfg, "shift_terminal"):
            raise ValueError(f"{name} with invert_sigmas or shift_terminal is not supported")
        T = int(_get(cfg, "num_train_timesteps") or 1000)
        return FlowSchedule(T, shift=float(_get(cfg, "shift") or 1.0)), "velocity"
    abar = getattr(scheduler, "alphas_cumprod", None)
    if abar is None:
        raise ValueError(
            f"DiffusersPrior cannot map the scheduler {name}: supported are DDPM/DDIM-style schedulers "
            "with alphas_cumprod, EDM schedulers (EDMEulerScheduler) and FlowMatchEulerDiscreteScheduler"
        )
    if pred not in PREDICTION_TYPES:
        raise ValueError(
            f"unsupported prediction_type {pred!r} in the scheduler config; use one of {PREDICTION_TYPES}"
        )
    abar = torch.as_tensor(abar, dtype=torch.float64)
    if abar[-1] <= 0:  # zero terminal SNR (rescale_betas_zero_snr): keep the schedule invertible
        return VPSchedule(abar.clamp_min(torch.finfo(torch.float32).tiny)), pred
    return VPSchedule.from_diffusers(scheduler), pred


def _get(config: Any, key: str) -> Any:
    """A key of a diffusers ``FrozenDict`` config (or any mapping / namespace), else ``None``."""
    if isinstance(config, dict):
        return config.get(key)
    return getattr(config, key, None)


def _load_scheduler(folder: Path) -> Any:
    """The scheduler class named in ``folder/scheduler_config.json``, loaded from it."""
    import diffusers

    cfg = json.loads((folder / "scheduler_config.json").read_text())
    name = cfg.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"unknown scheduler class {name!r} in {folder / 'scheduler_config.json'}")
    return cls.from_pretrained(folder)
