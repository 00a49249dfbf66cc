"""Where TDS's weights degenerate on MNIST: the two parts of each step's log-weight increment.

TDS's increment from ``t`` to ``s`` is ``log p(x_s | x_t) - log q(x_s | x_t, y)`` (the price of the
gradient-shifted proposal) plus ``log g_s(x_s) - log g_t(x_t)`` (the twist's change). With a twist
that follows ``p(y | x_t)`` the two cancel to first order: a particle pushed along the twist's
gradient pays in ``p / q`` what it gains in ``g``, so their correlation over the particles is
near -1 and the increment's spread is small. This prints, per step, the standard deviation over
the particles of each part and of their sum, and their correlation, each averaged over the
problems (prior-drawn truths, bottom half hidden or 2x super-resolution, noise 0.1). A step where
the correlation turns positive is one where the twist at ``s`` is not what its gradient at ``t``
predicted, and the weights spread by the increment's standard deviation (in nats).

    PYTHONPATH=. python benchmarks/mnist_weight_increments.py --problems 4 --particles 64
    PYTHONPATH=. python benchmarks/mnist_weight_increments.py --option 'prior_var="covariance"'
"""

from __future__ import annotations

import argparse

import torch
from method_spec import parse_options
from mnist_setup import prior_drawn_problems

import posterior as ps
from posterior.samplers.exact.tds import TDS, TDSModel
from posterior.schedule import CLEAN


class RecordingModel(TDSModel):
    """TDS's model, keeping each step's two increment parts ``[B, N]`` by time."""

    parts: dict[int, tuple[torch.Tensor, torch.Tensor]]

    def step(self, t, s, x, extras, log_weights, generator):  # type: ignore[no-untyped-def]
        x_s, new, increment = super().step(t, s, x, extras, log_weights, generator)
        if s != CLEAN and "log_twist" in new:
            change = new["log_twist"] - extras["log_twist"]  # lam = 1 without tempering
            self.parts[t] = (increment - change, change)
        return x_s, new, increment


class RecordingTDS(TDS):
    """TDS whose last model is kept on the class (``ps.sample`` builds the sampler)."""

    recorded: RecordingModel

    def model(self, problem, pairs):  # type: ignore[no-untyped-def]
        base = super().model(problem, pairs)
        model = RecordingModel.__new__(RecordingModel)
        model.__dict__.update(base.__dict__)
        model.parts = {}
        RecordingTDS.recorded = model
        return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--particles", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--operator", choices=("inpaint", "sr2"), default="inpaint")
    ap.add_argument("--option", action="append", default=[], help="a TDS option, key=JSON value")
    args = ap.parse_args()
    torch.set_num_threads(1)
    options = parse_options(args.option)
    problem, _ = prior_drawn_problems(args.problems, args.steps, args.operator)
    ps.sample(problem, RecordingTDS, args.particles, args.steps, seed=0, progress=False, **options)
    what = f"TDS {options or 'defaults'}, {args.operator}"
    print(f"{what}, {args.problems} problems x {args.particles} particles")
    print("   t  sd(log p/q)  sd(dlog g)  sd(increment)  corr")
    for t, (pq, change) in sorted(RecordingTDS.recorded.parts.items(), reverse=True):
        pq, change = pq.double(), change.double()
        corr = torch.stack(
            [torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(pq, change, strict=True)]
        )
        cells = (pq.std(1).mean(), change.std(1).mean(), (pq + change).std(1).mean(), corr.nanmean())
        print(f"{t:4d} {cells[0]:12.1f} {cells[1]:11.1f} {cells[2]:14.1f} {cells[3]:6.2f}")


if __name__ == "__main__":
    main()
