"""Train the project's small MNIST diffusion prior (DDPM, v-prediction by default).

The model is a small ``diffusers.UNet2DModel`` on 1x28x28 images scaled to
[-1, 1], trained on the DDPM forward process (1000 steps, linear betas
1e-4..0.02) to predict ``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (Salimans &
Ho, 2022; ``--prediction epsilon`` gives Ho et al.'s objective). With v, the
denoiser ``x0 = sqrt(abar) x_t - sqrt(1 - abar) v`` does not amplify the
network's error at high noise, where eps-prediction multiplies it by
``sqrt((1 - abar) / abar)`` (about 100 at t = 960). An exponential moving
average (EMA) of the weights is kept and it is the EMA model that is saved, as
a diffusers folder::

    <out>/unet/        config.json + diffusion_pytorch_model.safetensors
    <out>/scheduler/   scheduler_config.json
    <out>/training.json

Saves happen every ``--save-every-minutes`` and at the end; each save is
written to a temporary folder and then renamed into place, so ``<out>`` always
holds a complete model. Alongside, ``--checkpoint`` (default ``out/mnist_prior_ckpt``)
receives the full training state (model, EMA, AdamW moments, data-order and noise
generator state, step): rerunning the same command resumes from it, and the run
is the same as an uninterrupted one (up to floating-point reordering). Only
safetensors / JSON are written, never pickles.

The first 9,500 digits of the data file are used for training; the last 500
are held out (see ``posterior/data/mnist_heldout.npz``).

Example (the shipped prior; ``--max-minutes`` only caps one sitting, rerun to resume)::

    python scripts/train_mnist_prior.py --data /work/shared/data/mnist10k.npz \
        --steps 7000 --cooldown-steps 2000 --lr 1e-3 --seed 0
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import numpy as np  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

N_TRAIN = 9500


def build_unet(channels: tuple[int, ...] = (16, 32, 64), layers_per_block: int = 1) -> UNet2DModel:
    """Return the small UNet used for the prior (28 -> 14 -> 7, attention at 7x7)."""
    n = len(channels)
    down = ["DownBlock2D"] * (n - 1) + ["AttnDownBlock2D"]
    up = ["AttnUpBlock2D"] + ["UpBlock2D"] * (n - 1)
    return UNet2DModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        layers_per_block=layers_per_block,
        block_out_channels=channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=8,
        attention_head_dim=32,
    )


def build_scheduler(prediction_type: str = "v_prediction") -> DDPMScheduler:
    """Return the DDPM noise schedule the prior is trained with."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type=prediction_type,
        clip_sample=False,
    )


def target_for(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The regression target for ``x_t = sqrt(a) x0 + sqrt(1 - a) noise``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    raise ValueError(f"prediction must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


def load_train_images(path: str) -> torch.Tensor:
    """Load the first 9,500 digits as a float tensor [N, 1, 28, 28] in [-1, 1]."""
    with np.load(path) as data:
        images = data["images"][:N_TRAIN]
    x = torch.from_numpy(images.astype(np.float32)) / 127.5 - 1.0
    return x.unsqueeze(1).contiguous()


def ema_decay(step: int, max_decay: float) -> float:
    """EMA decay with warm-up: min(max_decay, (1 + step) / (10 + step))."""
    return min(max_decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """In-place EMA update of ``ema`` parameters and buffers towards ``model``."""
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


def save_atomic(out: Path, ema: UNet2DModel, scheduler: DDPMScheduler, info: dict[str, object]) -> None:
    """Write the EMA model, scheduler and training.json to ``out`` atomically."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    ema.save_pretrained(tmp / "unet", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(
    ckpt: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    perm: torch.Tensor,
    state: dict[str, object],
) -> None:
    """Write the full training state to ``ckpt`` (safetensors + JSON), atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().clone().contiguous()
    for k, v in ema.state_dict().items():
        tensors[f"ema.{k}"] = v.detach().clone().contiguous()
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
    tensors["gen_state"] = gen.get_state()
    tensors["perm"] = perm.clone()
    ckpt = ckpt.resolve()
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.parent / f".{ckpt.name}.tmp-{os.getpid()}"
    old = ckpt.parent / f".{ckpt.name}.old-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(
    ckpt: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, object]]:
    """Restore the state written by :func:`save_checkpoint`; returns ``(perm, state)``."""
    tensors = load_file(str(ckpt / "state.safetensors"))
    state = json.loads((ckpt / "state.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v
    sd = opt.state_dict()
    sd["state"] = opt_state
    opt.load_state_dict(sd)
    gen.set_state(tensors["gen_state"])
    return tensors["perm"], state


def lr_at(step: int, base_lr: float, warmup: int, total: int = 0, cooldown: int = 0) -> float:
    """Linear warm-up, constant, then (``cooldown > 0``) linear decay to 0 over the last
    ``cooldown`` of ``total`` steps."""
    lr = base_lr * min(1.0, (step + 1) / warmup)
    if cooldown > 0:
        lr *= min(1.0, max(0.0, (total - step) / cooldown))
    return lr


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/mnist10k.npz")
    p.add_argument("--out", default="posterior/priors/weights/mnist")
    p.add_argument("--checkpoint", default="out/mnist_prior_ckpt", help="resumable training state")
    p.add_argument("--max-minutes", type=float, default=1e9, help="wall-clock cap for this sitting")
    p.add_argument("--steps", type=int, default=1_000_000, help="max optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--prediction", default="v_prediction", choices=["v_prediction", "epsilon"])
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--cooldown-steps", type=int, default=0, help="linear lr decay to 0 over the last N steps")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--channels", default="16,32,64", help="block_out_channels")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--save-every-minutes", type=float, default=5.0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument(
        "--init-from",
        default=None,
        help="start from the EMA weights of a saved prior folder (a second training stage)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Train and save the prior."""
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    x_train = load_train_images(args.data)
    channels = tuple(int(c) for c in args.channels.split(","))
    model = build_unet(channels, args.layers_per_block)
    model.train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    scheduler = build_scheduler(args.prediction)
    alphas_cumprod = scheduler.alphas_cumprod.float()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params={n_params} channels={channels} batch={args.batch_size}", flush=True)

    init_info: dict[str, object] | None = None
    if args.init_from is not None:
        folder = Path(args.init_from)
        weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():
            raise SystemExit(f"--init-from: no {weights}")
        state_dict = load_file(str(weights))
        model.load_state_dict(state_dict)
        ema.load_state_dict(state_dict)
        init_info = json.loads((folder / "training.json").read_text())
        print(f"initialised from {folder} ({init_info.get('steps')} earlier steps)", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    out, ckpt = Path(args.out), Path(args.checkpoint)
    t0 = time.time()
    last_save = t0
    loss_ema = float("nan")
    step = 0
    n = x_train.shape[0]
    perm = torch.randperm(n, generator=gen)
    pos = 0
    wall_before = 0.0  # seconds spent in earlier sittings of a resumed run
    if (ckpt / "state.json").is_file():
        perm, state = load_checkpoint(ckpt, model, ema, opt, gen)
        step, pos = int(state["step"]), int(state["pos"])
        loss_ema, wall_before = float(state["loss_ema"]), float(state["wall_seconds"])
        old = state["args"]
        for key in ("seed", "batch_size", "lr", "warmup", "prediction", "channels", "layers_per_block"):
            if old[key] != vars(args)[key]:
                raise ValueError(f"--{key} differs from the checkpoint in {ckpt}: {old[key]!r}")
        # --steps / --cooldown-steps may change only where the learning rates of the steps
        # already taken stay the same (then the resumed run is the run of the new command)
        past = (old["lr"], old["warmup"], old["steps"], old.get("cooldown_steps", 0))
        new = (args.lr, args.warmup, args.steps, args.cooldown_steps)
        if any(lr_at(k, *past) != lr_at(k, *new) for k in range(step)):
            raise ValueError(f"--steps / --cooldown-steps change the learning rate of steps done in {ckpt}")
        print(f"resumed from {ckpt} at step {step}", flush=True)

    def checkpoint() -> None:
        state = {
            "step": step,
            "pos": pos,
            "loss_ema": loss_ema,
            "wall_seconds": wall_before + time.time() - t0,
            "args": vars(args),
        }
        save_checkpoint(ckpt, model, ema, opt, gen, perm, state)

    def info(final: bool) -> dict[str, object]:
        return {
            "steps": step,
            "wall_seconds": round(wall_before + time.time() - t0, 1),
            "final_loss_ema": loss_ema,
            "final": final,
            "seed": args.seed,
            "num_parameters": n_params,
            "batch_size": args.batch_size,
            "prediction_type": args.prediction,
            "schedule": "linear betas 1e-4..0.02, 1000 steps",
            "lr": args.lr,
            "warmup_steps": args.warmup,
            "cooldown_steps": args.cooldown_steps,
            "ema_decay": args.ema_decay,
            "grad_clip": args.grad_clip,
            "block_out_channels": list(channels),
            "layers_per_block": args.layers_per_block,
            "train_images": f"first {N_TRAIN} of {os.path.basename(args.data)}",
            "scaling": "x / 127.5 - 1, shape [1, 28, 28]",
            "torch_threads": torch.get_num_threads(),
            "command": command,
            "initialised_from": init_info,
        }

    while step < args.steps and (time.time() - t0) < args.max_minutes * 60:
        if pos + args.batch_size > n:
            perm = torch.randperm(n, generator=gen)
            pos = 0
        x0 = x_train[perm[pos : pos + args.batch_size]]
        pos += args.batch_size
        b = x0.shape[0]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t].view(b, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = model(xt, t).sample
        loss = torch.nn.functional.mse_loss(pred, target_for(args.prediction, x0, noise, a))

        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, args.warmup, args.steps, args.cooldown_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        ema_update(ema, model, ema_decay(step, args.ema_decay))
        step += 1

        lv = float(loss.detach())
        loss_ema = lv if math.isnan(loss_ema) else 0.99 * loss_ema + 0.01 * lv
        if step % args.log_every == 0:
            el = time.time() - t0
            print(
                f"step {step} loss {lv:.4f} loss_ema {loss_ema:.4f} "
                f"elapsed {el / 60:.1f}min {time.strftime('%H:%M:%S')}",
                flush=True,
            )
        if time.time() - last_save > args.save_every_minutes * 60:
            checkpoint()
            save_atomic(out, ema, scheduler, info(final=False))
            last_save = time.time()
            print(f"saved {out} at step {step}", flush=True)

    checkpoint()
    save_atomic(out, ema, scheduler, info(final=step >= args.steps))
    print(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min, saved {out}", flush=True)


if __name__ == "__main__":
    main()
