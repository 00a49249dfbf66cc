"""The cost of the exact posterior of ``ps.problems.gmm_image``: per stage, CPU seconds of the
process (wall seconds in brackets), and the process's peak resident memory.

Run (one thread)::

    nice -n 5 python benchmarks/image_oracle_cost.py 3,64,64 sr2
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from posterior.problems_image import gmm_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", help="C,H,W")
    ap.add_argument("operator")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--draws", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    shape = tuple(int(v) for v in args.shape.split(","))
    clocks = [(time.time(), time.process_time())]
    problem = gmm_image(shape, args.operator, 0.1, args.problems, 0)
    clocks.append((time.time(), time.process_time()))
    post = problem.exact_posterior()
    clocks.append((time.time(), time.process_time()))
    post.sample(args.draws, 1)
    clocks.append((time.time(), time.process_time()))
    post.quantiles([0.05, 0.95])
    clocks.append((time.time(), time.process_time()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB (Linux)
    path = type(post._gram(0.01)).__name__
    cells = " | ".join(
        f"{clocks[i + 1][1] - clocks[i][1]:.2f} ({clocks[i + 1][0] - clocks[i][0]:.1f})" for i in range(4)
    )
    print("| shape | operator | path | build | exact posterior | draws | quantiles | peak memory |")
    print(f"| {'x'.join(map(str, shape))} | {args.operator} | {path} | {cells} | {peak:.2f} GB |", flush=True)


if __name__ == "__main__":
    main()
