"""Exactness on the MCGdiff Gaussian-mixture grid: sliced W1 to the exact posterior.

For each ``(dim, obs_dim, seed)`` problem of ``ps.problems.gmm_benchmark`` and each method, draw
``--num-samples`` posterior samples (``num_particles`` = that number, at most 2000 for the particle
methods) with ``--steps`` diffusion steps (``--steps-800`` for ``dim = 800``), and measure the sliced
Wasserstein distance (100 directions, averaged 1-D W1) to as many exact posterior draws. The
floor is the same distance between two independent sets of exact draws. Writes a Markdown table
(mean +- standard deviation over seeds, and CPU seconds per run on one thread: process time, which
stays meaningful on a shared machine) and a JSON file with every run (wall and CPU seconds).

    PYTHONPATH=. python benchmarks/exactness.py --dims 8 80 --obs-dims 1 2 4 --seeds 5 \
        --out benchmarks/results/exactness

``--schedules vp edm flow`` and ``--time-grids leading trailing linspace logsnr`` add one table row
per prior schedule (``ps.VPSchedule.linear()``, ``ps.EDMSchedule()``, ``ps.FlowSchedule()``) and
time grid (``ps.sample(..., time_grid=)``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from method_spec import parse_method

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.schedule import TIME_GRIDS

SCHEDULES = {"vp": ps.VPSchedule.linear, "edm": ps.EDMSchedule, "flow": ps.FlowSchedule}


def run_on_grid(problem: ps.InverseProblem, method: str, num: int, steps: int, seed: int, grid: str):
    """``ps.sample`` on ``grid``; a sampler that reads ``problem.prior.schedule.time_pairs``
    directly walks the same grid (the prior's schedule is pointed at it for the run). ``method``
    may carry options (:func:`parse_method`)."""
    method, options = parse_method(method)
    schedule = problem.prior.schedule
    cls_pairs = type(schedule).time_pairs
    schedule.time_pairs = lambda n, spacing=grid: cls_pairs(schedule, n, spacing)
    try:
        return ps.sample(problem, method, num, steps, seed=seed, progress=False, time_grid=grid, **options)
    finally:
        del schedule.time_pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="default: every method in ps.METHODS; NAME:KEY=JSON;KEY=JSON passes options, "
        'e.g. tds:prior_var="covariance"',
    )
    p.add_argument("--dims", nargs="+", type=int, default=[8, 80, 800])
    p.add_argument("--obs-dims", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--seeds", type=int, default=10, help="seeds 0 .. seeds-1 per cell")
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--steps-800", type=int, default=20, help="diffusion steps for dim >= 800")
    p.add_argument("--obs-dims-800", nargs="+", type=int, default=[2], help="obs_dims run at dim >= 800")
    p.add_argument("--schedules", nargs="+", default=["vp"], choices=sorted(SCHEDULES))
    p.add_argument("--time-grids", nargs="+", default=["leading"], choices=list(TIME_GRIDS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/exactness"))
    p.add_argument(
        "--table-from",
        nargs="+",
        type=Path,
        default=None,
        help="only write the table of these JSON files (later files win for the same run)",
    )
    return p.parse_args(argv)


def table_from(paths: list[Path], methods: list[str] | None) -> str:
    """The Markdown table of earlier runs; a later file's run replaces the same (method, cell, seed)."""
    runs: dict[tuple, dict] = {}
    for path in paths:
        for r in json.loads(path.read_text()):
            key = (
                r["method"],
                r["dim"],
                r["obs_dim"],
                r.get("schedule", "vp"),
                r.get("time_grid", "leading"),
            )
            runs[(*key, r["seed"])] = r
    found = sorted({r["method"] for r in runs.values()} - {"floor"})
    return to_markdown(list(runs.values()), methods or found)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table_from:
        table = table_from(args.table_from, args.methods)
        args.out.with_suffix(".md").write_text(table)
        print(table)
        return
    torch.set_num_threads(args.threads)
    methods = args.methods or sorted(ps.METHODS)
    unknown = [m for m in methods if parse_method(m)[0] not in ps.METHODS]
    if unknown:
        sys.exit(f"unknown methods {unknown}; known: {', '.join(sorted(ps.METHODS))}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    json_path = args.out.with_suffix(".json")
    for dim in args.dims:
        obs_dims = args.obs_dims_800 if dim >= 800 else args.obs_dims
        steps = args.steps_800 if dim >= 800 else args.steps
        for obs_dim in obs_dims:
            for seed in range(args.seeds):
                base = ps.problems.gmm_benchmark(dim, obs_dim, seed)
                post = base.exact_posterior()
                exact = post.sample(args.num_samples, torch.Generator().manual_seed(10_000 + seed))
                other = post.sample(args.num_samples, torch.Generator().manual_seed(20_000 + seed))
                floor = sliced_wasserstein(other, exact).item()
                runs.append(dict(method="floor", dim=dim, obs_dim=obs_dim, seed=seed, sw=floor, seconds=0.0))
                for sched in args.schedules:
                    problem = ps.problems.gmm_benchmark(dim, obs_dim, seed, schedule=SCHEDULES[sched]())
                    for grid in args.time_grids:
                        for method in methods:
                            row = dict(method=method, dim=dim, obs_dim=obs_dim, seed=seed, steps=steps)
                            row.update(schedule=sched, time_grid=grid)
                            try:
                                start, cpu = time.perf_counter(), time.process_time()
                                res = run_on_grid(problem, method, args.num_samples, steps, seed, grid)
                                row["cpu_seconds"] = time.process_time() - cpu
                                row["seconds"] = time.perf_counter() - start
                                row["sw"] = sliced_wasserstein(res.samples, exact).item()
                                if res.log_evidence is not None:
                                    row["log_evidence"] = res.log_evidence.item()
                                    row["exact_log_evidence"] = problem.exact_log_evidence().item()
                            except Exception as err:  # a baseline that cannot run here: record why
                                row["error"] = f"{type(err).__name__}: {err}"
                            runs.append(row)
                            print(json.dumps(row), flush=True)
                json_path.write_text(json.dumps(runs, indent=1))
    table = to_markdown(runs, methods)
    args.out.with_suffix(".md").write_text(table)
    print(table)


def to_markdown(runs: list[dict], methods: list[str]) -> str:
    """One row per ``(dim, obs_dim)`` and, where runs name them, per schedule and time grid: floor
    and each method as ``mean ± sd (seconds)``."""
    grids = sorted(
        {(r.get("schedule", "vp"), r.get("time_grid", "leading")) for r in runs if r["method"] != "floor"}
    )
    by_grid = grids != [("vp", "leading")]
    cells = sorted({(r["dim"], r["obs_dim"]) for r in runs})
    head = "| dim, obs_dim | " + ("schedule | grid | " if by_grid else "") + "steps | seeds | floor | "
    lines = [head + " | ".join(methods) + " |", "|" + "---|" * (4 + 2 * by_grid + len(methods))]
    for (dim, obs), (sched, grid) in ((c, g) for c in cells for g in grids):
        fl = [r["sw"] for r in runs if (r["dim"], r["obs_dim"], r["method"]) == (dim, obs, "floor")]
        sel = [
            r
            for r in runs
            if (r["dim"], r["obs_dim"], r.get("schedule", "vp"), r.get("time_grid", "leading"))
            == (dim, obs, sched, grid)
        ]
        steps = next((r["steps"] for r in sel if "steps" in r), "")
        out = [f"{dim}, {obs}", *([sched, grid] if by_grid else []), str(steps), str(len(fl)), _fmt(fl)]
        for m in methods:
            ok = [r for r in sel if r["method"] == m and "sw" in r]
            if not ok:
                out.append("error")
                continue
            secs = statistics.mean(r.get("cpu_seconds", r["seconds"]) for r in ok)
            out.append(f"{_fmt([r['sw'] for r in ok])} ({secs:.1f} s)")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


if __name__ == "__main__":
    main()
