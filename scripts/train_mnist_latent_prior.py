"""Train the project's small latent diffusion prior of MNIST (a VAE, then a latent DDPM).

Stage 1 trains a small convolutional ``diffusers.AutoencoderKL`` from ``[1, 28, 28]``
digits in ``[-1, 1]`` to a ``[4, 7, 7]`` latent (Kingma & Welling, 2014; the KL term is
weighted by ``--kl-weight`` relative to the per-pixel squared error, as in the
autoencoders of Rombach et al., 2022). The latents of the training digits (posterior
means plus their posterior noise) are then scaled to unit variance and the scale is
recorded as the VAE's ``scaling_factor``: ``z = scaling_factor * E(x)``,
``x = D(z / scaling_factor)``.

Stage 2 trains a small ``diffusers.UNet2DModel`` on the scaled latents with the DDPM
forward process of the pixel prior (1000 steps, linear betas 1e-4..0.02,
v-prediction; see ``scripts/train_mnist_prior.py``), keeping an EMA of its weights.
The 7x7 latent is too small to halve twice, so the UNet works at one resolution
with self-attention. Each stage ends at ``--*-steps`` or ``--*-minutes``, whichever
comes first; its learning rate decays linearly to 0 over the last part of that budget
(the steps taken are recorded in ``training.json``).

Output, a diffusers folder (safetensors only)::

    <out>/vae/         config.json (AutoencoderKL, with scaling_factor) + weights
    <out>/unet/        config.json (UNet2DModel) + diffusion_pytorch_model.safetensors
    <out>/scheduler/   scheduler_config.json
    <out>/training.json

The first 9,500 digits of the data file are used for training; the last 500 are held
out (``posterior/data/mnist_heldout.npz``), as for the pixel prior.

Example (the shipped prior)::

    python scripts/train_mnist_latent_prior.py --data /work/shared/data/mnist10k.npz \
        --vae-steps 3000 --unet-steps 8000 --seed 0
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
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel  # noqa: E402

N_TRAIN = 9500


def build_vae(channels: tuple[int, ...] = (16, 32, 32)) -> AutoencoderKL:
    """A small AutoencoderKL: [1, 28, 28] -> [4, 7, 7] (two halvings)."""
    n = len(channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=28,
        scaling_factor=1.0,
        mid_block_add_attention=False,
    )


def build_latent_unet(channels: int = 64, layers_per_block: int = 2) -> UNet2DModel:
    """A one-resolution UNet on [4, 7, 7] latents with self-attention."""
    return UNet2DModel(
        sample_size=7,
        in_channels=4,
        out_channels=4,
        layers_per_block=layers_per_block,
        block_out_channels=(channels,),
        down_block_types=("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",),
        norm_num_groups=16,
        attention_head_dim=32,
    )


def build_scheduler() -> DDPMScheduler:
    """The DDPM schedule of the pixel prior (v-prediction)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type="v_prediction",
        clip_sample=False,
    )


def load_train_images(path: str) -> torch.Tensor:
    """The first 9,500 digits as a float tensor [N, 1, 28, 28] in [-1, 1]."""
    with np.load(path) as data:
        images = data["images"][:N_TRAIN]
    x = torch.from_numpy(images.astype(np.float32)) / 127.5 - 1.0
    return x.unsqueeze(1).contiguous()


def progress(step: int, steps: int, t0: float, minutes: float) -> float:
    """The share of a stage done: the larger of its share of steps and of its minutes."""
    return max(step / steps, (time.time() - t0) / (60.0 * minutes))


def lr_at(step: int, base_lr: float, warmup: int, frac: float, cooldown: float) -> float:
    """Linear warm-up over ``warmup`` steps, constant, then linear decay to 0 over the last
    ``cooldown`` share of the stage (``frac`` is the share done)."""
    return base_lr * min(1.0, (step + 1) / warmup) * min(1.0, max(0.0, (1.0 - frac) / cooldown))


def save_folder(out: Path, parts: dict[str, object], info: dict[str, object]) -> None:
    """Write ``parts`` (name -> diffusers object) and training.json into ``out`` atomically,
    keeping the parts already in ``out`` that are not rewritten."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if out.exists():
        shutil.copytree(out, tmp)
    else:
        tmp.mkdir()
    for name, obj in parts.items():
        if (tmp / name).exists():
            shutil.rmtree(tmp / name)
        if isinstance(obj, DDPMScheduler):
            obj.save_pretrained(tmp / name)
        else:
            obj.save_pretrained(tmp / name, safe_serialization=True)  # type: ignore[attr-defined]
    (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


def train_vae(args: argparse.Namespace, x: torch.Tensor, gen: torch.Generator) -> tuple[AutoencoderKL, dict]:
    """Stage 1: the autoencoder; returns it (eval mode) and its training record."""
    vae = build_vae(tuple(int(c) for c in args.vae_channels.split(",")))
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    n, t0, step, loss_ema = x.shape[0], time.time(), 0, float("nan")
    perm, pos = torch.randperm(n, generator=gen), 0
    print(f"vae params={sum(p.numel() for p in vae.parameters())}", flush=True)
    while (frac := progress(step, args.vae_steps, t0, args.vae_minutes)) < 1.0:
        if pos + args.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        x0 = x[perm[pos : pos + args.batch_size]]
        pos += args.batch_size
        dist = vae.encode(x0).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        mse = torch.nn.functional.mse_loss(rec, x0)
        kl = 0.5 * (dist.mean**2 + dist.var - 1.0 - dist.logvar).mean()
        loss = mse + args.kl_weight * kl
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.vae_lr, 100, frac, 1 / 3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        lv = float(mse.detach())
        loss_ema = lv if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * lv
        if step % args.log_every == 0:
            print(
                f"vae step {step} mse {lv:.4f} mse_ema {loss_ema:.4f} kl {float(kl.detach()):.3f} "
                f"elapsed {(time.time() - t0) / 60:.1f}min {time.strftime('%H:%M:%S')}",
                flush=True,
            )
    vae.eval().requires_grad_(False)
    return vae, {"steps": step, "wall_seconds": round(time.time() - t0, 1), "final_mse_ema": loss_ema}


@torch.no_grad()
def encode_all(vae: AutoencoderKL, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations of the latents of ``x`` ([N, 4, 7, 7] each)."""
    means, stds = [], []
    for i in range(0, x.shape[0], 500):
        dist = vae.encode(x[i : i + 500]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(
    args: argparse.Namespace, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator, save
) -> tuple[UNet2DModel, dict]:
    """Stage 2: the latent DDPM on ``scaled (mean + std * noise)`` latents; returns the EMA UNet."""
    model = build_latent_unet(args.unet_channels, args.unet_layers)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    sched = build_scheduler()
    abar = sched.alphas_cumprod.float()
    opt = torch.optim.AdamW(model.parameters(), lr=args.unet_lr, weight_decay=0.0)
    n, t0, step, loss_ema, last_save = mean.shape[0], time.time(), 0, float("nan"), time.time()
    perm, pos = torch.randperm(n, generator=gen), 0
    print(f"unet params={sum(p.numel() for p in model.parameters())}", flush=True)

    def record() -> dict:
        return {"steps": step, "wall_seconds": round(time.time() - t0, 1), "final_loss_ema": loss_ema}

    while (frac := progress(step, args.unet_steps, t0, args.unet_minutes)) < 1.0:
        if pos + args.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + args.batch_size]
        pos += args.batch_size
        z0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        b = z0.shape[0]
        t = torch.randint(0, 1000, (b,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = abar[t].view(b, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * z0
        loss = torch.nn.functional.mse_loss(model(zt, t).sample, target)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.unet_lr, 200, frac, 1 / 4)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm.detach(), 1.0 - decay)
        step += 1
        lv = float(loss.detach())
        loss_ema = lv if math.isnan(loss_ema) else 0.99 * loss_ema + 0.01 * lv
        if step % args.log_every == 0:
            print(
                f"unet step {step} loss {lv:.4f} loss_ema {loss_ema:.4f} "
                f"elapsed {(time.time() - t0) / 60:.1f}min {time.strftime('%H:%M:%S')}",
                flush=True,
            )
        if time.time() - last_save > 300:
            save(ema, sched, record(), final=False)
            last_save = time.time()
    return ema, record()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/mnist10k.npz")
    p.add_argument("--out", default="posterior/priors/weights/mnist-latent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--vae-minutes", type=float, default=1e9, help="stage 1 ends at its steps or minutes")
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-channels", default="16,32,32")
    p.add_argument("--vae-from", default=None, help="skip stage 1: take the VAE of this saved folder")
    p.add_argument("--kl-weight", type=float, default=1e-3, help="KL weight per latent entry vs MSE")
    p.add_argument("--unet-steps", type=int, default=8000)
    p.add_argument("--unet-minutes", type=float, default=1e9, help="stage 2 ends at its steps or minutes")
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--unet-channels", type=int, default=64)
    p.add_argument("--unet-layers", type=int, default=2)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--log-every", type=int, default=100)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Train both stages and save the folder."""
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x = load_train_images(args.data)
    out = Path(args.out)

    if args.vae_from is None:
        vae, vae_info = train_vae(args, x, gen)
    else:  # stage 1 from an earlier run: its VAE (the scaling factor is recomputed below)
        vae = AutoencoderKL.from_pretrained(Path(args.vae_from) / "vae", use_safetensors=True)
        vae.eval().requires_grad_(False)
        earlier = json.loads((Path(args.vae_from) / "training.json").read_text())
        vae_info = {**earlier["vae"], "from": args.vae_from, "command": earlier["command"]}
        print(f"stage 1 from {args.vae_from} ({vae_info['steps']} steps)", flush=True)
    mean, std = encode_all(vae, x)
    second_moment = float((mean**2 + std**2).mean() - mean.mean() ** 2)
    scaling = 1.0 / math.sqrt(second_moment)
    vae.register_to_config(scaling_factor=scaling)
    with torch.no_grad():
        rec = torch.cat([vae.decode(mean[i : i + 500]).sample for i in range(0, 2000, 500)])
    rec_mse = float(torch.nn.functional.mse_loss(rec, x[:2000]))
    print(f"scaling_factor={scaling:.4f} reconstruction mse (2000 train digits)={rec_mse:.4f}", flush=True)

    def info(unet_info: dict, final: bool) -> dict[str, object]:
        return {
            "final": final,
            "seed": args.seed,
            "vae": {**vae_info, "kl_weight": args.kl_weight, "recon_mse_train2000": rec_mse},
            "unet": unet_info,
            "scaling_factor": scaling,
            "latent_shape": [4, 7, 7],
            "prediction_type": "v_prediction",
            "schedule": "linear betas 1e-4..0.02, 1000 steps",
            "batch_size": args.batch_size,
            "args": vars(args),
            "train_images": f"first {N_TRAIN} of {os.path.basename(args.data)}",
            "scaling": "x / 127.5 - 1, shape [1, 28, 28]; z = scaling_factor * E(x)",
            "torch_threads": torch.get_num_threads(),
            "command": command,
        }

    def save(unet: UNet2DModel, sched: DDPMScheduler, unet_info: dict, final: bool) -> None:
        save_folder(out, {"vae": vae, "unet": unet, "scheduler": sched}, info(unet_info, final))
        print(f"saved {out} ({time.strftime('%H:%M:%S')})", flush=True)

    unet, unet_info = train_unet(args, mean * scaling, std * scaling, gen, save)
    save(unet, build_scheduler(), unet_info, final=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
