"""Overhead of the image samplers over the network work they do (issue 6, item 5).

For each method (TDS, SMC, MCGdiff, DPS) on the shipped MNIST prior (half-masked digit,
``noise_std = 0.1``) with 64 particles and 100 steps, this script runs ``ps.sample`` with
``prior.denoise`` and ``prior.denoise_with_grad`` wrapped so that each call the sampler makes is
immediately repeated on a random input of the same batch size at the same time index
(``denoise_with_grad`` with the VJP of ``sum(x0)``). The repeats, timed apart, are the *bare*
time of the network evaluations and VJPs the sampler performs, measured in the same run under
the same load (the machine is shared, so load drifts over minutes); they are subtracted from the
sampler's wall time. Reported: ``overhead = sampler wall time / bare time`` (target: at most
1.10) and the share of the wall time spent outside the sampler's own prior calls.

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
    """Wraps ``prior.denoise`` / ``prior.denoise_with_grad``: logs each call, times it, and (with
    ``shadow=True``) repeats it at once on a random input of the same batch size and time.

    The shadow calls give the bare network + VJP time under the same machine load as the run
    (the machine is shared, so load drifts over minutes); their time is subtracted from the
    sampler's wall time.
    """

    def __init__(self, prior: ps.DiffusionPrior, shadow: bool = True, seed: int = 0) -> None:
        self.prior = prior
        self.shadow = shadow
        self.calls: list[tuple[str, int, int | torch.Tensor]] = []
        self.inside = 0.0  # seconds inside the sampler's own prior calls
        self.bare = 0.0  # seconds of the shadow calls
        self._denoise = prior.denoise
        self._with_grad = prior.denoise_with_grad
        gen = torch.Generator(device=prior.device).manual_seed(seed)
        self._x = torch.randn(1, *prior.event_shape, generator=gen, device=prior.device, dtype=prior.dtype)

    def _input(self, n: int) -> torch.Tensor:
        if self._x.shape[0] < n:
            self._x = torch.randn(
                n, *self.prior.event_shape, device=self.prior.device, dtype=self.prior.dtype
            )
        return self._x[:n]

    def __enter__(self) -> Recorder:
        def timed(kind, call, x_t, t, *rest):
            start = time.perf_counter()
            out = call(x_t, t, *rest)
            self.inside += time.perf_counter() - start
            self.calls.append((kind, x_t.shape[0], t))
            if self.shadow:
                x = self._input(x_t.shape[0])
                counts = self.prior.num_evals, self.prior.num_vjps
                start = time.perf_counter()
                call(x, t, *([_sum_x0] if rest else []))
                self.bare += time.perf_counter() - start
                self.prior.num_evals, self.prior.num_vjps = counts  # not the sampler's work
            return out

        # instance attributes shadow the methods, also for calls made by the prior itself
        self.prior.denoise = lambda x_t, t: timed("denoise", self._denoise, x_t, t)
        self.prior.denoise_with_grad = lambda x_t, t, fn: timed(
            "denoise_with_grad", self._with_grad, x_t, t, fn
        )
        return self

    def __exit__(self, *exc) -> None:
        del self.prior.denoise
        del self.prior.denoise_with_grad


def _sum_x0(d, _x, _rows):
    return d.x0.flatten(1).sum(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Image sampler overhead over bare network time.")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="runs per method (median reported)")
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
        "| time outside prior calls |"
    )
    print("|" + "---|" * 7)
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
            wall = r.wall_time - rec.bare  # the shadow calls ran inside ps.sample's timer
            runs.append(
                {
                    "wall_s": wall,
                    "bare_s": rec.bare,
                    "overhead": wall / rec.bare,
                    "inside_prior_calls_s": rec.inside,
                    "outside_share": (wall - rec.inside) / wall,
                    "num_evals": r.num_evals,
                    "num_vjps": r.num_vjps,
                }
            )
        med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        rows[name] = {"median": med, "runs": runs}
        print(
            f"| {name} | {med['num_evals']:.0f} | {med['num_vjps']:.0f} | {med['wall_s']:.1f} "
            f"| {med['bare_s']:.1f} | **{med['overhead']:.3f}** | {100 * med['outside_share']:.1f}% |"
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
