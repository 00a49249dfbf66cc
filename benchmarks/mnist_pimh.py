"""Could the runs of a particle sampler feed particle independent Metropolis-Hastings on MNIST?

PIMH (Andrieu, Doucet & Holenstein, 2010) proposes a fresh run of ``n`` particles and accepts it
over the current one with probability ``min(1, Z_new / Z_cur)``, the ratio of the runs' evidence
estimates; it is exact for any ``n``. Its mixing is set by the spread of ``log Z`` between runs.
This runs TDS as ``runs`` independent systems per problem (prior-drawn truths, bottom half hidden,
noise 0.1, 25 steps) and prints, per problem, the standard deviation and range of the runs'
``log Z`` and the acceptance rate of a PIMH chain proposing the runs in order.

    PYTHONPATH=. python benchmarks/mnist_pimh.py --problems 4 --particles 256 --runs 64 16 4
"""

from __future__ import annotations

import argparse

import torch
from method_spec import parse_options
from mnist_setup import prior_drawn_problems

import posterior as ps


def pimh_acceptance(log_z: torch.Tensor, generator: torch.Generator) -> float:
    """Share of accepted moves of a PIMH chain started at the first run, proposing the others in
    order: ``log_z: Tensor[R]``."""
    current, accepted = log_z[0], 0
    for proposal in log_z[1:]:
        if torch.rand((), generator=generator, dtype=log_z.dtype).log() < proposal - current:
            current, accepted = proposal, accepted + 1
    return accepted / max(1, log_z.numel() - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--particles", type=int, default=256, help="particles per problem, all runs")
    ap.add_argument("--runs", type=int, nargs="+", default=[64, 16, 4])
    ap.add_argument("--option", action="append", default=['prior_var="covariance"'])
    args = ap.parse_args()
    torch.set_num_threads(1)
    options = parse_options(args.option)
    problem, _ = prior_drawn_problems(args.problems)
    print(f"TDS {options}, {args.problems} problems, {args.particles} particles per problem")
    for runs in args.runs:
        res = ps.sample(problem, "tds", args.particles, 25, seed=0, progress=False, runs=runs, **options)
        log_z = res.stats["run_log_evidence"].double()  # [B, runs]
        coin = torch.Generator().manual_seed(1)
        acc = [pimh_acceptance(row, coin) for row in log_z]
        sd = [f"{v:.0f}" for v in log_z.std(1).tolist()]
        span = [f"{v:.0f}" for v in (log_z.max(1).values - log_z.min(1).values).tolist()]
        rates = [f"{a:.2f}" for a in acc]
        print(f"{runs}x{args.particles // runs}: log Z sd {sd}, range {span}, PIMH acceptance {rates}")


if __name__ == "__main__":
    main()
