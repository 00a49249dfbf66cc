"""Joint samplers on MNIST deblurring with an unknown blur width and noise level.

Prior-drawn truths (digits from the shipped prior; width ~ LogNormal(log 1.5, 0.4) pixels, noise
std ~ LogNormal(log 0.1, 0.5)), ``y = blur_width(x) + std * eps``, both parameters ``ps.Unknown``.
Runs ``pmmh`` or ``pgibbs`` and prints, per problem: the truth, the posterior mean and 90% interval
of each parameter (covered or not), the acceptance of the parameter moves after the burn-in, and
for ``pmmh`` the spread of the inner runs' log-evidence at the truth (``--repeats`` runs).

    PYTHONPATH=. python benchmarks/mnist_unknown_parameters.py --method pmmh --problems 2
    PYTHONPATH=. python benchmarks/mnist_unknown_parameters.py --method pgibbs --problems 2
"""

from __future__ import annotations

import argparse
import math
import time

import pyro.distributions as dist
import torch

import posterior as ps
from posterior.parameters import Parameters

WIDTH, NOISE = (math.log(1.5), 0.4), (math.log(0.1), 0.5)


def problems(num: int, steps: int, seed: int) -> tuple[ps.InverseProblem, dict[str, torch.Tensor]]:
    """``num`` problems with prior-drawn digits, widths and noise levels, both unknown."""
    prior = ps.load_prior("mnist")
    gen = torch.Generator().manual_seed(seed)
    truth = prior.sample(num, gen, num_steps=steps)
    width = torch.exp(WIDTH[0] + WIDTH[1] * torch.randn(num, generator=gen))
    std = torch.exp(NOISE[0] + NOISE[1] * torch.randn(num, generator=gen))
    y = torch.stack(
        [
            ps.operators.Blur.gaussian(float(w)).bind((1, 28, 28)).A(truth[i : i + 1])[0]
            for i, w in enumerate(width)
        ]
    )
    y = y + std[:, None, None, None] * torch.randn(y.shape, generator=gen)
    op = ps.operators.Blur.gaussian(ps.Unknown(dist.LogNormal(*WIDTH), name="width"))
    noise = ps.noise.Gaussian(ps.Unknown(dist.LogNormal(*NOISE), name="noise_std"))
    problem = ps.InverseProblem(prior, op, y, noise)
    problem.truth = truth
    return problem, {"width": width, "noise_std": std}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["pmmh", "pgibbs"], default="pmmh")
    ap.add_argument("--problems", type=int, default=2)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--particles", type=int, default=16, help="inner particles (pmmh), per sweep (pgibbs)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=8, help="iterations (pmmh) or sweeps (pgibbs)")
    ap.add_argument("--burn-in", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=4, help="pmmh: inner runs at the truth for the spread")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    problem, truth = problems(args.problems, args.steps, args.seed)
    kept = args.iterations - args.burn_in
    loop = {"iterations": args.iterations} if args.method == "pmmh" else {"sweeps": args.iterations}
    start = time.perf_counter()
    r = ps.sample(
        problem,
        args.method,
        args.chains * kept,
        args.steps,
        seed=args.seed,
        particles=args.particles,
        burn_in=args.burn_in,
        **loop,
    )
    wall = time.perf_counter() - start
    acc = r.acceptance if args.method == "pmmh" else r.stats["theta_acceptance"]
    print(
        f"{args.method}: {args.problems} problems, {args.chains} chains, {args.particles} particles, "
        f"{args.steps} steps, {args.iterations} iterations ({args.burn_in} burn-in), {wall:.0f} s"
    )
    for b in range(args.problems):
        parts = []
        for name, draws in r.parameters.items():
            d = draws[b].double()
            lo, hi = torch.quantile(d, torch.tensor([0.05, 0.95], dtype=d.dtype)).tolist()
            t = float(truth[name][b])
            parts.append(
                f"{name} truth {t:.3f} mean {d.mean():.3f} [{lo:.3f}, {hi:.3f}] "
                f"{'covered' if lo <= t <= hi else 'missed'}"
            )
        rate = float(acc[b, args.burn_in :].mean())
        print(
            f"problem {b}: " + "; ".join(parts) + f"; acceptance {rate:.2f} (per iteration: "
            f"{[round(float(a), 2) for a in acc[b]]})"
        )
    if args.method == "pmmh" and args.repeats > 1:
        params = Parameters(problem)
        values = {n: truth[n].double()[:, None].expand(-1, args.repeats) for n in params.names}
        tds = ps.METHODS["tds"]()
        log_z = torch.stack(
            [
                tds.run(
                    sub, args.particles, args.steps, torch.Generator().manual_seed(i), False
                ).log_evidence[0]
                for i, sub in enumerate(params.instantiate(problem, values))
            ]
        ).reshape(args.problems, args.repeats)
        for b in range(args.problems):
            z = log_z[b].double()
            print(
                f"problem {b}: log Z at the truth over {args.repeats} runs of {args.particles}: "
                f"sd {z.std():.1f}, range {z.min():.1f} .. {z.max():.1f}"
            )


if __name__ == "__main__":
    main()
