"""Particle Gibbs on prior-drawn MNIST problems: how far a conditional SMC sweep renews a path.

Each of ``--chains`` chains per problem starts from the traced path of a plain TDS run of
``--particles`` particles and makes ``--sweeps`` conditional SMC sweeps with ancestor sampling
(:func:`posterior.particles.conditional_smc.conditional_smc`, the kernel of ``"pgas"``). Printed:
per sweep, the share of chains whose ``x_0`` moved and of path states that changed; the coverage
of the hidden pixels by the start draws (one per chain), by the last sweep's draws and by all
sweeps' draws; the R-hat across the chains (ArviZ's rank-normalised split R-hat, per hidden
pixel); and, for the first problem, the share of chains and sweeps that changed the state at each
of the ``steps + 1`` times (``x_T`` first).

    PYTHONPATH=. python benchmarks/mnist_particle_gibbs.py --problems 4 --chains 32 --particles 4 --sweeps 4
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import numpy as np
import torch
from mnist_setup import prior_drawn_problems

import posterior as ps
from posterior.diagnostics.calibration import coverage
from posterior.particles.conditional_smc import conditional_smc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operator", default="inpaint", choices=["inpaint", "sr2"])
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--chains", type=int, default=32)
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--sweeps", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--no-ancestor-sampling", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    P, C, N = args.problems, args.chains, args.particles
    problem, truth = prior_drawn_problems(P, args.steps, args.operator)
    tds = ps.METHODS["tds"]()
    pairs = tds.time_pairs(problem, args.steps)
    model = tds.model(problem.repeat(C), pairs)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    path = conditional_smc(model, pairs, P * C, N, gen).path
    first = path[:, -1].reshape(P, C, -1)
    draws, changed = [], []
    for i in range(args.sweeps):
        sweep = conditional_smc(model, pairs, P * C, N, gen, path, not args.no_ancestor_sampling)
        path = sweep.path
        draws.append(path[:, -1].reshape(P, C, -1))
        changed.append(sweep.changed.float().reshape(P, C, -1))
        moved = ", ".join(f"{v:.2f}" for v in changed[-1][..., -1].mean(1).tolist())
        print(
            f"sweep {i}: x_0 moved in {moved} of the chains; {changed[-1].mean():.2f} of the states "
            f"changed ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    if args.operator == "inpaint":
        hidden = problem.operator.mask.reshape(-1) == 0
    else:
        hidden = torch.ones(truth[0].numel(), dtype=torch.bool)
    every = torch.stack(draws, 2).reshape(P, C * args.sweeps, -1)
    for name, d in [("start, one per chain", first), ("last sweep", draws[-1]), ("all sweeps", every)]:
        cov = coverage(d[:, :, hidden], truth.reshape(P, -1)[:, hidden], [0.5, 0.9]).per_problem
        per = [" ".join(f"{v:.2f}" for v in cov[j].tolist()) for j in (1, 0)]
        print(f"{name}: 90% {cov[1].mean():.2f} ({per[0]}), 50% {cov[0].mean():.2f} ({per[1]})")
    for p in range(P):  # R-hat of each hidden pixel across the chains, over their sweeps
        chains = torch.stack(draws, 2)[p][:, :, hidden].numpy()  # [C, sweeps, pixels]
        r = np.asarray(az.rhat(az.convert_to_dataset(chains)).to_array()).ravel()
        r = r[np.isfinite(r)]
        above = np.mean(r > 1.1)
        print(
            f"problem {p}: R-hat over hidden pixels: median {np.median(r):.2f}, share above 1.1 {above:.2f}"
        )
    share = torch.stack(changed, 2).mean((1, 2))[0]
    print("states changed per time, problem 0:", " ".join(f"{v:.2f}" for v in share.tolist()))


if __name__ == "__main__":
    main()
