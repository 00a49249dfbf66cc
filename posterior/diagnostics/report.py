"""Comparison reports: run methods on problems, measure them, write ``report.md`` / ``report.json``
and figures into a folder.

Measures per (problem, method), averaged over the ``B`` problems of a batched problem:

- ``sw``: sliced Wasserstein-1 (:func:`~posterior.diagnostics.distances.sliced_wasserstein`) from the
  draws to as many exact posterior draws, next to ``sw_floor``, the same distance between two
  independent exact sets (what a perfect sampler scores); only where the posterior is known.
- ``coverage90``: share of true coordinates inside the 90% central intervals (truth known, and at
  least :data:`MIN_COVERAGE_COORDS` true coordinates over the ``B`` problems: with fewer, e.g. one
  2-D mixture problem, it reads 0, 0.5 or 1 by chance and says nothing).
- ``sbc_p``: chi-square p-value of the truth's rank among the draws (``B >= 20`` problems with
  truth). The draws of one resampled particle run are correlated, which this quick check ignores;
  :func:`~posterior.diagnostics.calibration.simulation_based_calibration` is the rigorous test.
- ``log_evidence_error``: mean ``|log Z_hat - log Z|`` where both exist.
- ``log_evidence_run_sd`` / ``evidence_top_share`` (``runs > 1``): the standard deviation of the
  runs' log-evidences, and the share of the largest run in the sum of their evidences (near 1: the
  estimate ``log mean_r Z_r`` rests on one run); :func:`evidence_spread` says it in words.
- ``ess_min`` / ``ess_final``: ESS / N (ESS / particles per run, the smallest run's, for
  ``runs > 1``), minimum over the steps and at the last step; ``runs``: ``"RxN"``, the
  independent runs and the particles of each.
- ``evals_per_sample`` / ``vjps_per_sample``: network evaluations and VJPs per returned draw.
- ``wall_time`` (seconds) and, for images with a truth, ``psnr`` of the posterior mean (range 2).
- ``chain_gap_sw`` / ``chain_gap_sw_floor`` / ``chain_gap_log_evidence`` (when the result carries
  them: :func:`~posterior.diagnostics.chain_gap.chain_gap`, or ``compare(..., chain_gap=True)``):
  sliced W1 between the draws at ``K`` and ``2K`` steps, the same between two ``K``-step runs, and
  the log-evidence shift; how far the ``K``-step chain is from the continuous prior.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posterior.diagnostics.calibration import coverage, coverage_curve_levels, sbc_ranks, sbc_test
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.problem import InverseProblem
from posterior.samplers.result import Result

__all__ = [
    "MIN_COVERAGE_COORDS",
    "Report",
    "compare",
    "evaluate",
    "evidence_spread",
    "run_evidence",
    "write_report",
]

#: Fewest true coordinates (over all problems) for which ``coverage90`` is reported: at the
#: nominal 90% its binomial standard error is then at most 0.04 (one 2-D problem: 0, 0.5 or 1).
MIN_COVERAGE_COORDS = 50

_COLUMNS = [
    ("sw", "SW to exact", "{:.3f}"),
    ("sw_floor", "exact floor", "{:.3f}"),
    ("coverage90", "cov. 90%", "{:.2f}"),
    ("sbc_p", "SBC p", "{:.2g}"),
    ("log_evidence_error", "logZ abs. err.", "{:.3f}"),
    ("log_evidence_run_sd", "logZ sd runs", "{:.2f}"),
    ("evidence_top_share", "top run share", "{:.2f}"),
    ("ess_min", "min ESS/n", "{:.2f}"),
    ("runs", "runs x n", "{}"),
    ("psnr", "PSNR dB", "{:.1f}"),
    ("evals_per_sample", "evals/draw", "{:.0f}"),
    ("vjps_per_sample", "VJPs/draw", "{:.0f}"),
    ("wall_time", "wall s", "{:.2f}"),
    ("chain_gap_sw", "SW K vs 2K", "{:.3f}"),
    ("chain_gap_sw_floor", "SW K vs K", "{:.3f}"),
    ("chain_gap_log_evidence", "logZ 2K - K", "{:+.3f}"),
]


def _exact(problem: InverseProblem) -> Any | None:
    try:
        return problem.exact_posterior()
    except ValueError:
        return None


def evaluate(
    problem: InverseProblem,
    result: Result,
    seed: int = 0,
    exact_draws: tuple[Tensor, Tensor] | None = None,
) -> dict[str, float]:
    """Metrics of one result on its problem (see the module docstring); absent ones are left out.

    Args:
        problem: the problem the result was drawn for (``B`` problems if batched).
        result: its :class:`~posterior.Result`.
        seed: fixes the exact draws and the slicing directions.
        exact_draws: two independent exact sets ``Tensor[B, N, d]`` to reuse across methods.
    """
    r = result.as_batched()
    s = r.samples  # [B, N, *event]
    B, N = s.shape[:2]
    out: dict[str, float] = {}
    vector = len(problem.event_shape) == 1
    if vector and exact_draws is None:
        exact_draws = _exact_sets(problem, N, seed)
    if vector and exact_draws is not None:
        e1, e2 = exact_draws
        out["sw"] = float(sliced_wasserstein(s, e1, seed=seed).mean())
        out["sw_floor"] = float(sliced_wasserstein(e2, e1, seed=seed).mean())
    truth = problem.truth
    if truth is not None:
        truth = truth if problem.batched else truth[None]
        if B * math.prod(problem.event_shape) >= MIN_COVERAGE_COORDS:
            out["coverage90"] = coverage(s, truth, [0.9]).at(0.9)
        if B >= 20:
            out["sbc_p"] = sbc_test(sbc_ranks(s, truth), N).p_value
        if len(problem.event_shape) == 3:
            mse = (s.mean(1) - truth).pow(2).flatten(1).mean(1)
            out["psnr"] = float((10 * torch.log10(4.0 / mse.clamp_min(1e-12))).mean())
    if r.log_evidence is not None:
        try:
            ref = problem.exact_log_evidence()
            out["log_evidence_error"] = float((r.log_evidence - ref.reshape(B)).abs().mean())
        except ValueError:
            pass
    runs_z = run_evidence(r)
    if runs_z is not None:
        out["log_evidence_run_sd"] = float(runs_z.std(1).mean())
        out["evidence_top_share"] = float(torch.softmax(runs_z, 1).max(1).values.mean())
    if r.ess is not None and r.ess.numel():
        ess = r.ess.double() / r.run_size  # the smallest run's ESS when there are several runs
        out["ess_min"] = float(ess.min(-1).values.mean())
        out["ess_final"] = float(ess[..., -1].mean())
        out["runs"] = f"{int(r.options.get('runs', 1))}x{r.run_size}"  # independent runs x particles
    out["evals_per_sample"] = r.num_evals / (B * N)
    out["vjps_per_sample"] = r.num_vjps / (B * N)
    out["wall_time"] = r.wall_time
    for name in ("chain_gap_sw", "chain_gap_sw_floor", "chain_gap_log_evidence"):
        if name in r.stats:
            out[name] = float(r.stats[name].double().mean())
    return out


def run_evidence(result: Result) -> Tensor | None:
    """The log-evidence of each independent run, ``Tensor[B, R]`` (float64), for a particle
    sampler's result with ``runs = R > 1`` whose runs' estimates are finite; else ``None``."""
    z = result.as_batched().stats.get("run_log_evidence")
    if z is None or z.dim() != 2 or z.shape[1] < 2:
        return None
    z = z.detach().double().cpu()
    return z if bool(torch.isfinite(z).all()) else None


def evidence_spread(result: Result, index: int = 0) -> str:
    """What the log-evidence estimate of ``result`` (problem ``index``) is worth, in words: for
    ``R > 1`` runs, the spread of the runs' log-evidences and whether one run dominates the
    estimate ``log mean_r Z_r``; ``""`` for a single run (its estimate has no spread to report)."""
    z = run_evidence(result)
    if z is None:
        return ""
    z = z[index]
    R = z.numel()
    share = torch.softmax(z, 0)
    top = int(share.argmax())
    text = (
        f"over {R} independent runs: sd {float(z.std()):.2f} nats between the runs' log-evidences, "
        f"range {float(z.min()):.2f} to {float(z.max()):.2f}; the estimate is log of the mean of "
        f"the runs' evidences"
    )
    if float(share[top]) > 0.5:
        text += (
            f", which run {top} dominates ({100 * float(share[top]):.0f}% of the sum): it is worth "
            "about one run's estimate, and its error is of the order of that spread"
        )
    return text


def _exact_sets(problem: InverseProblem, n: int, seed: int) -> tuple[Tensor, Tensor] | None:
    post = _exact(problem)
    if post is None:
        return None
    gen = torch.Generator(problem.prior.device).manual_seed(seed + 1)
    e = post.sample(2 * n, gen)
    e = e if e.dim() == 3 else e[None]
    return e[:, :n], e[:, n:]


@dataclass
class Report:
    """The outcome of :func:`compare`.

    Attributes:
        rows: one dict per (problem, method): ``problem``, ``method``, the metrics, or ``error``.
        results: ``{(problem, method): Result}``.
        figures: written PNG paths.
        out: the report folder (``None`` if nothing was written).
    """

    rows: list[dict[str, Any]]
    results: dict[tuple[str, str], Result] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    out: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "rows": self.rows,
            "figures": [str(p.name) for p in self.figures],
        }

    def to_markdown(self) -> str:
        cols = [c for c in _COLUMNS if any(c[0] in r for r in self.rows)]
        errors = any("error" in r for r in self.rows)
        lines = ["# posterior comparison report", ""]
        if self.settings:
            plain = {k: v for k, v in self.settings.items() if k != "options"}
            lines.append(", ".join(f"{k} = {v}" for k, v in plain.items()))
            if self.settings.get("options"):
                per_method = (
                    f"{name} ({', '.join(f'{k}={v!r}' for k, v in opts.items())})"
                    for name, opts in self.settings["options"].items()
                )
                lines += ["", "options: " + "; ".join(per_method)]
            lines.append("")
        # one cell per column in every line: the header, the rule and each row
        head = ["problem", "method", *(c[1] for c in cols), *(["error"] if errors else [])]
        lines.append(_table_line(head))
        lines.append(_table_line(["---"] * len(head)))
        for r in self.rows:
            cells = [c[2].format(r[c[0]]) if c[0] in r else "" for c in cols]
            if errors:
                cells.append(r.get("error", ""))
            lines.append(_table_line([r["problem"], r["method"], *cells]))
        lines += [
            "",
            "SW: sliced Wasserstein-1 to as many exact posterior draws (100 directions); exact floor: "
            "the same between two exact sets. cov. 90%: share of true coordinates inside the 90% "
            f"central intervals (shown for at least {MIN_COVERAGE_COORDS} true coordinates). "
            "logZ sd runs: standard deviation of the independent runs' log-evidences; top run "
            "share: the largest run's share of their summed evidence (near 1: the log-evidence "
            "rests on one run). min ESS/n: the smallest ESS over the steps over the particles "
            "of a run (N for one run; the smallest run's for several). SBC p: uniformity of the "
            "truth's rank among the draws of one run (correlated for resampled particles; "
            "`posterior calibrate` runs the rigorous test). "
            "logZ abs. err.: absolute error of the log-evidence estimate. evals/draw, VJPs/draw: "
            "network calls per returned draw."
            + (
                " SW K vs 2K: sliced W1 between these draws and a rerun with twice the steps; SW K vs "
                "K: the same between two K-step runs (the Monte Carlo floor; far below SW K vs 2K: "
                "more steps would change the answer); logZ 2K - K: the log-evidence's shift."
                if any("chain_gap_sw" in r for r in self.rows)
                else ""
            ),
            "",
        ]
        for p in self.figures:
            lines.append(f"![{p.stem}]({p.name})")
            lines.append("")
        return "\n".join(lines)

    def write(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        (out / "report.md").write_text(self.to_markdown())
        (out / "report.json").write_text(json.dumps(self.to_json(), indent=2, default=_jsonable))
        return out


def _table_line(cells: Sequence[str]) -> str:
    """A Markdown table line; ``|`` inside a cell is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _jsonable(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return str(v)


def _name_problems(problems: Any) -> dict[str, InverseProblem]:
    if isinstance(problems, InverseProblem):
        return {"problem": problems}
    if isinstance(problems, Mapping):
        return dict(problems)
    return {f"problem{i}": p for i, p in enumerate(problems)}


def compare(
    problems: InverseProblem | Mapping[str, InverseProblem] | Sequence[InverseProblem],
    methods: Sequence[str],
    num_particles: int = 256,
    num_steps: int = 100,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = False,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    figures: bool = True,
    distributed: bool | str = False,
    chain_gap: bool = False,
) -> Report:
    """Run every method on every problem, measure them and (with ``out``) write a report folder.

    Args:
        problems: one problem, a list, or ``{name: problem}``; batched problems count as ``B``
            problems for coverage and SBC.
        methods: names in ``ps.METHODS``.
        num_particles, num_steps, seed: passed to :func:`posterior.sample` (same seed per method).
        out: folder for ``report.md``, ``report.json`` and the PNG figures.
        progress: progress bars.
        options: per-method options, ``{method: {option: value}}``.
        figures: draw figures (needs ``out``).
        distributed: passed to :func:`posterior.sample` (inside an initialised process group);
            every rank measures the same results, rank 0 alone writes ``out``.
        chain_gap: also rerun each particle method with ``2 num_steps`` steps and a second seed
            (:func:`~posterior.diagnostics.chain_gap.chain_gap` with ``floor=True``; 4x the
            network calls): the report's ``SW K vs 2K`` / ``SW K vs K`` columns.

    A method that refuses a problem (e.g. needs a linear operator) gets a row with its ``error``;
    the others still run.
    """
    from posterior._utils import progress_bar
    from posterior.distributed.launch import is_main_process
    from posterior.samplers.base import get_method, sample

    named = _name_problems(problems)
    classes = [get_method(m) for m in methods]  # unknown names fail before any work
    options = options or {}
    report = Report(
        rows=[],
        settings={"num_particles": num_particles, "num_steps": num_steps, "seed": seed},
    )
    used = {name: dict(opts) for name, opts in options.items() if opts and name in methods}
    if used:
        report.settings["options"] = used
    jobs = [(pn, cls) for pn in named for cls in classes]
    exact_cache: dict[str, tuple[Tensor, Tensor] | None] = {}
    for pn, cls in progress_bar(jobs, enabled=progress, desc="compare", total=len(jobs)):
        problem = named[pn]
        row: dict[str, Any] = {"problem": pn, "method": cls.name}
        try:
            res = sample(
                problem,
                cls,
                num_particles=num_particles,
                num_steps=num_steps,
                seed=seed,
                progress=progress,
                distributed=distributed,
                **dict(options.get(cls.name, {})),
            )
        except (ValueError, TypeError, NotImplementedError) as err:
            row["error"] = str(err).splitlines()[0]
            report.rows.append(row)
            continue
        if pn not in exact_cache:
            exact_cache[pn] = (
                _exact_sets(problem, num_particles, seed) if len(problem.event_shape) == 1 else None
            )
        if (
            chain_gap
            and res.log_evidence is not None
            and 2 * num_steps <= problem.prior.schedule.num_train_steps
        ):
            from posterior.diagnostics.chain_gap import chain_gap as _chain_gap

            _chain_gap(problem, res, seed=seed + 1, floor=True)
        row.update(evaluate(problem, res, seed=seed, exact_draws=exact_cache[pn]))
        report.results[(pn, cls.name)] = res
        report.rows.append(row)
    if out is not None and is_main_process():
        write_report(report, named, out, figures=figures)
    return report


def write_report(
    report: Report,
    problems: InverseProblem | Mapping[str, InverseProblem] | Sequence[InverseProblem],
    out: str | Path,
    figures: bool = True,
) -> Path:
    """Write ``report.md``, ``report.json`` and (with ``figures``) the PNG figures of a
    :func:`compare` report into the folder ``out``; ``problems`` as given to :func:`compare`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if figures:
        report.figures = _figures(_name_problems(problems), report, out)
    return report.write(out)


def _figures(named: Mapping[str, InverseProblem], report: Report, out: Path) -> list[Path]:
    from posterior.diagnostics import plots

    paths: list[Path] = []
    for pn, problem in named.items():
        res = {m: r for (p, m), r in report.results.items() if p == pn}
        if not res:
            continue
        first = {m: _interleave_runs(r) for m, r in res.items()}
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in pn)
        if len(problem.event_shape) == 1 and problem.event_shape[0] >= 2:
            fig = plots.plot_samples_2d(problem, first)
            paths.append(plots.save_figure(fig, out / f"{slug}_samples.png"))
        elif len(problem.event_shape) == 3:
            truth = (
                None if problem.truth is None else (problem.truth[0] if problem.batched else problem.truth)
            )
            obs = _observation_image(problem)
            fig = plots.plot_images(first, truth=truth, observation=obs)
            paths.append(plots.save_figure(fig, out / f"{slug}_images.png"))
        if any(r.ess is not None or r.log_weights is not None for r in res.values()):
            paths.append(plots.save_figure(plots.plot_traces(res), out / f"{slug}_traces.png"))
        if problem.truth is not None and problem.batch_size >= 20:
            truth = problem.truth
            covs = {
                m: coverage(r.samples, truth, coverage_curve_levels())
                for m, r in res.items()
                if r.samples.dim() >= 3
            }
            if covs:
                paths.append(plots.save_figure(plots.plot_coverage(covs), out / f"{slug}_coverage.png"))
            tests = {m: sbc_test(sbc_ranks(r.samples, truth), r.samples.shape[1]) for m, r in res.items()}
            paths.append(plots.save_figure(plots.plot_rank_histograms(tests), out / f"{slug}_ranks.png"))
    return paths


def _interleave_runs(result: Result) -> Tensor:
    """Problem 0's draws ``[N, *event]``; for a result of ``R`` runs of ``n`` particles, reordered
    run 0's first, run 1's first, ..., so that the first draws a figure shows come from different
    runs (a small run's particles are often copies of one)."""
    s = result.samples[0] if result.batched else result.samples
    R, n = int(result.options.get("runs", 1)), result.run_size
    if R == 1 or s.shape[0] != R * n:
        return s
    return s.reshape(R, n, *s.shape[1:]).transpose(0, 1).reshape(s.shape)


def _observation_image(problem: InverseProblem) -> Tensor | None:
    """``A^+ y`` for problem 0 when the operator has a pseudo-inverse, else ``y`` if image-shaped."""
    y = problem.y_batch[:1]
    try:
        img = problem.operator.A_pinv(y)  # type: ignore[attr-defined]
        return img[0].reshape(problem.event_shape)
    except (AttributeError, NotImplementedError, ValueError, RuntimeError):
        return y[0] if tuple(y.shape[1:]) == tuple(problem.event_shape) else None
