"""Overhead of the image samplers over the network work they do (issue 6, item 5).

For each method (TDS, SMC, MCGdiff, DPS) on the shipped MNIST prior (half-masked digit,
``noise_std = 0.1``) with 64 particles and 100 steps, this script

1. runs ``ps.sample`` while recording every call the sampler makes to ``prior.denoise`` and
   ``prior.denoise_with_grad`` (batch size and time index), and the seconds spent inside them;
2. replays, in the same process right after, the same calls on random inputs of the same batch
   sizes at the same times (``denoise_with_grad`` with the VJP of ``sum(x0)``): the *bare* time of
   the network evaluations and VJPs;
3. reports ``overhead = sampler wall time / bare time`` (target: at most 1.10), and, as a
   cross-check insensitive to load drift between the two phases, ``wall / time inside the prior
   calls during the run``.

Run::

    python benchmarks/image_speed.py                       # 64 particles, 100 steps, 1 thread
    python benchmarks/image_speed.py --json out/image_speed.json --repeats 2

The table it prints is the one in ``benchmarks/README.md`` ("Image samplers: overhead").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import posterior as ps

METHODS = ("tds", "smc", "mcgdiff", "dps")


class Recorder:
    """Wraps ``prior.denoise`` / ``prior.denoise_with_grad`` to log calls and time spent in them."""

    def __init__(self, prior: ps.DiffusionPrior) -> None:
        self.prior = prior
        self.calls: list[tuple[str, int, int | torch.Tensor]] = []
        self.seconds = 0.0
        self._denoise = prior.denoise
        self._with_grad = prior.denoise_with_grad

    def __enter__(self) -> Recorder:
        def denoise(x_t, t):
            start = time.perf_counter()
            out = self._denoise(x_t, t)
            self.seconds += time.perf_counter() - start
            self.calls.append(("denoise", x_t.shape[0], t))
            return out

        def denoise_with_grad(x_t, t, fn):
            start = time.perf_counter()
            out = self._with_grad(x_t, t, fn)
            self.seconds += time.perf_counter() - start
            self.calls.append(("denoise_with_grad", x_t.shape[0], t))
            return out

        # instance attributes shadow the methods, also for calls made by the prior itself
        self.prior.denoise = denoise
        self.prior.denoise_with_grad = denoise_with_grad
        return self

    def __exit__(self, *exc) -> None:
        del self.prior.denoise
        del self.prior.denoise_with_grad


def replay(
    prior: ps.DiffusionPrior, calls: list[tuple[str, int, int | torch.Tensor]], seed: int = 0
) -> float:
    """Seconds to make the same prior calls on random inputs (bare network + VJP time)."""
    gen = torch.Generator(device=prior.device).manual_seed(seed)
    n_max = max(n for _, n, _ in calls)
    x = torch.randn(n_max, *prior.event_shape, generator=gen, device=prior.device, dtype=prior.dtype)

    def fn(d, _x, _rows):
        return d.x0.flatten(1).sum(1)

    start = time.perf_counter()
    for kind, n, t in calls:
        if kind == "denoise":
            prior.denoise(x[:n], t)
        else:
            prior.denoise_with_grad(x[:n], t, fn)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Image sampler overhead over bare network time.")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="sampler + replay pairs per method (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    prior = ps.load_prior("mnist")
    problem = ps.problems.mnist_inpainting(0, "half", noise_std=0.1, seed=args.seed, prior=prior)
    # warm-up: first calls allocate and pick kernels
    warm = torch.randn(args.particles, *prior.event_shape)
    prior.denoise(warm, 500)
    prior.denoise_with_grad(warm, 500, lambda d, _x, _r: d.x0.flatten(1).sum(1))

    print(
        f"{problem}\n{args.particles} particles, {args.steps} steps, {args.threads} thread(s), "
        f"{platform.machine()}, torch {torch.__version__}"
    )
    print(
        "| method | evals | VJPs | sampler wall (s) | bare net+VJP (s) | overhead "
        "| in-run net (s) | wall / in-run |"
    )
    print("|" + "---|" * 8)
    rows = {}
    for name in args.methods:
        if name not in ps.METHODS:
            print(f"| {name} | not available (not in ps.METHODS) |")
            continue
        runs = []
        for rep in range(args.repeats):
            with Recorder(prior) as rec:
                r = ps.sample(problem, name, args.particles, args.steps, seed=args.seed + rep, progress=False)
            counted = sum(n for _, n, _ in rec.calls)
            if counted != r.num_evals:
                print(
                    f"warning: {name} made {r.num_evals} evaluations, "
                    f"{counted} through denoise/denoise_with_grad",
                    file=sys.stderr,
                )
            bare = replay(prior, rec.calls, seed=rep)
            runs.append(
                {
                    "wall_s": r.wall_time,
                    "bare_s": bare,
                    "in_run_net_s": rec.seconds,
                    "overhead": r.wall_time / bare,
                    "wall_over_in_run": r.wall_time / rec.seconds,
                    "num_evals": r.num_evals,
                    "num_vjps": r.num_vjps,
                }
            )
        med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        rows[name] = {"median": med, "runs": runs}
        print(
            f"| {name} | {med['num_evals']:.0f} | {med['num_vjps']:.0f} | {med['wall_s']:.1f} "
            f"| {med['bare_s']:.1f} | **{med['overhead']:.3f}** | {med['in_run_net_s']:.1f} "
            f"| {med['wall_over_in_run']:.3f} |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "command": "python benchmarks/image_speed.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "particles": args.particles,
            "steps": args.steps,
            "threads": args.threads,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "methods": rows,
        }
        args.json.write_text(json.dumps(info, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
