"""Check the quality of the project's MNIST diffusion prior with a classifier.

1. Trains a small CNN classifier (one CPU thread, a couple of minutes) on the
   9,500 training digits of ``mnist10k.npz`` and reports its accuracy on the
   500 held-out digits (``posterior/data/mnist_heldout.npz``).
2. Draws ``--num-samples`` unconditional samples from the prior
   (``posterior/priors/weights/mnist``) with the diffusers ``DDPMScheduler``
   ancestral sampling loop (``--num-inference-steps``, 1000 = the full chain).
3. Reports the share of samples the classifier labels with confidence > 0.9,
   against the same share on the 500 real held-out digits, and the class
   histogram of the samples.

Writes ``docs/figures/mnist_prior_samples.png`` (8x8 grid of samples, white
on black, nearest-neighbour upscaled) and ``docs/figures/mnist_prior_quality.json``.
The classifier weights are not saved.

Example::

    python scripts/mnist_prior_quality.py --num-samples 256 --num-inference-steps 1000

A latent model's folder (``unet/`` on latents + ``vae/``, e.g. the shipped ``mnist-latent``) is
sampled on its latents and decoded, and measured by the same classifier::

    python scripts/mnist_prior_quality.py --weights posterior/priors/weights/mnist-latent \
        --num-samples 256 --num-inference-steps 100 \
        --png docs/figures/mnist_latent_prior_samples.png --json docs/figures/mnist_latent_prior_quality.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel  # noqa: E402
from torch import nn  # noqa: E402

N_TRAIN = 9500
CONF = 0.9


class SmallCNN(nn.Module):
    """Two conv layers + two linear layers; input [B, 1, 28, 28] in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits [B, 10]."""
        return self.net(x)


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [-1, 1] (same scaling as the prior)."""
    return (torch.from_numpy(images.astype(np.float32)) / 127.5 - 1.0).unsqueeze(1)


def shift_augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Randomly translate each image by up to ``max_shift`` pixels (padding with -1)."""
    b = x.shape[0]
    padded = torch.nn.functional.pad(x, [max_shift] * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    out = torch.empty_like(x)
    for i in range(b):
        out[i] = padded[i, :, dy[i] : dy[i] + 28, dx[i] : dx[i] + 28]
    return out


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, batch_size: int = 128
) -> SmallCNN:
    """Train the classifier with Adam and small random shifts."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = x.shape[0]
    total = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=total)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        tot = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb = shift_augment(x[idx], gen)
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * idx.numel()
        print(f"classifier epoch {epoch + 1}/{epochs} loss {tot / n:.4f}", flush=True)
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities [N, 10]."""
    return torch.cat([model(x[i : i + 500]).softmax(-1) for i in range(0, x.shape[0], 500)])


@torch.no_grad()
def sample_prior(weights: Path, num_samples: int, num_steps: int, seed: int, batch_size: int) -> torch.Tensor:
    """Draw samples in [-1, 1] with the diffusers DDPM ancestral loop (a latent model, with a
    ``vae/`` folder: on its latents, then decoded by ``vae.decode(z / scaling_factor)``)."""
    unet = UNet2DModel.from_pretrained(weights / "unet").eval()
    scheduler = DDPMScheduler.from_pretrained(weights / "scheduler")
    vae, shape = None, (1, 28, 28)
    if (weights / "vae").is_dir():
        vae = AutoencoderKL.from_pretrained(weights / "vae", use_safetensors=True).eval()
        shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, num_samples, batch_size):
        b = min(batch_size, num_samples - start)
        scheduler.set_timesteps(num_steps)
        x = torch.randn((b, *shape), generator=gen)
        t0 = time.time()
        for t in scheduler.timesteps:
            eps = unet(x, t).sample
            x = scheduler.step(eps, t, x, generator=gen).prev_sample
        if vae is not None:
            x = vae.decode(x / vae.config.scaling_factor).sample
        print(f"sampled {start + b}/{num_samples} ({time.time() - t0:.0f}s)", flush=True)
        out.append(x.clamp(-1.0, 1.0))
    return torch.cat(out)


def save_grid(x: torch.Tensor, path: Path, nrow: int = 8, scale: int = 4) -> None:
    """Save the first nrow*nrow images as a grid PNG (white on black, NN upscaled)."""
    imgs = ((x[: nrow * nrow, 0].numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    pad = 2
    side = 28 * scale
    grid = np.full((nrow * (side + pad) + pad, nrow * (side + pad) + pad), 64, np.uint8)
    for k, im in enumerate(imgs):
        r, c = divmod(k, nrow)
        big = np.kron(im, np.ones((scale, scale), np.uint8))
        y0, x0 = pad + r * (side + pad), pad + c * (side + pad)
        grid[y0 : y0 + side, x0 : x0 + side] = big
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid, cmap="gray", vmin=0, vmax=255)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/mnist10k.npz")
    p.add_argument("--heldout", default="posterior/data/mnist_heldout.npz")
    p.add_argument("--weights", default="posterior/priors/weights/mnist")
    p.add_argument("--num-samples", type=int, default=256)
    p.add_argument("--num-inference-steps", type=int, default=1000)
    p.add_argument("--sample-batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=8, help="classifier epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", default="docs/figures/mnist_prior_samples.png")
    p.add_argument("--json", default="docs/figures/mnist_prior_quality.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the classifier check and write the figure and JSON."""
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    t_start = time.time()

    with np.load(args.data) as d:
        x_tr = to_unit(d["images"][:N_TRAIN])
        y_tr = torch.from_numpy(d["labels"][:N_TRAIN].astype(np.int64))
    with np.load(args.heldout) as d:
        x_ho = to_unit(d["images"])
        y_ho = torch.from_numpy(d["labels"].astype(np.int64))

    t0 = time.time()
    clf = train_classifier(x_tr, y_tr, args.epochs, args.seed)
    clf_seconds = time.time() - t0
    p_ho = predict(clf, x_ho)
    acc = float((p_ho.argmax(-1) == y_ho).float().mean())
    real_conf = float((p_ho.max(-1).values > CONF).float().mean())
    print(f"classifier held-out accuracy {acc:.4f}; real confident share {real_conf:.4f}")

    weights = Path(args.weights)
    training = {}
    tj = weights / "training.json"
    if tj.exists():
        training = json.loads(tj.read_text())
    t0 = time.time()
    xs = sample_prior(weights, args.num_samples, args.num_inference_steps, args.seed + 1, args.sample_batch)
    sample_seconds = time.time() - t0
    # Score samples after the same uint8 quantisation the real digits have.
    xs_q = ((xs + 1.0) * 127.5).round() / 127.5 - 1.0
    p_s = predict(clf, xs_q)
    conf_s = p_s.max(-1).values
    sample_conf = float((conf_s > CONF).float().mean())
    hist = torch.bincount(p_s.argmax(-1), minlength=10).tolist()
    hist_conf = torch.bincount(p_s.argmax(-1)[conf_s > CONF], minlength=10).tolist()
    print(f"samples confident share {sample_conf:.4f}; class histogram {hist}")

    save_grid(xs, Path(args.png))
    result = {
        "command": command,
        "weights": str(weights),
        "prior_training_steps": training.get("steps"),
        "classifier": {
            "arch": "conv32-pool-conv64-pool-fc128-fc10, Adam/OneCycle, +-2px shifts",
            "epochs": args.epochs,
            "train_digits": N_TRAIN,
            "train_seconds": round(clf_seconds, 1),
            "heldout_accuracy": acc,
        },
        "confidence_threshold": CONF,
        "real_heldout": {"n": int(x_ho.shape[0]), "confident_share": real_conf},
        "samples": {
            "n": args.num_samples,
            "sampler": "diffusers DDPMScheduler ancestral loop",
            "num_inference_steps": args.num_inference_steps,
            "seed": args.seed + 1,
            "confident_share": sample_conf,
            "mean_max_prob": float(conf_s.mean()),
            "class_histogram": hist,
            "class_histogram_confident": hist_conf,
            "sample_seconds": round(sample_seconds, 1),
        },
        "png": args.png,
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": round(time.time() - t_start, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
