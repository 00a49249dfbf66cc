"""``posterior compare``: run methods on named problems and write a comparison report.

A method that refuses a problem (``--steps`` beyond the prior's schedule, a linear-only method on
a nonlinear problem, ...) is reported on stderr, ``--quiet`` or not, one ``posterior: error:``
line per distinct error, and the command exits with status 2; the report of the methods that ran
is still written, and nothing is written when none ran. A non-empty ``--out`` is refused unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from posterior.cli._common import (
    add_common,
    add_options,
    add_overwrite,
    add_sampling,
    check_memory,
    check_out,
    method_options,
    nonneg_float,
    positive_int,
    report_refusals,
    resolve_methods,
)
from posterior.cli.problems import PROBLEMS_HELP, make_problem
from posterior.distributed.launch import is_main_process

__all__ = ["add_parser", "print_rows", "run", "run_report"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    comp = sub.add_parser("compare", help="run methods on problems and write a report")
    add_common(comp, "compare")
    add_overwrite(comp)
    comp.add_argument(
        "--method", action="append", default=None, help="a method (repeatable; default: demo set)"
    )
    comp.add_argument(
        "--problem", action="append", default=None, help=f"a problem (repeatable): {PROBLEMS_HELP}"
    )
    comp.add_argument(
        "--num-problems", type=positive_int, default=1, help="problems per --problem (default 1)"
    )
    comp.add_argument("--noise", type=nonneg_float, default=None, help="noise std for image problems (0.1)")
    comp.add_argument("--prior", default="mnist", help="image prior: a shipped name or a diffusers folder")
    add_sampling(comp, 256, 100)
    add_options(comp)
    comp.set_defaults(func=run)


def run_report(
    args: argparse.Namespace,
    problems: Mapping[str, Any],
    methods: Sequence[str],
    out: Path,
    num_particles: int,
    num_steps: int,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[int, bool]:
    """Run :func:`~posterior.diagnostics.report.compare` (``options``: per-method keyword options),
    write its folder if any method ran, and report refusals. Returns ``(exit status, written)``;
    under torchrun rank 0 writes."""
    from posterior.diagnostics.report import compare, write_report

    report = compare(
        problems,
        methods,
        num_particles=num_particles,
        num_steps=num_steps,
        seed=args.seed,
        progress=not args.quiet,
        options=options,
        distributed=getattr(args, "distributed", False),
    )
    ran = any("error" not in r for r in report.rows) and is_main_process()
    if ran:
        write_report(report, problems, out)
        print_rows(args, report.rows)
    refused = report_refusals(report.rows)
    return (2 if refused else 0), ran


def run(args: argparse.Namespace) -> int:
    methods = resolve_methods(args.method)
    options = method_options(args.option, methods)
    specs = list(dict.fromkeys(args.problem or ["gmm-demo"]))
    problems = {
        s: make_problem(s, args.num_problems, args.seed, args.device, prior=args.prior, noise=args.noise)
        for s in specs
    }
    out = check_out(args.out or Path("out/compare"), args.overwrite)
    for problem in problems.values():
        check_memory(problem, args.particles)
    status, written = run_report(args, problems, methods, out, args.particles, args.steps, options)
    if written:
        print(f"report written to {out / 'report.md'}")
    return status


def print_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """One progress line per method that ran (``--quiet`` silences them; refusals are separate)."""
    if args.quiet:
        return
    for r in rows:
        if "error" in r:
            continue
        parts: list[str] = []
        if "sw" in r:
            parts.append(f"SW {r['sw']:.3f} (floor {r['sw_floor']:.3f})")
        if "coverage90" in r:
            parts.append(f"cov90 {r['coverage90']:.2f}")
        if "log_evidence_error" in r:
            parts.append(f"|logZ err| {r['log_evidence_error']:.3f}")
        if "psnr" in r:
            parts.append(f"PSNR {r['psnr']:.1f} dB")
        parts.append(f"{r['wall_time']:.2f}s")
        print(f"  {r['problem']} / {r['method']}: " + ", ".join(parts), file=sys.stderr)
