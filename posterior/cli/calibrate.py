"""``posterior calibrate``: simulation-based calibration and coverage of methods on simulated
problems; writes ``report.md``, ``report.json`` (as ``posterior compare`` does), ``ranks.png`` and
``coverage.png``. A non-empty ``--out`` is refused unless ``--overwrite``.

A method that refuses the problem is reported on stderr (``--quiet`` or not) and the command exits
with status 2; nothing is written when no method ran.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from posterior.cli._common import (
    add_common,
    add_options,
    add_overwrite,
    add_sampling,
    check_memory,
    check_out,
    first_line,
    method_options,
    nonneg_float,
    positive_int,
    report_refusals,
    resolve_methods,
    say,
)
from posterior.cli.problems import make_problem
from posterior.distributed.launch import is_main_process

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    cal = sub.add_parser("calibrate", help="simulation-based calibration and coverage")
    add_common(cal, "calibrate")
    add_overwrite(cal)
    cal.add_argument(
        "--method", action="append", default=None, help="a method (repeatable; default: demo set)"
    )
    cal.add_argument("--problem", default="gmm:2:1", help="where x ~ prior, y ~ p(y|x) come from (gmm:2:1)")
    cal.add_argument("--num-problems", type=positive_int, default=200, help="simulated problems B (200)")
    cal.add_argument("--draws", type=positive_int, default=19, help="posterior draws ranked against x (19)")
    cal.add_argument(
        "--mode",
        choices=("auto", "runs", "draws"),
        default="auto",
        help="draws from independent runs or one run",
    )
    cal.add_argument("--noise", type=nonneg_float, default=None, help="noise std for image problems (0.1)")
    cal.add_argument("--prior", default="mnist", help="image prior: a shipped name or a diffusers folder")
    add_sampling(cal, 64, 50)
    add_options(cal)
    cal.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import posterior as ps
    from posterior.diagnostics import plots
    from posterior.diagnostics.calibration import (
        coverage,
        coverage_curve_levels,
        simulation_based_calibration,
    )

    methods = resolve_methods(args.method)
    options = method_options(args.option, methods)
    base = make_problem(args.problem, 1, args.seed, args.device, prior=args.prior, noise=args.noise)
    out = check_out(args.out or Path("out/calibrate"), args.overwrite)
    mode = None if args.mode == "auto" else args.mode
    results, rows = {}, []
    for m in methods:
        say(args, f"calibrate: {m} on {args.num_problems} problems x {args.draws} draws")
        m_mode = mode or ("runs" if ps.METHODS[m].exact else "draws")
        # one run must hold the draws in mode "draws"
        particles = args.particles if m_mode == "runs" else max(args.particles, args.draws)
        check_memory(base, particles, args.num_problems * (args.draws if m_mode == "runs" else 1))
        try:
            cal = simulation_based_calibration(
                base.prior,
                base.operator,
                float(base.sigma[0]),
                m,
                num_problems=args.num_problems,
                num_draws=args.draws,
                num_particles=particles,
                num_steps=args.steps,
                mode=m_mode,
                seed=args.seed,
                progress=not args.quiet,
                distributed=getattr(args, "distributed", False),
                **options.get(m, {}),
            )
        except (ValueError, TypeError, NotImplementedError) as err:
            rows.append({"method": m, "error": first_line(err)})
            continue
        results[m] = cal
        rows.append({"method": m, **cal.to_dict()})
    if not results:
        report_refusals(rows)
        return 2
    if not is_main_process():  # under torchrun, rank 0 writes
        return 2 if any("error" in r for r in rows) else 0
    out.mkdir(parents=True, exist_ok=True)
    tests = {m: c.sbc for m, c in results.items()}
    figures = [plots.save_figure(plots.plot_rank_histograms(tests), out / "ranks.png")]
    levels = coverage_curve_levels(max(1, args.draws // 2))  # up to (L - 1) / (L + 1), see credible_interval
    curves = {m: coverage(c.draws, c.truth, levels) for m, c in results.items()}
    figures.append(plots.save_figure(plots.plot_coverage(curves), out / "coverage.png"))
    settings = {
        k: getattr(args, k)
        for k in ("problem", "num_problems", "draws", "particles", "steps", "seed", "mode")
    }
    if options:
        settings["options"] = options
    (out / "report.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    (out / "report.md").write_text(_calibration_markdown(settings, rows, figures))
    for r in rows:
        if "error" not in r:
            sbc, cov = r["sbc"], r["coverage"]
            c90 = dict(zip(cov["levels"], cov["coverage"], strict=True)).get(0.9)
            c90_text = "" if c90 is None else f", 90% coverage {c90:.3f}"
            say(args, f"  {r['method']}: SBC p = {sbc['p_value']:.3g}{c90_text}, {r['wall_time']:.1f}s")
    refused = report_refusals(rows)
    print(f"calibration report written to {out / 'report.md'}")
    return 2 if refused else 0


def _calibration_markdown(settings: dict[str, Any], rows: list[dict[str, Any]], figures: list[Path]) -> str:
    lines = ["# posterior calibration", "", ", ".join(f"{k} = {v}" for k, v in settings.items()), ""]
    levels = next((r["coverage"]["levels"] for r in rows if "coverage" in r), [])
    head = "/".join(f"{100 * v:g}" for v in levels)
    lines += [f"| method | mode | SBC chi2 (max over coords) | dof | SBC p | coverage {head}% | wall s |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | | | |")
            continue
        s, c = r["sbc"], r["coverage"]
        cov = " / ".join(f"{v:.3f}" for v in c["coverage"])
        lines.append(
            f"| {r['method']} | {r['mode']} | {s['max_chi2']:.1f} | {s['dof']} | {s['p_value']:.3g} "
            f"| {cov} | {r['wall_time']:.1f} |"
        )
    lines += [
        "",
        "SBC: chi-square test of the truth's rank among the draws, per coordinate, "
        "Bonferroni over coordinates.",
    ]
    lines += [""] + [f"![{p.stem}]({p.name})\n" for p in figures]
    return "\n".join(lines)
