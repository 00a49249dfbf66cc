"""What a decoder changes for TDS's twist: the same posterior seen through ``A o D``.

Part ``mixture``: a 2-D, 25-component latent Gaussian-mixture prior, an affine decoder
``D(z) = W z + b`` to 5-D and 2 noisy linear measurements (4 problems; the setup of
``tests/priors/test_latent.py``). The latent problem is linear, so TDS may use its linear
twist (the prior covariance twist, ``runs="auto"``); the same decoder hidden in a callable makes
``A o D`` a black box and TDS falls back to its moment-matched nonlinear twist (``A(D(x0_hat))``
and its Jacobian by autograd through the decoder). Sliced W1 of the decoded draws to the closed
form pushed through ``D``, against the exact-vs-exact floor, at ``num_steps = 100``.

Part ``mnist``: the shipped ``mnist-latent`` prior, a held-out digit with its bottom half
hidden: TDS (its moment-matched twist through the decoder, with and without tempering) and DPS,
their ESS, PSNR, coverage of the truth, and the network calls split into UNet and decoder calls
(``num_evals`` counts both).

    python benchmarks/latent_twist.py --part mixture      # benchmarks/results/latent_twist_mixture.json
    python benchmarks/latent_twist.py --part mnist --particles 32 --steps 25   # ..._mnist.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.priors.latent import LinearDecoder
from posterior.problems import gmm_prior_grid
from posterior.samplers.latent import latent_problem, linear_latent_problem


def mixture_problem(B: int = 4, sigma: float = 0.3, seed: int = 0) -> ps.InverseProblem:
    gen = torch.Generator().manual_seed(seed)
    latent = gmm_prior_grid(2, gen)
    W = torch.randn(5, 2, generator=gen)
    b = 0.5 * torch.randn(5, generator=gen)
    prior = ps.LatentPrior(latent, LinearDecoder(W, b))
    A = torch.randn(2, 5, generator=gen) / 5**0.5
    return ps.problems.simulate(prior, A, sigma, B, seed=seed + 1)


def mixture(particles: list[int], steps: int) -> dict:
    problem = mixture_problem()
    dec = problem.prior.linear_decoder
    opaque = ps.InverseProblem(
        ps.LatentPrior(problem.prior.latent_prior, lambda z: dec(z)), problem.operator, problem.y, 0.3
    )
    post = linear_latent_problem(problem).exact_posterior()
    gen = torch.Generator().manual_seed(0)
    ref, ref2 = (problem.prior.decode(post.sample(2000, gen)) for _ in range(2))
    floor = sliced_wasserstein(ref, ref2)
    rows = []
    for label, prob in (
        ("linear twist (affine decoder)", problem),
        ("nonlinear twist (black-box decoder)", opaque),
    ):
        inner = latent_problem(prob)
        for n in particles:
            start = time.perf_counter()
            r = ps.sample(prob, "tds", num_particles=n, num_steps=steps, seed=0)
            dist = sliced_wasserstein(r.samples, ref)
            rows.append(
                {
                    "twist": label,
                    "latent_operator": repr(inner.operator),
                    "particles": n,
                    "runs": r.options.get("runs"),
                    "w1_per_problem": [round(v, 4) for v in dist.tolist()],
                    "w1_over_floor": round(dist.mean().item() / floor.mean().item(), 2),
                    "min_ess_per_problem": [round(v, 1) for v in r.ess.min(-1).values.tolist()],
                    "num_evals": r.num_evals,
                    "num_vjps": r.num_vjps,
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            )
            print(rows[-1], flush=True)
    return {"floor_per_problem": [round(v, 4) for v in floor.tolist()], "steps": steps, "rows": rows}


def mnist(particles: int, steps: int) -> dict:
    prior = ps.load_prior("mnist-latent")
    problem = ps.problems.mnist_inpainting(0, "half", 0.1, 0, prior=prior)
    prior.latent_prior.moments()  # the one-off moment estimate, outside the timings
    truth = problem.truth
    rows = []
    for method, options in (("tds", {}), ("tds", {"tempering": 0.5}), ("dps", {})):
        unet0, dec0 = prior.latent_prior.num_evals, prior.num_evals
        start = time.perf_counter()
        r = ps.sample(problem, method, num_particles=particles, num_steps=steps, seed=0, **options)
        wall = time.perf_counter() - start
        lo, hi = torch.quantile(r.samples.flatten(1), torch.tensor([0.05, 0.95]), dim=0)
        inside = ((truth.flatten() >= lo) & (truth.flatten() <= hi)).float().mean().item()
        rows.append(
            {
                "method": method,
                "options": options,
                "particles": particles,
                "steps": steps,
                "min_ess": None if r.ess is None else round(r.ess.min().item(), 2),
                "ess_below_2_steps": None if r.ess is None else int((r.ess < 2).sum()),
                "psnr_mean_db": round(10 * math.log10(1 / ((r.mean() - truth) / 2).pow(2).mean().item()), 2),
                "coverage_90": round(inside, 3),
                "num_evals": r.num_evals,
                "unet_evals": prior.latent_prior.num_evals - unet0,
                "decoder_evals": prior.num_evals - dec0,
                "num_vjps": r.num_vjps,
                "wall_s": round(wall, 1),
            }
        )
        print(rows[-1], flush=True)
    return {"problem": repr(problem), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["mixture", "mnist"], default="mixture")
    p.add_argument("--particles", type=int, nargs="+", default=[2000, 8000])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ps.ParticleDegeneracyWarning)
    start = time.perf_counter()
    if args.part == "mixture":
        out = mixture(args.particles, args.steps)
    else:
        out = mnist(args.particles[0], args.steps)
    out["command"] = "python " + " ".join(sys.argv)
    out["wall_s"] = round(time.perf_counter() - start, 1)
    path = args.out or Path("benchmarks/results") / f"latent_twist_{args.part}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
