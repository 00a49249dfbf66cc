"""What exactness costs as the image grows: TDS's error against its particle count and dimension.

For ``gmm_image`` problems (``ps.problems.gmm_image``; the family scales its length scales with
``H``, so the shapes are alike) at shapes ``(1, H, H)``, one operator, noise 0.1: TDS with one run
of ``N`` particles (``runs=1``, the default covariance twist) for ``N`` on a doubling ladder. Per
cell (shape, steps, ``N``), over the problems:

- ``sw_ratio``: sliced W1 (``image_oracle.metrics``) between ``n = min(N, 512)`` resampled draws and
  ``n`` exact draws, over the same between two exact sets of ``n`` (the floor at that count);
  ``sw_ratio_128`` the same at ``min(N, 128)`` draws (the issue's count); the draws are a random
  subset of the ``N`` resampled ones;
- ``logz_err``: ``log_evidence - log p(y)`` per problem (mean, sd, mean of ``|.|``);
- ``min_ess``: the smallest ESS over the steps, per problem;
- ``var_sum``: the variance over the particles (under the weights the step starts from) of each
  step's log-weight increment, summed over the steps, per problem: the spread of the weights a run
  must absorb (with log-normal weights and no resampling the ESS would be ``N exp(-var_sum)``);
- ``calls``: network evaluations plus VJPs per problem; ``calls_per_draw``: that over 128 (the
  draws the issue asks for), i.e. the budget axis on which "200 calls per draw" sits;
- ``seconds``: wall time of the run (all problems together, one thread).

A ladder stops where the next cell would exceed ``--max-cell-seconds`` (its time doubles with
``N``), at ``--max-particles``, or once both targets (``|log Z err| <= 3`` on average,
``sw_ratio <= 1.3``) held at two consecutive rungs. ``--report`` reads the JSON files and prints,
per shape and steps, the calls per draw needed for each target (interpolated in ``log N`` on the
ladder; ``> max`` where not reached), the growth of ``var_sum`` with ``d``, and draws the figure.
``--pilot-particles N`` runs every ladder on a time grid placed by a pilot run (:func:`pilot_grid`);
``--chain-gap`` measures the ``K``-step chain's own distance to the prior (:func:`chain_gap`).
The commands behind ``benchmarks/README.md`` are listed there ("What exactness costs as the image
grows").

Run (one thread)::

    cd benchmarks
    nice -n 5 python image_cost_curve.py --shapes 4,8,12,16,20,28 --steps 100,25 \
        --out results/image_cost_curve.json
    python image_cost_curve.py --report results/image_cost_curve.json --figure results/image_cost_curve.png
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import torch
from image_oracle import hidden_pixels, metrics

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.diagnostics.oracles import chain_draws
from posterior.problems_image import gmm_image, image_mixture_prior
from posterior.samplers.exact.tds import TDS, TDSModel

#: The issue's targets: ``|log Z error| <= 3`` nats, sliced W1 at most 1.3x the floor.
LOGZ_TARGET, SW_TARGET = 3.0, 1.3
#: The issue's draw count: ``calls_per_draw = calls / DRAWS``.
DRAWS = 128
#: The most exact draws any cell compares (``n = min(N, MAX_COMPARED)``).
MAX_COMPARED = 512


class RecordingModel(TDSModel):
    """TDS's model, keeping per step the weighted and unweighted variance over the particles of
    the log-weight increment, ``Tensor[B]`` each, and the step's time."""

    trace: list[tuple[int, torch.Tensor, torch.Tensor]]

    def step(self, t, s, x, extras, log_weights, generator):  # type: ignore[no-untyped-def]
        x_s, new, increment = super().step(t, s, x, extras, log_weights, generator)
        inc = increment.double()
        w = torch.softmax(log_weights.double(), -1)
        mean = (w * inc).sum(-1, keepdim=True)
        weighted = (w * (inc - mean).pow(2)).sum(-1)
        self.trace.append((int(t), weighted, inc.var(-1)))
        return x_s, new, increment


class RecordingTDS(TDS):
    """TDS whose last model is kept on the class (``ps.sample`` builds the sampler)."""

    recorded: RecordingModel

    def model(self, problem, pairs):  # type: ignore[no-untyped-def]
        base = super().model(problem, pairs)
        model = RecordingModel.__new__(RecordingModel)
        model.__dict__.update(base.__dict__)
        model.trace = []
        RecordingTDS.recorded = model
        return model


def run_cell(problem, exact: torch.Tensor, steps: int, N: int, seed: int, **options) -> dict:
    """One TDS run of ``N`` particles per problem and its measurements (module docstring).
    ``exact: [B, 2 * MAX_COMPARED, d]`` exact draws (two sets)."""
    n = min(N, MAX_COMPARED)
    e1, e2 = exact[:, :n], exact[:, MAX_COMPARED : MAX_COMPARED + n]
    truth, pixels = problem.truth.flatten(1), hidden_pixels(problem)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ps.sample(problem, RecordingTDS, N, steps, seed=seed, progress=False, runs=1, **options)
    # a random subset: a systematic resampling orders the draws by ancestor, so the first n of N
    # would be a block of few lineages
    gen = torch.Generator().manual_seed(seed)
    draws = r.samples.flatten(2)[:, torch.randperm(N, generator=gen)]
    m = metrics(draws[:, :n], truth, e1, e2, pixels)
    k = min(N, DRAWS)
    m128 = metrics(draws[:, :k], truth, exact[:, :k], exact[:, MAX_COMPARED : MAX_COMPARED + k], pixels)
    err = r.log_evidence.double() - problem.exact_posterior().log_evidence
    trace = RecordingTDS.recorded.trace
    weighted = torch.stack([v for _, v, _ in trace], -1)  # [B, K]
    plain = torch.stack([v for _, _, v in trace], -1)
    B = err.numel()
    calls = (r.num_evals + r.num_vjps) / B
    return {
        "particles": N,
        "compared": n,
        "sw_ratio": m["sw_ratio"],
        "sw_ratio_128": m128["sw_ratio"],
        "cov90": m["cov90"],
        "cov50": m["cov50"],
        "logz_err": err.tolist(),
        "logz_err_mean": float(err.mean()),
        "logz_err_sd": float(err.std()) if B > 1 else 0.0,
        "logz_abs_mean": float(err.abs().mean()),
        "min_ess": r.ess.amin(-1).tolist(),
        "var_sum": weighted.sum(-1).tolist(),
        "var_sum_unweighted": plain.sum(-1).tolist(),
        "var_profile": weighted.mean(0).tolist(),
        "times": [t for t, _, _ in trace],
        "calls": calls,
        "calls_per_draw": calls / DRAWS,
        "seconds": r.wall_time,
    }


def pilot_grid(times: list[int], profile: list[float], floor: float = 0.25) -> list[int]:
    """A time grid of ``K = len(times)`` steps that puts the steps where a pilot run's weights
    spread: ``times`` the pilot's grid (``K`` strictly decreasing training times, the last step
    going from ``times[-1]`` to the clean image), ``profile`` the variance of the pilot's log-weight
    increment at each of its ``K`` steps. The density of the new times between ``times[k]`` and
    ``times[k + 1]`` is proportional to ``sqrt(profile[k]) + floor * mean(sqrt(profile))``; the
    ends (``times[0]``, ``times[-1]``) stay; the last step's variance has no interval to refine.
    Returns ``K`` strictly decreasing integer times."""
    K = len(times)
    w = torch.tensor(profile[: K - 1], dtype=torch.float64).clamp_min(0).sqrt()
    w = w + floor * w.mean()
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), w.cumsum(0) / w.sum()])  # at times[0..K-1]
    levels = torch.linspace(0, 1, K, dtype=torch.float64)
    idx = torch.searchsorted(cum, levels).clamp(1, K - 1)
    lo, hi = cum[idx - 1], cum[idx]
    frac = ((levels - lo) / (hi - lo).clamp_min(1e-300)).clamp(0, 1)
    t = torch.tensor(times, dtype=torch.float64)
    new = (t[idx - 1] + frac * (t[idx] - t[idx - 1])).round().long()
    new[0], new[-1] = times[0], times[-1]
    for j in range(K - 2, -1, -1):  # strictly decreasing: push up from the end
        new[j] = max(int(new[j]), int(new[j + 1]) + 1)
    return new.tolist()


def pilot(op: str, H: int, B: int, steps: int, args: argparse.Namespace) -> list[int]:
    """:func:`pilot_grid` from one pilot run of ``--pilot-particles`` particles on ``B`` other
    problems (seed ``--seed + 1000``) along the default grid."""
    problem = gmm_image((1, H, H), op, args.noise, B, args.seed + 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps.sample(
            problem, RecordingTDS, args.pilot_particles, steps, seed=args.seed + 1000, progress=False, runs=1
        )
    trace = RecordingTDS.recorded.trace
    profile = torch.stack([v for _, v, _ in trace], -1).mean(0).tolist()
    return pilot_grid([t for t, _, _ in trace], profile)


def chain_gap(args: argparse.Namespace) -> None:
    """The chain's own gap on the prior: sliced W1 between ``MAX_COMPARED`` draws of the ``K``-step
    chain (``chain_draws``, the default grid) and as many exact prior draws, over the same between
    two exact sets, for each shape and step count (three seeds). What a sampler of that chain
    reaches at best, whatever its particles."""
    torch.set_num_threads(1)
    rows = []
    for H in (int(h) for h in args.shapes.split(",")):
        prior = image_mixture_prior((1, H, H))
        for steps in (int(s) for s in args.steps.split(",")):
            ratios = []
            for seed in range(3):
                gen = torch.Generator().manual_seed(seed)
                e = prior.sample(2 * MAX_COMPARED, gen).flatten(1).double()
                x = chain_draws(prior, steps, MAX_COMPARED, gen).flatten(1).double()
                e1, e2 = e[:MAX_COMPARED], e[MAX_COMPARED:]
                ratios.append(
                    float(sliced_wasserstein(x, e1, seed=seed) / sliced_wasserstein(e2, e1, seed=seed))
                )
            row = {"dim": H * H, "steps": steps, "sw_ratio": ratios}
            rows.append(row)
            print(f"{H}x{H} K={steps}: chain vs prior SW/floor {[round(r, 2) for r in ratios]}", flush=True)
            if args.out:
                args.out.write_text(json.dumps({"draws": MAX_COMPARED, "rows": rows}, indent=1))


def met(cell: dict) -> bool:
    """Whether a cell meets both targets."""
    return cell["logz_abs_mean"] <= LOGZ_TARGET and cell["sw_ratio"] <= SW_TARGET


def measure(args: argparse.Namespace) -> None:
    """Run the ladders (module docstring) and write the JSON after every cell."""
    torch.set_num_threads(1)
    old = json.loads(args.out.read_text()) if args.out and args.out.exists() and args.resume else None
    cells: list[dict] = old["cells"] if old else []
    done = {(c["shape"][1], c["steps"], c["particles"], c["operator"]) for c in cells}
    options = json.loads(args.options)
    ladder = [args.min_particles * 2**i for i in range(30) if args.min_particles * 2**i <= args.max_particles]
    for op in args.operators.split(","):
        for H in (int(h) for h in args.shapes.split(",")):
            d = H * H
            B = args.problems_small if d <= args.small_dim else args.problems
            problem = gmm_image((1, H, H), op, args.noise, B, args.seed)
            exact = problem.exact_posterior().sample(2 * MAX_COMPARED, args.seed + 1).flatten(2)
            for steps in (int(s) for s in args.steps.split(",")):
                last, streak = None, 0
                grid = pilot(op, H, B, steps, args) if args.pilot_particles else None
                if grid is not None:
                    options["time_grid"] = grid
                    print(f"{H}x{H} {op} K={steps}: pilot grid {grid}", flush=True)
                for N in ladder:
                    if last is not None and 2 * last["seconds"] > args.max_cell_seconds:
                        break
                    if (H, steps, N, op) in done:
                        continue
                    cell = run_cell(problem, exact, steps, N, args.seed, **options)
                    cell |= {"shape": [1, H, H], "dim": d, "operator": op, "steps": steps, "problems": B}
                    if grid is not None:
                        cell["time_grid"] = grid
                    cells.append(cell)
                    last, streak = cell, streak + 1 if met(cell) else 0
                    print(
                        f"{H}x{H} {op} K={steps} N={N}: SW/floor {cell['sw_ratio']:.2f} "
                        f"logZ err {cell['logz_err_mean']:.1f} +- {cell['logz_err_sd']:.1f} "
                        f"min ESS {min(cell['min_ess']):.1f} var_sum {sum(cell['var_sum']) / B:.1f} "
                        f"calls/draw {cell['calls_per_draw']:.0f} {cell['seconds']:.0f}s",
                        flush=True,
                    )
                    if args.out:
                        meta = {"noise": args.noise, "seed": args.seed, "options": options, "draws": DRAWS}
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        args.out.write_text(json.dumps({"args": meta, "cells": cells}, indent=1))
                    if streak >= 2:
                        break


def needed(cells: list[dict], value: str, target: float) -> tuple[str, float]:
    """The calls per draw at which ``value`` falls to ``target`` on a ladder: the first rung from
    which it stays at or below ``target`` to the ladder's end, interpolated linearly in
    ``(log N, log value)`` with the rung before (``("=", calls)``); ``("<=", calls)`` if it holds
    from the first rung; ``(">", the top's calls)`` if it never settles there."""
    cells = sorted(cells, key=lambda c: c["particles"])
    vals = [c[value] for c in cells]
    i = len(vals)
    while i > 0 and vals[i - 1] <= target:
        i -= 1
    if i == len(vals):
        return ">", cells[-1]["calls_per_draw"]
    if i == 0:
        return "<=", cells[0]["calls_per_draw"]
    a, b = (math.log(c["calls_per_draw"]) for c in cells[i - 1 : i + 1])
    la, lb = math.log(max(vals[i - 1], 1e-9)), math.log(max(vals[i], 1e-9))
    f = (la - math.log(target)) / (la - lb) if la != lb else 1.0
    return "=", math.exp(a + f * (b - a))


def fmt(need: tuple[str, float]) -> str:
    """``"123"``, ``"<= 100"`` or ``"> 3200"``."""
    return f"{need[1]:.0f}" if need[0] == "=" else f"{need[0]} {need[1]:.0f}"


TARGETS = (("logz_abs_mean", LOGZ_TARGET), ("sw_ratio", SW_TARGET), ("sw_ratio_128", SW_TARGET))


def report(paths: list[Path], figure: Path | None) -> None:
    """Print the needed-budget table and the variance growth; draw the figure."""
    groups: dict[tuple, list[dict]] = {}
    for p in paths:
        for c in json.loads(p.read_text()).get("cells", []):  # the chain-gap file has none
            grid = "pilot" if "time_grid" in c else "auto"
            groups.setdefault((c["operator"], c["steps"], grid, c["dim"]), []).append(c)
    print(
        "| operator | steps | grid | d | problems | N | calls/draw: logZ <= 3 | SW <= 1.3x | SW(128) <= 1.3x "
        "| at the top N: SW/floor | SW(128)/floor | logZ err | 90% cov | var_sum | min ESS / N |"
    )
    print("|---" * 15 + "|")
    curves: dict[tuple, list[tuple[int, list[tuple[str, float]]]]] = {}
    for (op, steps, grid, d), group in sorted(groups.items()):
        group.sort(key=lambda c: c["particles"])
        top, B = group[-1], group[-1]["problems"]
        needs = [needed(group, value, target) for value, target in TARGETS]
        curves.setdefault((op, steps, grid), []).append((d, needs))
        print(
            f"| {op} | {steps} | {grid} | {d} | {B} | {group[0]['particles']}-{top['particles']} | "
            + " | ".join(fmt(n) for n in needs)
            + f" | {top['sw_ratio']:.2f} | {top['sw_ratio_128']:.2f} | {top['logz_err_mean']:.1f} +- "
            f"{top['logz_err_sd']:.1f} | {top['cov90']:.2f} | {sum(top['var_sum']) / B:.1f} | "
            f"{min(top['min_ess']) / top['particles']:.3f} |"
        )
    for (op, steps, grid), rows in sorted(curves.items()):
        ds = torch.tensor([r[0] for r in rows], dtype=torch.float64)
        tops = [max(groups[(op, steps, grid, d)], key=lambda c: c["particles"]) for d, _ in rows]
        var = torch.tensor([sum(c["var_sum"]) / c["problems"] for c in tops], dtype=torch.float64)
        X = torch.stack([ds.log(), torch.ones_like(ds)], 1)
        cells = ", ".join(f"d={int(d)}: {v:.1f}" for d, v in zip(ds.tolist(), var.tolist(), strict=True))
        if len(rows) > 1:
            slope = torch.linalg.lstsq(X, var.clamp_min(1e-9).log()[:, None]).solution[0, 0]
            cells += f"; log-log slope in d {float(slope):.2f}"
        print(f"{op}, {steps} steps, {grid} grid: var_sum {cells}")
    for p in paths:
        gap = json.loads(p.read_text()).get("rows", [])
        if gap:
            print("| d | chain steps | chain vs prior: SW/floor (3 seeds) | mean |\n|---|---|---|---|")
            for r in sorted(gap, key=lambda r: (r["steps"], r["dim"])):
                seeds = ", ".join(f"{v:.2f}" for v in r["sw_ratio"])
                print(
                    f"| {r['dim']} | {r['steps']} | {seeds} | {sum(r['sw_ratio']) / len(r['sw_ratio']):.2f} |"
                )
    if figure is not None:
        draw(curves, figure)


def draw(curves: dict, figure: Path) -> None:
    """Calls per draw for each target (one panel each) against ``d`` (log scales): filled where
    interpolated, ``v`` where the first rung already met it (an upper bound), open ``^`` where the
    ladder's top did not (a lower bound)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("|log Z err| <= 3 nats", "SW <= 1.3x floor (min(N, 512) draws)", "SW <= 1.3x floor (128 draws)")
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.0), sharey=True)
    ticks = sorted({d for rows in curves.values() for d, _ in rows})
    for k, (ax, name) in enumerate(zip(axes, names, strict=True)):
        for j, ((op, steps, grid), rows) in enumerate(sorted(curves.items())):
            color = f"C{j}"
            ds = [d for d, _ in rows]
            needs = [n[k] for _, n in rows]
            label = f"{op}, {steps} steps{', pilot grid' if grid == 'pilot' else ''}"
            ax.plot([], [], "-", color=color, label=label)
            for i in range(len(ds) - 1):  # join the points that are not lower bounds
                if needs[i][0] != ">" and needs[i + 1][0] != ">":
                    ax.plot(ds[i : i + 2], [needs[i][1], needs[i + 1][1]], "-", lw=1, color=color)
            for x, (kind, y) in zip(ds, needs, strict=True):
                marker, face = {"=": ("o", color), "<=": ("v", color)}.get(kind, ("^", "white"))
                ax.plot([x], [y], marker=marker, color=color, mfc=face, ms=6)
        ax.axhline(200, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks, [str(d) for d in ticks])
        ax.minorticks_off()
        ax.set_xlabel("d (pixels of a 1 x H x H image)")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel(f"network calls per draw ({DRAWS} draws)")
    axes[0].text(ticks[0], 215, "the issue's budget: 200", fontsize=7, color="grey")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("TDS, one run, covariance twist: the budget each target needs (v: met at the first rung; "
                 "open ^: not met at the top)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="4,8,12,16,20,28", help="image sides H of (1, H, H)")
    ap.add_argument("--operators", default="inpaint")
    ap.add_argument("--steps", default="100,25")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--problems-small", type=int, default=8, help="problems where d <= --small-dim")
    ap.add_argument("--small-dim", type=int, default=64)
    ap.add_argument("--min-particles", type=int, default=64)
    ap.add_argument("--max-particles", type=int, default=8192)
    ap.add_argument("--max-cell-seconds", type=float, default=360.0)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--options", default="{}", help="further TDS options, a JSON object")
    ap.add_argument("--pilot-particles", type=int, default=0, help="> 0: the time grid from a pilot run")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--resume", action="store_true", help="keep the cells already in --out")
    ap.add_argument("--report", type=Path, nargs="*", default=None, help="JSON files to summarise")
    ap.add_argument("--figure", type=Path, default=None)
    ap.add_argument("--chain-gap", action="store_true", help="measure the chain's own gap on the prior")
    args = ap.parse_args()
    if args.report:
        report(args.report, args.figure)
    elif args.chain_gap:
        chain_gap(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
