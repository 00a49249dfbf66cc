"""Time grids x noise schedules: how far the exact samplers' K-step chain sits from the posterior.

Two measurements on the MCGdiff Gaussian-mixture problems (``ps.problems.gmm_benchmark``), the
prior's schedule changed, the problem not:

* ``--part samplers``: for each schedule, grid, method and ``(dim, obs_dim, seed)``, sliced W1
  (100 directions) between ``--particles`` draws of ``ps.sample(..., time_grid=grid)`` and as
  many exact posterior draws; the floor is the same distance between two exact draw sets.
* ``--part chain``: no sampler, the chain itself: the log-evidence error of the ``K``-step chain's
  posterior, ``|log Z_chain - log Z|``, by importance sampling of ``--chain-draws`` chain draws.
  The bias the samplers converge to, with little Monte Carlo noise: it ranks the grids.

Schedules: ``linear`` (DDPM), ``cosine`` (Nichol & Dhariwal), ``edm`` (``ps.EDMSchedule()``),
``flow`` (``ps.FlowSchedule()``) and ``decreasing`` (the decreasing betas ``0.02 .. 1e-4`` of
MCGdiff's Gaussian-mixture experiment, 999 levels). Writes JSON (every run) and prints a Markdown
summary: per schedule, grid and method, the mean over cells of W1 / floor (each cell's mean W1 over
its seeds divided by its mean floor) and the worst cell.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/time_grids.py --part samplers --dims 8 \
        --seeds 4 --out benchmarks/results/time_grids_d8
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch
from exactness import run_on_grid

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.diagnostics.oracles import chain_draws


def decreasing_betas() -> ps.VPSchedule:
    """MCGdiff's Gaussian-mixture schedule: betas falling linearly from 0.02 to 1e-4 (999 levels)."""
    betas = torch.linspace(0.02, 1e-4, 999, dtype=torch.float64)
    return ps.VPSchedule(torch.cumprod(1 - betas, 0))


SCHEDULES = {
    "linear": ps.VPSchedule.linear,
    "cosine": ps.VPSchedule.cosine,
    "edm": ps.EDMSchedule,
    "flow": ps.FlowSchedule,
    "decreasing": decreasing_betas,
}


#: The samplers' default reverse kernel, ``kernel_var:eta``.
DEFAULT_KERNEL = "ddim:1"


def kernel_options(kernel: str) -> dict:
    """``"KERNEL_VAR:ETA"`` -> the samplers' options ``{"kernel_var": ..., "eta": ...}``."""
    kernel_var, eta = kernel.split(":")
    return {"kernel_var": kernel_var, "eta": float(eta)}


def label(grid: str, kernel: str) -> str:
    """The grid column's label: the grid, and the kernel where it is not the default."""
    return grid if kernel == DEFAULT_KERNEL else f"{grid} {kernel}"


#: ``--part chain`` leaves out problems whose importance-sampling ESS (of ``--chain-draws``) is
#: below this: their ``log Z_chain`` is not resolved.
MIN_ESS = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["samplers", "chain", "budget"], default="samplers")
    p.add_argument("--methods", nargs="+", default=["tds", "mcgdiff", "smc"])
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    p.add_argument("--grids", nargs="+", default=["leading", "trailing", "logsnr", "sqrt_abar", "karras"])
    p.add_argument("--dims", nargs="+", type=int, default=[8])
    p.add_argument("--obs-dims", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--steps", nargs="+", type=int, default=[100])
    p.add_argument("--particles", type=int, default=2000)
    p.add_argument("--budget-particles", nargs="+", type=int, default=[500, 2000, 8000])
    p.add_argument("--chain-draws", type=int, default=20000)
    p.add_argument(
        "--kernels",
        nargs="+",
        default=[DEFAULT_KERNEL],
        help="reverse kernels KERNEL_VAR:ETA (ddim:1 = DDPM, the default; analytic:1 = Analytic-DDPM, "
        "analytic:0 = Analytic-DDIM); other than ddim:1, labelled 'GRID KERNEL' in the grid column",
    )
    p.add_argument("--paired-base", default="leading", help="the grid label the paired table compares with")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/time_grids"))
    p.add_argument("--table-from", nargs="+", type=Path, default=None, help="only summarise these JSONs")
    return p.parse_args(argv)


def problem_cells(args: argparse.Namespace, runs: list[dict], json_path: Path):  # type: ignore[no-untyped-def]
    """For every (dim, obs_dim, seed) cell: append the exact-vs-exact floor to ``runs`` and yield
    ``(cell, exact draws, schedule name, the problem under that schedule)`` per ``--schedules``;
    ``runs`` is written to ``json_path`` after each cell."""
    for dim in args.dims:
        for obs_dim in args.obs_dims:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                base = ps.problems.gmm_benchmark(dim, obs_dim, seed)
                post = base.exact_posterior()
                exact = post.sample(args.particles, torch.Generator().manual_seed(10_000 + seed))
                other = post.sample(args.particles, torch.Generator().manual_seed(20_000 + seed))
                cell = dict(dim=dim, obs_dim=obs_dim, seed=seed)
                runs.append(dict(cell, method="floor", sw=sliced_wasserstein(other, exact).item()))
                for sched in args.schedules:
                    problem = ps.problems.gmm_benchmark(dim, obs_dim, seed, schedule=SCHEDULES[sched]())
                    yield cell, exact, sched, problem
                json_path.write_text(json.dumps(runs, indent=1))


def run_samplers(args: argparse.Namespace, runs: list[dict], json_path: Path) -> None:
    for cell, exact, sched, problem in problem_cells(args, runs, json_path):
        for grid, kernel in [(g, k) for g in args.grids for k in args.kernels]:
            for steps in args.steps:
                for method in args.methods:
                    spec = method if kernel == DEFAULT_KERNEL else method + ":" + options(kernel)
                    res = run_on_grid(problem, spec, args.particles, steps, cell["seed"], grid)
                    row = dict(cell, method=method, schedule=sched, grid=label(grid, kernel))
                    row.update(steps=steps, kernel=kernel)
                    row["sw"] = sliced_wasserstein(res.samples, exact).item()
                    runs.append(row)
                    print(json.dumps(row), flush=True)


def options(kernel: str) -> str:
    """The method-spec suffix (``KEY=JSON;KEY=JSON``, :func:`method_spec.parse_method`) of a kernel."""
    return ";".join(f"{k}={json.dumps(v)}" for k, v in kernel_options(kernel).items())


def run_budget(args: argparse.Namespace, runs: list[dict], json_path: Path) -> None:
    """Accuracy against network calls: each method at every ``--steps`` x ``--budget-particles``
    on the default grid (``time_grid`` left out), W1 to ``--particles`` exact draws."""
    for cell, exact, sched, problem in problem_cells(args, runs, json_path):
        for steps in args.steps:
            for n in args.budget_particles:
                for method in args.methods:
                    res = ps.sample(problem, method, n, steps, seed=cell["seed"], progress=False)
                    row = dict(cell, method=method, schedule=sched, steps=steps, particles=n)
                    row.update(evals=res.num_evals, sw=sliced_wasserstein(res.samples, exact).item())
                    runs.append(row)
                    print(json.dumps(row), flush=True)


def budget_table(runs: list[dict]) -> str:
    """Per method, steps and particles: network calls per problem and the mean over cells of
    (mean W1 / mean floor of two sets of the exact draws' size)."""
    floors: dict[tuple, list[float]] = {}
    groups: dict[tuple, dict[tuple, list[float]]] = {}
    evals: dict[tuple, int] = {}
    for r in runs:
        cell = (r["dim"], r["obs_dim"])
        if r["method"] == "floor":
            floors.setdefault(cell, []).append(r["sw"])
        else:
            key = (r["method"], r["steps"], r["particles"])
            groups.setdefault(key, {}).setdefault(cell, []).append(r["sw"])
            evals[key] = r["evals"]
    lines = ["| method | steps | particles | network calls | W1 / floor |", "|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (["tds", "mcgdiff", "smc"].index(k[0]), k[1], k[2])):
        ratios = [statistics.mean(v) / statistics.mean(floors[c]) for c, v in groups[key].items()]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {evals[key]} | {statistics.mean(ratios):.2f} |")
    return "\n".join(lines) + "\n"


def run_chain(args: argparse.Namespace, runs: list[dict], json_path: Path) -> None:
    """The chain's posterior by importance sampling of ``--chain-draws`` chain draws (started from
    the exact marginal, as the samplers do on a mixture prior): its log-evidence error against
    the exact one, ``|log Z_chain - log Z|``, per problem (the draws are shared by the problems of
    a seed, whose prior is the same)."""
    for dim in args.dims:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            problems = [ps.problems.gmm_benchmark(dim, o, seed) for o in args.obs_dims]
            for sched in args.schedules:
                gen = torch.Generator().manual_seed(seed)
                prior = ps.problems.gmm_prior_grid(dim, gen, schedule=SCHEDULES[sched]())
                for grid, kernel in [(g, k) for g in args.grids for k in args.kernels]:
                    for steps in args.steps:
                        g = torch.Generator().manual_seed(30_000 + seed)
                        opts = kernel_options(kernel)
                        x = chain_draws(prior, steps, args.chain_draws, g, time_grid=grid, **opts).double()
                        for obs_dim, problem in zip(args.obs_dims, problems, strict=True):
                            log_w = problem.log_likelihood(x.to(problem.y.dtype)[None])[0].double()
                            log_z = torch.logsumexp(log_w, 0) - math.log(len(log_w))
                            ess = 1 / torch.softmax(log_w, 0).pow(2).sum()
                            err = abs(float(log_z) - float(problem.exact_log_evidence()))
                            row = dict(dim=dim, obs_dim=obs_dim, seed=seed, method="chain", schedule=sched)
                            row.update(grid=label(grid, kernel), steps=steps, kernel=kernel)
                            row.update(log_z_error=err, ess=float(ess))
                            runs.append(row)
                            print(json.dumps(row), flush=True)
            json_path.write_text(json.dumps(runs, indent=1))


def summary(runs: list[dict]) -> str:
    """Per (steps, schedule, grid, method): mean over cells of (mean W1 / mean floor), and the worst
    cell, as ``mean (worst)``; one column per method (``chain``: the mean ``|log Z_chain - log Z|``
    over cells, and the worst cell; problems with an ESS below :data:`MIN_ESS` left out)."""
    floors: dict[tuple, list[float]] = {}
    for r in runs:
        if r["method"] == "floor":
            floors.setdefault((r["dim"], r["obs_dim"]), []).append(r["sw"])
    groups: dict[tuple, dict[tuple, list[float]]] = {}
    for r in runs:
        if r["method"] == "chain" and r["ess"] < MIN_ESS:
            continue  # the importance-sampling estimate of log Z_chain is noise there
        if r["method"] != "floor":
            key = (r["steps"], r["schedule"], r["grid"], r["method"])
            value = r["log_z_error"] if r["method"] == "chain" else r["sw"]
            groups.setdefault(key, {}).setdefault((r["dim"], r["obs_dim"]), []).append(value)
    methods = sorted({k[3] for k in groups}, key=lambda m: ["tds", "mcgdiff", "smc", "chain"].index(m))
    rows = sorted({k[:3] for k in groups}, key=lambda k: (k[0], list(SCHEDULES).index(k[1]), k[2]))
    lines = ["| steps | schedule | grid | " + " | ".join(methods) + " |", "|" + "---|" * (3 + len(methods))]
    for steps, sched, grid in rows:
        out = [str(steps), sched, grid]
        for m in methods:
            cells = groups.get((steps, sched, grid, m), {})
            ratios = [
                statistics.mean(v) / (1 if m == "chain" else statistics.mean(floors[c]))
                for c, v in cells.items()
            ]
            out.append(f"{statistics.mean(ratios):.2f} ({max(ratios):.2f})" if ratios else "-")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def paired(runs: list[dict], base: str = "leading") -> str:
    """Per grid and method, pooled over schedules and cells: the geometric mean of W1(grid) /
    W1(``base``) over the same (schedule, problem, seed, steps) runs, +- its standard error, and the
    share of runs where the grid is closer."""
    sw = {
        (r["method"], r["grid"], r["schedule"], r["dim"], r["obs_dim"], r["seed"], r["steps"]): r["sw"]
        for r in runs
        if r["method"] not in ("floor", "chain")
    }
    methods = sorted({k[0] for k in sw}, key=lambda m: ["tds", "mcgdiff", "smc"].index(m))
    grids = sorted({k[1] for k in sw} - {base})
    lines = [f"| grid vs {base} | " + " | ".join(methods) + " |", "|" + "---|" * (1 + len(methods))]
    for grid in grids:
        out = [grid]
        for m in methods:
            logs = [
                math.log(v / sw[(m, base, *k[2:])])
                for k, v in sw.items()
                if k[0] == m and k[1] == grid and (m, base, *k[2:]) in sw
            ]
            if len(logs) < 2:
                out.append("-")
                continue
            mean, se = statistics.mean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
            wins = sum(v < 0 for v in logs) / len(logs)
            out.append(f"{math.exp(mean):.2f} x/÷ {math.exp(se):.2f}, closer in {100 * wins:.0f}%")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.table_from:
        runs = [r for path in args.table_from for r in json.loads(path.read_text())]
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        runs = []
        json_path = args.out.with_suffix(".json")
        {"samplers": run_samplers, "chain": run_chain, "budget": run_budget}[args.part](args, runs, json_path)
    if any("particles" in r for r in runs):
        table = budget_table(runs)
    else:
        table = summary(runs)
        if any(r["method"] not in ("floor", "chain") for r in runs):
            table += "\n" + paired(runs, args.paired_base)
            steps = sorted({r["steps"] for r in runs if r["method"] != "floor"})
            for k in steps if len(steps) > 1 else []:  # and per step count
                at_k = [r for r in runs if r.get("steps") == k]
                table += f"\n{k} steps:\n\n" + paired(at_k, args.paired_base)
    if not args.table_from:
        args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
