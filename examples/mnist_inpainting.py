"""An MNIST digit with its bottom half hidden (or 4x downsampled), plus noise, solved by
TDS, SMC, MCGdiff and DPS with the shipped MNIST prior.

Writes one figure (truth, observation, each method's posterior mean, pixel-wise standard
deviation, a few samples, ESS traces) and the per-method numbers (PSNR of the posterior mean,
coverage of the true image by the pixel-wise 90% intervals, wall time) as JSON next to it::

    python examples/mnist_inpainting.py                      # out/mnist_inpainting.png/.json
    python examples/mnist_inpainting.py --task sr4 --out /tmp/mnist_sr4.png

About 70 s of CPU time on one thread (64 particles, 50 steps, four methods; measured on a 2-core
machine, where other work stretched the wall clock to about 5 minutes).

PSNR is on the [0, 1] pixel scale: ``10 log10(1 / MSE)`` with images mapped from [-1, 1]. The
coverage is the share of the 784 pixels whose true value lies between the 5% and 95% quantiles of
the method's samples (a calibrated posterior gives about 0.9; few particles make the empirical
quantiles narrower than the true ones, so expect less).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

import posterior as ps

METHODS = ("tds", "smc", "mcgdiff", "dps")
#: where the figure goes unless ``--out`` says otherwise (relative to the working folder)
DEFAULT_OUT = Path("out") / "mnist_inpainting.png"


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``0 .. n - 1`` (first and last included)."""
    k = min(k, n)
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def psnr(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], on the [0, 1] scale."""
    mse = ((estimate - truth) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def coverage(samples: torch.Tensor, truth: torch.Tensor, level: float = 0.9) -> float:
    """Share of pixels whose truth lies in the central ``level`` interval of ``samples [N, ...]``."""
    lo = torch.quantile(samples.flatten(1), (1 - level) / 2, dim=0)
    hi = torch.quantile(samples.flatten(1), (1 + level) / 2, dim=0)
    t = truth.flatten()
    return ((t >= lo) & (t <= hi)).float().mean().item()


def observation_image(problem: ps.InverseProblem) -> torch.Tensor:
    """The observation as an image to show (inpainting: hidden pixels are NaN)."""
    op = problem.operator
    if isinstance(op, ps.operators.Inpainting):  # hidden pixels as NaN (drawn in colour)
        return op.A_adjoint(problem.y[None])[0].masked_fill(~op.mask, float("nan"))
    return problem.y


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The example's options (``--out``: under ``out/`` unless given)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--task", choices=["half", "sr4"], default="half", help="bottom half hidden or 4x downsampling"
    )
    p.add_argument("--index", type=int, default=0, help="which held-out digit (0..499)")
    p.add_argument("--noise-std", type=float, default=0.1, help="observation noise on the [-1, 1] scale")
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"the figure (PNG; the numbers go beside it as .json); default {DEFAULT_OUT}",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prior = ps.load_prior("mnist")
    if args.task == "half":
        problem = ps.problems.mnist_inpainting(args.index, "half", args.noise_std, args.seed, prior=prior)
        task = "bottom half hidden"
    else:
        problem = ps.problems.mnist_superresolution(4, args.index, args.noise_std, args.seed, prior=prior)
        task = "4x average-pooled"
    truth = problem.truth
    digit = int(ps.priors.mnist_heldout(args.index)[1][0])  # its class, 0..9
    print(
        f"{problem}\n{args.particles} particles, {args.steps} steps, seed {args.seed}, {args.threads} threads"
    )

    results: dict[str, ps.Result] = {}
    numbers: dict[str, dict[str, float | int | None]] = {}
    for name in args.methods:
        if name not in ps.METHODS:
            print(f"  {name}: not available yet (not in ps.METHODS), skipped")
            continue
        r = ps.sample(problem, name, num_particles=args.particles, num_steps=args.steps, seed=args.seed)
        results[name] = r
        numbers[name] = {
            "psnr_mean_db": round(psnr(r.mean(), truth), 2),
            "coverage_90": round(coverage(r.samples, truth), 3),
            "wall_time_s": round(r.wall_time, 1),
            "num_evals": r.num_evals,
            "num_vjps": r.num_vjps,
            "min_ess": None if r.ess is None else round(r.ess.min().item(), 2),
            "runs": int(r.options.get("runs", 1)),
            "log_evidence": None if r.log_evidence is None else round(r.log_evidence.item(), 1),
        }
        n = numbers[name]
        ess = "" if n["min_ess"] is None else f", min ESS {n['min_ess']:.1f}"
        print(
            f"  {name:8s} PSNR(mean) {n['psnr_mean_db']:5.2f} dB  coverage(90%) {n['coverage_90']:.3f}  "
            f"{n['wall_time_s']:6.1f} s{ess}"
        )
    if not results:
        print("no method ran", file=sys.stderr)
        return 1

    # ------------------------------------------------------------------ figure
    def show(ax, img: torch.Tensor, title: str, cmap: str = "gray", vmin=-1.0, vmax=1.0) -> None:
        cm = plt.get_cmap(cmap).copy()
        cm.set_bad("#d08050")
        ax.imshow(img.squeeze(0).cpu().numpy(), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])

    n_samples = 3
    ncols = 2 + n_samples
    fig = plt.figure(figsize=(1.6 * ncols + 1.2, 1.7 * (len(results) + 1.4)))
    gs = fig.add_gridspec(len(results) + 1, ncols, height_ratios=[1.4] + [1] * len(results))
    show(fig.add_subplot(gs[0, 0]), truth, f"truth: a {digit} (held-out #{args.index})")
    show(fig.add_subplot(gs[0, 1]), observation_image(problem), f"observation\n{task}, σ={args.noise_std}")
    ax = fig.add_subplot(gs[0, 2:])
    for name, r in results.items():
        if r.ess is not None:  # tds: the smallest of its runs' ESS, over the particles of one run
            runs = int(r.options.get("runs", 1))
            label = name if runs == 1 else f"{name} ({runs} runs of {r.run_size})"
            ax.plot((r.ess / r.run_size).cpu().numpy(), label=label)
    ax.set_title("effective sample size / particles per run", fontsize=8)
    ax.set_xlabel("step", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.set_ylim(0, 1.05)
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no weighted method ran", ha="center", transform=ax.transAxes)
    std_max = max(r.std().max().item() for r in results.values())
    for i, (name, r) in enumerate(results.items(), start=1):
        n = numbers[name]
        show(fig.add_subplot(gs[i, 0]), r.mean(), f"{name} mean\nPSNR {n['psnr_mean_db']:.1f} dB")
        show(
            fig.add_subplot(gs[i, 1]),
            r.std(),
            f"{name} std\ncover90 {n['coverage_90']:.2f}",
            cmap="viridis",
            vmin=0.0,
            vmax=std_max,
        )
        N = r.samples.shape[0]
        for j, k in enumerate(spread(N, n_samples)):  # not the first draws: copies of one ancestor
            show(fig.add_subplot(gs[i, 2 + j]), r.samples[k], f"draw {k + 1} of {N}")
    fig.suptitle(
        f"MNIST posterior, {args.particles} particles, {args.steps} steps (shipped prior); "
        f"std maps share one colour scale, 0 to {std_max:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)

    info = {
        "command": "python examples/mnist_inpainting.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "task": task,
        "index": args.index,
        "noise_std": args.noise_std,
        "num_particles": args.particles,
        "num_steps": args.steps,
        "seed": args.seed,
        "threads": args.threads,
        "psnr": "dB on the [0, 1] pixel scale",
        "methods": numbers,
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
