"""Batching: B = 100 problems of N particles in one run vs one problem of 100 N particles.

Gaussian-mixture prior (the MCGdiff grid prior, ``--dim``), a random ``obs_dim x dim`` operator,
TDS with 100 steps. Both runs push ``100 N`` particles through the same prior calls; the batched
one also carries per-problem observations, noise levels, ESS and resampling decisions. Reports
CPU seconds (process time: one thread, robust to a shared machine) and their ratio (target:
<= 1.2). Best of ``--repeats``.

    PYTHONPATH=. python benchmarks/batch_scaling.py --out benchmarks/results/batch_scaling.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import posterior as ps


def cpu_seconds(problem: ps.InverseProblem, num_particles: int, steps: int, repeats: int) -> float:
    best = float("inf")
    for r in range(repeats):
        start = time.process_time()
        ps.sample(problem, "tds", num_particles=num_particles, num_steps=steps, seed=r, progress=False)
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--obs-dim", type=int, default=2)
    p.add_argument("--particles", nargs="+", type=int, default=[10, 100])
    p.add_argument("--problems", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_scaling.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    prior = ps.problems.gmm_prior_grid(args.dim, gen)
    A = torch.randn(args.obs_dim, args.dim, generator=gen) / args.dim**0.5
    batch = ps.problems.simulate(prior, A, 0.5, args.problems, seed=1)
    single = ps.InverseProblem(prior, A, batch.y_batch[0], 0.5)
    B = args.problems
    lines = [
        f"TDS, {args.steps} steps, GMM prior d={args.dim}, obs_dim={args.obs_dim}, 1 thread, "
        f"best of {args.repeats} (CPU seconds)",
        "",
        f"| N | B = {B} problems x N | 1 problem x {B} N | ratio |",
        "|---|---|---|---|",
    ]
    for n in args.particles:
        t_batch = cpu_seconds(batch, n, args.steps, args.repeats)
        t_single = cpu_seconds(single, B * n, args.steps, args.repeats)
        lines.append(f"| {n} | {t_batch:.2f} | {t_single:.2f} | {t_batch / t_single:.2f} |")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
