"""Where the samplers' draws end: the share of hidden pixels at the background (< -0.99).

The rank histograms of ``benchmarks/mnist_sbc.py`` pile up at one end for some samplers. On MNIST
about 44% of the hidden pixels of the model's own 25-step draws sit at the background, within 0.01
of -1; a sampler whose draws hold fewer (noisy background) ranks the truth lowest there, one that
holds more (too much background) ranks it highest. This prints the share for the truths, fresh
prior draws, and one draw from each of ``--runs`` independent runs of ``--particles`` particles
per problem (DPS: ``--runs`` independent draws). Bottom half hidden, noise ``--noise`` (0.1).

    PYTHONPATH=. python benchmarks/mnist_background.py --problems 8 --runs 8 --particles 4
"""

from __future__ import annotations

import argparse

import torch

import posterior as ps


def background(x: torch.Tensor, hidden: torch.Tensor) -> str:
    """One line: the share of hidden pixels within 0.01 of -1 and their mean."""
    h = x.reshape(-1, hidden.numel())[:, hidden]  # [draws, hidden pixels]
    return f"background {(h < -0.99).float().mean():.3f}  mean {h.mean():.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--particles", type=int, default=4, help="particles per run")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--methods", default="smc,tds,mcgdiff,dps")
    ap.add_argument("--noise", type=float, default=0.1, help="observation noise std")
    args = ap.parse_args()
    torch.set_num_threads(1)

    prior = ps.load_prior("mnist")
    gen = torch.Generator().manual_seed(0)
    truth = prior.sample(args.problems, gen, num_steps=args.steps)  # [P, 1, 28, 28]
    mask = ps.operators.half_mask(tuple(prior.event_shape), "bottom")
    op = ps.operators.Inpainting(mask)
    clean = op.A(truth)
    noisy = clean + args.noise * torch.randn(clean.shape, generator=gen)
    problem = ps.InverseProblem(prior, op, noisy, args.noise)
    hidden = ~mask.reshape(-1).bool()
    print(f"{'truth':10s} {background(truth, hidden)}")
    fresh = prior.sample(4 * args.problems, torch.Generator().manual_seed(1), num_steps=args.steps)
    print(f"{'prior':10s} {background(fresh, hidden)}")
    for method in args.methods.split(","):
        if ps.METHODS[method].exact:
            n = args.runs * args.particles
            result = ps.sample(problem, method, n, args.steps, seed=0, progress=False, runs=args.runs)
            draws = result.one_per_run().samples
        else:
            draws = ps.sample(problem, method, args.runs, args.steps, seed=0, progress=False).samples
        print(f"{method:10s} {background(draws, hidden)}")


if __name__ == "__main__":
    main()
