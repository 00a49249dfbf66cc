"""TDS with many particles on the Gaussian-mixture grid: 2000 of its draws against the exact draws
that ``exactness.py`` uses (same seeds), so its rows compare with that script's floor.

    PYTHONPATH=. python benchmarks/mixture_many_particles.py --particles 32000

Prints one JSON line per problem and the mean +- sd of the sliced W1 per cell.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein

CELLS = [(8, 1), (8, 2), (8, 4), (80, 1), (80, 2), (80, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=32000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    N = args.particles
    for dim, obs in CELLS:
        values = []
        for seed in range(args.seeds):
            base = ps.problems.gmm_benchmark(dim, obs, seed)
            exact = base.exact_posterior().sample(2000, torch.Generator().manual_seed(10_000 + seed))
            res = ps.sample(base, "tds", N, args.steps, seed=seed, progress=False)
            keep = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:2000]
            values.append(sliced_wasserstein(res.samples[keep], exact).item())
            print(json.dumps({"dim": dim, "obs": obs, "seed": seed, "N": N, "sw": values[-1]}), flush=True)
        print(f"{dim} / {obs}: {statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}", flush=True)


if __name__ == "__main__":
    main()
