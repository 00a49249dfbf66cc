"""Independent runs merged by evidence or equally, against the chain's posterior (README, "What
exact means here"): a 1-D two-mode mixture (weights 0.9 / 0.1 at -2 / +2, variance 0.25), identity,
noise 1, y = 1, 20 steps, 200 copies; tds with its covariance twist.

    OMP_NUM_THREADS=1 python benchmarks/runs_merge.py
"""

from __future__ import annotations

import math
import warnings

import torch

import posterior as ps
from posterior.diagnostics.oracles import chain_posterior

K, B = 20, 200
CASES = [
    (64, 16, "evidence"),
    (64, 16, "equal"),
    (512, 32, "evidence"),
    (512, 32, "equal"),
    (64, 1, "evidence"),
    (512, 1, "evidence"),
    (512, 128, "evidence"),
    (512, 128, "equal"),
]


def main() -> None:
    torch.set_num_threads(1)
    prior = ps.GaussianMixturePrior(
        torch.tensor([0.9, 0.1]), torch.tensor([[-2.0], [2.0]]), torch.full((2, 1), 0.25)
    )
    problem = ps.InverseProblem(prior, torch.eye(1), torch.full((B, 1), 1.0), 1.0)
    ref = chain_posterior(problem.select(0, 1), K, num_draws=2 * 10**6, num_samples=10**6)
    se = float(ref.samples.std()) / float(ref.ess[0]) ** 0.5
    print(f"chain posterior mean {float(ref.samples.mean()):.3f} +- {se:.3f}")
    for N, runs, merge in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ps.particles.ParticleDegeneracyWarning)
            res = ps.sample(problem, "tds", N, K, seed=0, runs=runs, merge=merge)
        means = res.samples.mean((1, 2))
        mean, sd = float(means.mean()), float(means.std()) / math.sqrt(B)
        line = f"N={N} runs={runs} merge={merge}: mean {mean:.3f} +- {sd:.3f}"
        if runs > 1:
            line += f", effective runs {float(res.stats['effective_runs'].mean()):.1f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
