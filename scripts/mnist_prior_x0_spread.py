"""How much the MNIST prior's denoiser varies across pure-noise inputs at the first sampling times.

At the first times of a coarse sampling grid, ``abar_t`` is tiny (8.7e-5 at t = 960 for the
linear schedule), so the exact conditional mean ``E[x0 | x_t]`` is nearly the data mean whatever
``x_t`` is. A network whose ``x0_hat`` varies much more than that is wrong there, and every
sampler starts by trusting it. For ``n`` inputs ``x_t ~ N(0, I)`` (pure noise) this script
reports, at each of the first ``--num-times`` times of ``prior.schedule.time_pairs(--grid)``,
the per-pixel standard deviation of ``x0_hat`` across the inputs, averaged over pixels, with
the denoiser clipped to ``[-1, 1]`` (as ``ps.load_prior`` ships it) and unclipped.

Reference: the same spread of the exact Tweedie mean ``E[x0 | x_t]`` of the *empirical*
distribution of the 9,500 training digits (a softmax-weighted average of the digits, exact
for that distribution, which is what the training loss is minimised for), and the network's
root-mean-square distance to it per pixel (``rmse_vs_empirical``, clipped denoiser).

Example::

    python scripts/mnist_prior_x0_spread.py --weights posterior/priors/weights/mnist
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

import numpy as np  # noqa: E402

from posterior.priors.diffusers import DiffusersPrior  # noqa: E402
from posterior.priors.shipped import weights_path  # noqa: E402

N_TRAIN = 9500


def x0_spread(prior: DiffusersPrior, t: int, n: int, seed: int) -> float:
    """Mean over pixels of the sd of ``x0_hat(x_t, t)`` across ``n`` inputs ``x_t ~ N(0, I)``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *prior.event_shape), generator=gen)
    x0 = prior.denoise(x, t).x0
    return float(x0.std(dim=0).mean())


def empirical_tweedie(x_t: torch.Tensor, data: torch.Tensor, abar: float) -> torch.Tensor:
    """Exact ``E[x0 | x_t]`` when ``x0`` is uniform on the rows of ``data: Tensor[N, D]``.

    ``x_t: Tensor[n, D]``; weights ``softmax_k(-|x_t - sqrt(abar) x0_k|^2 / (2 (1 - abar)))``,
    computed in float64. Returns ``Tensor[n, D]``.
    """
    x, d = x_t.double(), data.double()
    logw = -torch.cdist(x, abar**0.5 * d).pow(2) / (2 * (1 - abar))
    return torch.softmax(logw, dim=1) @ d


def main(argv: list[str] | None = None) -> None:
    """Print (and optionally write) the spread table as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="a diffusers folder (default: the shipped MNIST prior)")
    p.add_argument("--data", default="/work/shared/data/mnist10k.npz")
    p.add_argument("--grid", type=int, default=25, help="number of sampling steps of the time grid")
    p.add_argument("--num-times", type=int, default=3)
    p.add_argument("--n", type=int, default=64, help="pure-noise inputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    weights = Path(args.weights) if args.weights else weights_path("mnist")
    clipped = DiffusersPrior.from_pretrained(weights, clip_denoised=(-1.0, 1.0))
    raw = DiffusersPrior.from_pretrained(weights, clip_denoised=None)
    with np.load(args.data) as d:
        data = torch.from_numpy(d["images"][:N_TRAIN].astype(np.float64) / 127.5 - 1.0).flatten(1)
    rows = []
    for t, _ in clipped.schedule.time_pairs(args.grid)[: args.num_times]:
        abar = float(clipped.schedule.alpha_bar(t))
        x = torch.randn((args.n, *clipped.event_shape), generator=torch.Generator().manual_seed(args.seed))
        exact = empirical_tweedie(x.flatten(1), data, abar)
        net = clipped.denoise(x, t).x0.flatten(1).double()
        rows.append(
            {
                "t": t,
                "alpha_bar": abar,
                "x0_sd_clipped": x0_spread(clipped, t, args.n, args.seed),
                "x0_sd_unclipped": x0_spread(raw, t, args.n, args.seed),
                "empirical_tweedie_sd": float(exact.std(dim=0).mean()),
                "rmse_vs_empirical": float((net - exact).pow(2).mean().sqrt()),
            }
        )
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "weights": str(weights),
        "prediction_type": clipped.prediction_type,
        "n_inputs": args.n,
        "seed": args.seed,
        "rows": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
