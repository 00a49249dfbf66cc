"""Non-Gaussian noise: sliced W1 of every method that takes a noise model, over the oracle's floor.

Problems: the five of ``tests/noise/_problems.py`` (Poisson counts through a softplus intensity
and through a matrix with a pyro link, Student-t with an outlier, Laplace through a nonlinear map
and a matrix; Gaussian-mixture priors in 2 and 4 dimensions), ``--problems`` problems each. The
reference is self-normalised importance sampling of ``--draws`` exact prior draws
(``tests.oracles.importance_posterior``: exact for the continuous model as draws grow), whose
effective sample size is reported. For each method: ``--particles`` particles / chains / draws
and ``--steps`` steps, sliced W1 (100 directions) to as many oracle draws, averaged over 4
reference sets and over the problems; the floor is the same distance between two independent
sets of oracle draws. Cells give ``distance / floor`` and CPU seconds per run (one thread).

    PYTHONPATH=. python benchmarks/noise_models.py --out benchmarks/results/noise_models
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import posterior as ps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.noise._problems import NONLINEAR, PROBLEMS
from tests.oracles import distance_and_floor, importance_posterior

METHODS = ["tds", "mala", "gibbs", "dps", "reddiff", "csgm"]
OPTIONS = {"reddiff": {"init": "noise"}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--names", nargs="+", default=list(PROBLEMS), help="problems (tests/noise/_problems.py)")
    p.add_argument("--problems", type=int, default=4, help="problems per name (B)")
    p.add_argument("--particles", type=int, default=2000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--draws", type=int, default=10**7, help="prior draws of the oracle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/noise_models"))
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in args.names:
        problem = PROBLEMS[name](args.problems, seed=args.seed)
        t0 = time.process_time()
        ref = importance_posterior(problem, args.draws, seed=args.seed)
        rows.append(
            dict(
                problem=name,
                method="oracle",
                noise=repr(problem.noise),
                dim=problem.event_shape[0],
                nonlinear=name in NONLINEAR,
                ess_min=float(ref.ess.min()),
                cpu_s=time.process_time() - t0,
            )
        )
        print(f"{name}: oracle ESS min {ref.ess.min():.0f} ({rows[-1]['cpu_s']:.1f} s)", flush=True)
        for method in args.methods:
            t0 = time.process_time()
            try:
                res = ps.sample(
                    problem,
                    method,
                    num_particles=args.particles,
                    num_steps=args.steps,
                    seed=args.seed,
                    **OPTIONS.get(method, {}),
                )
            except (ValueError, FloatingPointError) as err:
                rows.append(dict(problem=name, method=method, error=f"{type(err).__name__}: {err}"))
                print(f"  {method}: {rows[-1]['error']}", flush=True)
                continue
            cpu = time.process_time() - t0
            dist, floor = distance_and_floor(ref, res.samples, seed=args.seed)
            rows.append(
                dict(
                    problem=name,
                    method=method,
                    distance=dist.tolist(),
                    floor=floor.tolist(),
                    ratio=float(dist.mean() / floor.mean()),
                    cpu_s=cpu,
                )
            )
            print(f"  {method}: {rows[-1]['ratio']:.2f} x floor ({cpu:.1f} s)", flush=True)
    return rows


def to_markdown(rows: list[dict], methods: list[str]) -> str:
    head = "| problem | dim | noise | oracle ESS (min) | floor | " + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (5 + len(methods))]
    for o in (r for r in rows if r["method"] == "oracle"):
        cells = []
        floor = None
        for m in methods:
            r = next((r for r in rows if r["problem"] == o["problem"] and r["method"] == m), None)
            if r is None:
                cells.append("")
            elif "error" in r:
                cells.append("refused" if "needs" in r["error"] or "guides" in r["error"] else "failed")
            else:
                floor = sum(r["floor"]) / len(r["floor"])
                cells.append(f"{r['ratio']:.2f} ({r['cpu_s']:.1f} s)")
        kind = "nonlinear" if o["nonlinear"] else "matrix"
        lines.append(
            f"| {o['problem']} ({kind}) | {o['dim']} | {o['noise']} | {o['ess_min']:.0f} | "
            f"{'' if floor is None else f'{floor:.3f}'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    table = to_markdown(rows, args.methods)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
