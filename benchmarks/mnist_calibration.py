"""Coverage of MNIST truths drawn from the prior itself by the samplers' draws.

Truths ``x ~ prior`` are ancestral draws of the MNIST prior over the samplers' own step grid
(``prior.sample(n, gen, num_steps=steps)``), so the reverse chain that an exact sampler targets
is the very model that drew them: its central credible intervals must cover the true pixels at
the nominal rate (up to the Monte Carlo error of the draws). Operators:

- ``inpaint``: one half of the image hidden (bottom / top / left / right, chosen by the
  problem's seed), coverage over the hidden pixels;
- ``sr2``: super-resolution x2 (average pooling), coverage over all pixels.

``y = A(x) + noise_std * eps``. Each method returns ``runs * draws_per_run`` draws per problem
from ``runs`` independent runs of ``particles`` particles (``1x128``: one run of 128 particles;
``16x8``: 16 runs of 8, the samplers' ``runs=16`` option). Reported per operator and method, over
the problems: the 90% and 50% coverage (mean and standard deviation over problems), the
minimum ESS over steps and runs (smallest and median over problems), network calls
(forward + VJP) per returned draw and the wall time per problem.

Run (one thread)::

    python benchmarks/mnist_calibration.py --problems 4 --steps 25 --methods tds,mcgdiff,smc,dps \
        --configs 1x128,16x8 --json benchmarks/results/mnist_calibration.json

``--option tds:twist_var=mse`` passes a method option (repeatable); ``--prior DIR`` loads
another diffusers folder instead of the shipped prior.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

import posterior as ps
from posterior.diagnostics.calibration import coverage

HALVES = ("bottom", "top", "left", "right")
LEVELS = (0.9, 0.5)


def parse_config(text: str) -> tuple[int, int]:
    runs, particles = text.lower().split("x")
    return int(runs), int(particles)


def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        method, kv = item.split(":", 1)
        key, value = kv.split("=", 1)
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method, {})[key] = parsed
    return out


def build_problems(prior, operator: str, P: int, steps: int, noise: float, seed: int) -> list[dict]:
    """``P`` problems: truth ``[1, 28, 28]`` drawn from the prior, operator, ``y``, informative pixels."""
    gen = torch.Generator().manual_seed(1000 + seed)
    truths = prior.sample(P, gen, num_steps=steps)
    shape = tuple(prior.event_shape)
    problems = []
    for i in range(P):
        if operator == "inpaint":
            hide = HALVES[(seed + i) % 4]
            mask = ps.operators.half_mask(shape, hide)
            op = ps.operators.Inpainting(mask)
            informative = ~mask.reshape(-1).bool()
            label = f"hide {hide}"
        elif operator == "sr2":
            op = ps.operators.SuperResolution(2)
            informative = torch.ones(math.prod(shape), dtype=torch.bool)
            label = "sr x2"
        else:
            raise ValueError(f"unknown operator {operator!r}; use inpaint or sr2")
        op = op.bind(shape)
        noise_gen = torch.Generator().manual_seed(2000 + seed + i)
        clean = op.A(truths[i : i + 1])[0]
        y = clean + noise * torch.randn(clean.shape, generator=noise_gen, dtype=torch.float64).to(clean)
        problems.append({"op": op, "y": y, "truth": truths[i], "informative": informative, "label": label})
    return problems


def run_one(prior, pb: dict, method: str, runs: int, particles: int, draws_per_run: int, args, options):
    """Draws ``[runs * draws_per_run, *event]`` for one problem, the ESS, the calls and the time."""
    problem = ps.InverseProblem(prior, pb["op"], pb["y"], args.noise)
    if runs > 1:  # independent particle systems, run as one batch
        options = {**options, "runs": runs}
    calls0 = prior.num_evals + prior.num_vjps
    t0 = time.perf_counter()
    res = ps.sample(problem, method, runs * particles, args.steps, seed=args.seed, progress=False, **options)
    seconds = time.perf_counter() - t0
    calls = prior.num_evals + prior.num_vjps - calls0
    samples = res.samples.reshape(runs, particles, *prior.event_shape)
    gen = torch.Generator().manual_seed(args.seed)
    keep = torch.stack([torch.randperm(particles, generator=gen)[:draws_per_run] for _ in range(runs)])
    draws = torch.gather(samples.flatten(2), 1, keep[..., None].expand(-1, -1, samples[0, 0].numel()))
    ess = None if res.ess is None else float(res.ess.min())
    if res.log_evidence is None:
        log_z = None
    else:
        log_z = (res.stats["run_log_evidence"] if runs > 1 else res.log_evidence).reshape(-1).tolist()
    return draws.reshape(runs * draws_per_run, -1), ess, calls, seconds, log_z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=4, help="problems per operator")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--operators", default="inpaint,sr2")
    ap.add_argument("--methods", default="tds,mcgdiff,smc,dps")
    ap.add_argument("--configs", default="1x128,16x8", help="RUNSxPARTICLES, comma-separated")
    ap.add_argument("--draws-per-run", type=int, default=0, help="draws kept per run (0: all particles)")
    ap.add_argument("--option", action="append", default=[], help="METHOD:KEY=VALUE (JSON value)")
    ap.add_argument("--prior", type=Path, default=None, help="a diffusers folder (default: shipped)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="a label for the table rows")
    ap.add_argument("--json", type=Path, default=None, help="append the rows to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    options = parse_options(args.option)

    if args.prior is None:
        prior = ps.load_prior("mnist")
    else:
        prior = ps.DiffusersPrior.from_pretrained(args.prior, clip_denoised=(-1.0, 1.0))
    prior.moments()  # a one-off estimate, outside the timings
    rows = []
    for operator in args.operators.split(","):
        problems = build_problems(prior, operator, args.problems, args.steps, args.noise, args.seed)
        for method in args.methods.split(","):
            exact = ps.METHODS[method].exact
            for config in args.configs.split(","):
                runs, particles = parse_config(config)
                if not exact and runs > 1:
                    continue  # independent draws: runs change nothing
                dpr = particles if args.draws_per_run <= 0 else min(args.draws_per_run, particles)
                cov = {lv: [] for lv in LEVELS}
                ess, calls, secs, spreads = [], 0, 0.0, []
                for pb in problems:
                    draws, e, c, s, log_z = run_one(
                        prior, pb, method, runs, particles, dpr, args, options.get(method, {})
                    )
                    inf = pb["informative"]
                    cv = coverage(draws[None][..., inf], pb["truth"].reshape(1, -1)[..., inf], LEVELS)
                    for lv, value in zip(LEVELS, cv.overall.tolist(), strict=True):
                        cov[lv].append(value)
                    if e is not None:
                        ess.append(e)
                    if log_z is not None and len(log_z) > 1:
                        spreads.append(max(log_z) - min(log_z))
                    calls += c
                    secs += s
                n_draws = runs * dpr
                row = {
                    "tag": args.tag,
                    "operator": operator,
                    "method": method,
                    "options": options.get(method, {}),
                    "config": f"{runs}x{particles}",
                    "draws": n_draws,
                    "steps": args.steps,
                    "noise": args.noise,
                    "problems": args.problems,
                    "cov90": cov[0.9],
                    "cov50": cov[0.5],
                    "min_ess": ess,
                    "log_z_spread": spreads,
                    "calls_per_draw": calls / (args.problems * n_draws),
                    "seconds_per_problem": secs / args.problems,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json is not None:
        old = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(old + rows, indent=1))
    print()
    print(table(rows))


def _ms(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    sd = float(t.std()) if t.numel() > 1 else 0.0
    return f"{float(t.mean()):.2f} ± {sd:.2f}"


def table(rows: list[dict]) -> str:
    """The Markdown table of ``benchmarks/README.md``."""
    lines = [
        "| operator | method | options | runs x particles | draws | 90% cov | 50% cov "
        "| min ESS (worst / median) | calls / draw | s / problem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "default"
        e = torch.tensor(r["min_ess"]) if r["min_ess"] else None
        ess = "-" if e is None else f"{float(e.min()):.1f} / {float(e.median()):.1f}"
        lines.append(
            f"| {r['operator']} | {r['method']} | {r['tag'] or opts} | {r['config']} | {r['draws']} "
            f"| {_ms(r['cov90'])} | {_ms(r['cov50'])} | {ess} | {r['calls_per_draw']:.0f} "
            f"| {r['seconds_per_problem']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
