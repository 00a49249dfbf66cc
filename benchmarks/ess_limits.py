"""What limits the particle samplers at a fixed number of particles: ESS, resampling and W1.

On the MCGdiff Gaussian-mixture problems (``ps.problems.gmm_benchmark(dim, obs_dim, seed)``, the
DDPM linear schedule, the default grid), each method spec (``NAME`` or ``NAME:KEY=JSON;...``, as
in ``benchmarks/exactness.py``) at each ``--particles`` count records, per run:

* ``ess_final`` (the ESS of the last reweighting, before the final resampling) and ``ess_min``
  (over the steps), out of ``N``; ``resamplings``; ``distinct``: the distinct draws among the
  ``N`` returned ones (copies of one particle count once);
* ``w1``: sliced W1 (100 directions) of the returned, equally weighted draws to ``--exact``
  exact posterior draws; ``w1_weighted``: the same distance for the weighted particle cloud
  before the final resampling (its CDF along each direction, :func:`weighted_sliced_w1`);
* ``floor``: the distance between two exact draw sets of ``--exact`` draws; ``floor_n``: between
  ``N`` exact draws and the ``--exact`` ones (what an ideal sampler of ``N`` independent draws
  scores);
* ``roots``, ``ancestors_half``: the distinct ancestors of the final particles at the first step
  and half-way (one particle system only), from the engine's genealogy;
* ``modes_tv``: the total variation between the shares of the posterior mixture's components
  among the returned draws (each draw to its most responsible component) and the exact component
  weights; ``modes_tv_weighted`` for the weighted cloud, ``modes_tv_floor`` for ``N`` exact draws.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ess_limits.py --methods mcgdiff smc \
        --particles 2000 8000 --out benchmarks/results/ess_limits_d8

A method spec with options (``mcgdiff:threshold=0.2``) is also compared, paired, with its
method's defaults on the same problems. ``--equivalent 100 200 ...`` instead measures W1 / floor
of that many independent exact draws: how many independent draws a sampler's score is worth.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch
from method_spec import parse_method
from torch import Tensor

import posterior as ps
import posterior.samplers.exact.particle_sampler as particle_sampler
from posterior.diagnostics.distances import sliced_wasserstein


def weighted_sliced_w1(
    x: Tensor, log_w: Tensor, y: Tensor, num_projections: int = 100, seed: int = 0
) -> float:
    """Sliced W1 between the weighted cloud ``(x: [n, d], log_w: [n])`` and the equally weighted
    ``y: [m, d]``: the mean over the directions of :func:`sliced_wasserstein` (same seed, same
    directions) of ``int |F_x(u) - F_y(u)| du``, the 1-D W1 of two CDFs."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[-1], num_projections, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, py = x.double() @ dirs, y.double() @ dirs  # [n, P], [m, P]
    w = torch.softmax(log_w.double(), 0)
    values = torch.cat([px, py], 0)  # [n + m, P]
    signed = torch.cat([w, -torch.full((y.shape[0],), 1 / y.shape[0], dtype=torch.float64)])
    order = values.argsort(0)
    v = values.gather(0, order)
    cdf_gap = signed[order].cumsum(0)[:-1]  # F_x - F_y between consecutive sorted values
    return float((cdf_gap.abs() * v.diff(dim=0)).sum(0).mean())


class Capture:
    """Keeps the engine's last output (the weighted particles before the final resampling)
    while a sampler runs: wraps ``run_smc`` as the particle samplers call it."""

    def __init__(self) -> None:
        self.out = None
        self.inner = particle_sampler.run_smc

    def __enter__(self) -> Capture:
        def run(*args, **kwargs):
            self.out = self.inner(*args, **{**kwargs, "genealogy": True})
            return self.out

        particle_sampler.run_smc = run
        return self

    def __exit__(self, *exc) -> None:
        particle_sampler.run_smc = self.inner


def mode_shares(post, x: Tensor, log_w: Tensor | None = None) -> Tensor:
    """The share of the (weighted) draws ``x: [n, d]`` in each component of the posterior mixture
    ``post`` (each draw to its most responsible component): ``Tensor[K]``."""
    diff = x.double()[:, None, :] - post.means.double()[None]  # [n, K, d]
    scale = torch.linalg.cholesky(post.covs.double())  # [K, d, d]
    z = torch.linalg.solve_triangular(scale[None], diff[..., None], upper=False)[..., 0]
    log_det = torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
    resp = torch.log(post.weights.double()) - log_det - 0.5 * z.pow(2).sum(-1)  # [n, K]
    w = (
        torch.full((x.shape[0],), 1 / x.shape[0], dtype=torch.float64)
        if log_w is None
        else log_w.double().softmax(0)
    )
    return torch.zeros(resp.shape[1], dtype=torch.float64).index_add_(0, resp.argmax(1), w)


def lineage(genealogy: Tensor) -> list[int]:
    """The distinct ancestors of the final particles at each step, last to first:
    ``genealogy: [num_steps, N]`` (the ancestors of each resampling or identity)."""
    idx, counts = torch.arange(genealogy.shape[-1]), []
    for anc in reversed(genealogy[:-1]):  # the last entry is the final resampling (of the returned draws)
        idx = anc[idx]
        counts.append(int(torch.unique(idx).numel()))
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["mcgdiff", "smc"])
    p.add_argument("--dims", nargs="+", type=int, default=[8])
    p.add_argument("--obs-dims", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--particles", nargs="+", type=int, default=[2000, 8000])
    p.add_argument("--exact", type=int, default=2000, help="exact posterior draws W1 is measured to")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ess_limits"))
    p.add_argument(
        "--equivalent",
        nargs="+",
        type=int,
        default=None,
        help="instead of samplers: W1 / floor of this many independent exact draws (5 sets each)",
    )
    p.add_argument("--table-from", nargs="+", type=Path, default=None, help="only summarise these JSONs")
    return p.parse_args(argv)


def run(args: argparse.Namespace, runs: list[dict], json_path: Path) -> None:
    for dim in args.dims:
        for obs_dim in args.obs_dims:
            for seed in range(args.seeds):
                problem = ps.problems.gmm_benchmark(dim, obs_dim, seed)
                post = problem.exact_posterior()
                exact = post.sample(args.exact, torch.Generator().manual_seed(10_000 + seed))
                other = post.sample(
                    max([*args.particles, args.exact]), torch.Generator().manual_seed(20_000 + seed)
                )
                cell = dict(dim=dim, obs_dim=obs_dim, seed=seed)
                target = post.weights.double()
                floors = {n: sliced_wasserstein(other[:n], exact).item() for n in args.particles}
                for spec in args.methods:
                    name, options = parse_method(spec)
                    for n in args.particles:
                        with Capture() as cap:
                            res = ps.sample(
                                problem, name, n, args.steps, seed=seed, progress=False, **options
                            )
                        particles = cap.out.particles.reshape(n, -1)  # every run's particles, pooled
                        lin = lineage(cap.out.genealogy[0]) if cap.out.genealogy.shape[0] == 1 else [-1]
                        ess = res.ess.reshape(-1)
                        row = dict(cell, method=spec, particles=n, steps=args.steps)
                        row.update(
                            ess_final=float(ess[-1]),
                            ess_min=float(ess.min()),
                            resamplings=int(res.resampled.sum()),
                            distinct=int(torch.unique(res.samples.reshape(n, -1), dim=0).shape[0]),
                            w1=sliced_wasserstein(res.samples.reshape(n, -1), exact).item(),
                            w1_weighted=weighted_sliced_w1(particles, res.log_weights.reshape(-1), exact),
                            floor=sliced_wasserstein(other[: args.exact], exact).item(),
                            floor_n=floors[n],
                            run_size=int(res.run_size),
                            roots=lin[-1],
                            ancestors_half=lin[len(lin) // 2],
                            modes_tv=float(
                                0.5 * (mode_shares(post, res.samples.reshape(n, -1)) - target).abs().sum()
                            ),
                            modes_tv_weighted=float(
                                0.5
                                * (mode_shares(post, particles, res.log_weights.reshape(-1)) - target)
                                .abs()
                                .sum()
                            ),
                            modes_tv_floor=float(0.5 * (mode_shares(post, other[:n]) - target).abs().sum()),
                        )
                        runs.append(row)
                        print(json.dumps(row), flush=True)
                json_path.write_text(json.dumps(runs, indent=1))


def run_equivalent(args: argparse.Namespace) -> str:
    """W1 / floor of ``E`` independent exact draws (5 sets per problem) for each ``E`` of
    ``--equivalent``, mean over the problems: how many independent draws a sampler's W1 / floor is
    worth. Returns a Markdown table."""
    ratios: dict[int, list[float]] = {e: [] for e in args.equivalent}
    for dim in args.dims:
        for obs_dim in args.obs_dims:
            for seed in range(args.seeds):
                post = ps.problems.gmm_benchmark(dim, obs_dim, seed).exact_posterior()
                exact = post.sample(args.exact, torch.Generator().manual_seed(10_000 + seed))
                other = post.sample(args.exact, torch.Generator().manual_seed(20_000 + seed))
                floor = sliced_wasserstein(other, exact).item()
                for e in args.equivalent:
                    gens = [torch.Generator().manual_seed(40_000 + 100 * seed + k) for k in range(5)]
                    w1 = [sliced_wasserstein(post.sample(e, g), exact).item() for g in gens]
                    ratios[e].append(statistics.mean(w1) / floor)
    lines = ["| independent exact draws | W1 / floor |", "|---|---|"]
    lines += [f"| {e} | {statistics.mean(v):.2f} |" for e, v in ratios.items()]
    return "\n".join(lines) + "\n"


def paired(runs: list[dict]) -> str:
    """Per method spec with options, against its method's defaults at the same ``N``, problem and
    seed: the geometric mean of the W1 ratio x/÷ its standard error and the share of runs closer."""
    base = {(r["method"], r["particles"], r["dim"], r["obs_dim"], r["seed"]): r["w1"] for r in runs}
    lines = ["| method vs its defaults | N | W1 ratio | closer |", "|---|---|---|---|"]
    for spec, n in sorted({(r["method"], r["particles"]) for r in runs if ":" in r["method"]}):
        name = spec.split(":")[0]
        logs = [
            math.log(r["w1"] / base[(name, n, r["dim"], r["obs_dim"], r["seed"])])
            for r in runs
            if r["method"] == spec
            and r["particles"] == n
            and (name, n, r["dim"], r["obs_dim"], r["seed"]) in base
        ]
        if len(logs) < 2:
            continue
        mean, se = statistics.mean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
        closer = sum(v < 0 for v in logs)
        lines.append(
            f"| {spec} | {n} | {math.exp(mean):.2f} x/÷ {math.exp(se):.2f} | {closer} of {len(logs)} |"
        )
    return "\n".join(lines) + "\n"


def table(runs: list[dict]) -> str:
    """Per method spec and ``N``: mean ESS (final, min) as a share of a run's size, distinct
    returned draws and distinct first-step ancestors (``roots``) as shares of ``N``, the mean over
    cells of (mean W1 / mean floor) for the returned draws, the weighted cloud and ``N`` exact
    draws, the mean total-variation error of the mixture-component shares (returned / weighted /
    ``N`` exact draws), and the correlation over runs of ``log(W1 / floor)`` with ``log(n /
    ESS_final)`` and with ``log(N / roots)``."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["particles"]), []).append(r)
    head = (
        "| method | N | ESS final | ESS min | distinct | roots | W1 returned | W1 weighted | "
        "N exact draws | modes TV | corr ESS | corr roots |"
    )
    lines = [head, "|" + "---|" * 12]
    for (spec, n), rows in groups.items():

        def ratio(key: str, rows: list[dict] = rows) -> float:
            cells: dict[tuple, list[dict]] = {}
            for r in rows:
                cells.setdefault((r["dim"], r["obs_dim"]), []).append(r)
            return statistics.mean(
                statistics.mean(r[key] for r in c) / statistics.mean(r["floor"] for r in c)
                for c in cells.values()
            )

        def mean(key: str, rows: list[dict] = rows) -> float:
            return statistics.mean(r[key] for r in rows)

        lw = [math.log(r["w1"] / r["floor"]) for r in rows]
        le = [math.log(r["run_size"] / r["ess_final"]) for r in rows]
        corr = statistics.correlation(lw, le) if len(rows) > 2 and len(set(le)) > 1 else float("nan")
        lr = [math.log(n / r["roots"]) for r in rows if r["roots"] > 0]
        corr_roots = statistics.correlation(lw, lr) if len(lr) == len(rows) > 2 else float("nan")
        roots = f"{mean('roots') / n:.3f}" if min(r["roots"] for r in rows) > 0 else "-"
        lines.append(
            f"| {spec} | {n} | {mean('ess_final') / rows[0]['run_size']:.2f} | "
            f"{mean('ess_min') / rows[0]['run_size']:.2f} | {mean('distinct') / n:.2f} | {roots} | "
            f"{ratio('w1'):.2f} | {ratio('w1_weighted'):.2f} | {ratio('floor_n'):.2f} | "
            f"{mean('modes_tv'):.3f} / {mean('modes_tv_weighted'):.3f} / {mean('modes_tv_floor'):.3f} | "
            f"{corr:.2f} | {corr_roots:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.equivalent:
        print(run_equivalent(args))
        return
    if args.table_from:
        runs = [r for path in args.table_from for r in json.loads(path.read_text())]
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        runs: list[dict] = []
        run(args, runs, args.out.with_suffix(".json"))
    out = table(runs) + "\n" + paired(runs)
    if not args.table_from:
        args.out.with_suffix(".md").write_text(out)
    print(out)


if __name__ == "__main__":
    main()
