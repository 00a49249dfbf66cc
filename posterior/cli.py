"""The ``posterior`` command: ``demo``, ``compare``, ``calibrate``, ``methods``.

Bad arguments (an unknown method or problem, a non-positive count, an unreadable prior folder, an
unavailable device) print one line on stderr and exit with status 2; a failure while sampling
prints one line and exits with status 1. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["PROBLEMS_HELP", "build_parser", "main", "make_problem"]

#: The exact samplers and the approximate baseline the demo shows, when registered.
DEMO_METHODS = ("smc", "tds", "mcgdiff", "dps")
#: The demo's image part: the shipped MNIST prior, a half-hidden held-out digit (noise 0.1).
IMAGE_DEMO_METHODS = ("tds", "mcgdiff", "dps")
IMAGE_DEMO_PARTICLES, IMAGE_DEMO_STEPS = 16, 25

PROBLEMS_HELP = (
    "gmm-demo (2-D, 25-component mixture, one noisy linear measurement); "
    "gmm:DIM:OBS (the MCGdiff mixture benchmark, e.g. gmm:8:2); "
    "mnist-inpaint, mnist-sr4, mnist-blur, mnist-denoise (held-out digits; --prior picks the model)"
)


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``error`` raises :class:`UsageError` instead of exiting)."""
    common = _Parser(add_help=False)
    common.add_argument("--out", type=Path, default=None, help="output folder (default: out/<command>)")
    common.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    common.add_argument("--quiet", action="store_true", help="no progress bars, only the final line")
    common.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")

    parser = _Parser(prog="posterior", description="Calibrated posterior sampling with diffusion priors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def sampling(p: argparse.ArgumentParser, particles: int, steps: int) -> None:
        p.add_argument(
            "--particles",
            type=_positive_int,
            default=particles,
            help=f"particles / draws (default {particles})",
        )
        p.add_argument(
            "--steps", type=_positive_int, default=steps, help=f"diffusion steps (default {steps})"
        )

    demo = sub.add_parser(
        "demo", parents=[common], help="the main demo: exact samplers vs DPS on a 2-D problem"
    )
    sampling(demo, 1000, 100)
    demo.add_argument(
        "--no-image",
        action="store_true",
        help=f"skip the image part (the shipped MNIST prior, {IMAGE_DEMO_PARTICLES} particles, "
        f"{IMAGE_DEMO_STEPS} steps, written to OUT/mnist)",
    )
    demo.set_defaults(func=cmd_demo)

    comp = sub.add_parser("compare", parents=[common], help="run methods on problems and write a report")
    comp.add_argument(
        "--method", action="append", default=None, help="a method (repeatable; default: demo set)"
    )
    comp.add_argument(
        "--problem", action="append", default=None, help=f"a problem (repeatable): {PROBLEMS_HELP}"
    )
    comp.add_argument(
        "--num-problems", type=_positive_int, default=1, help="problems per --problem (default 1)"
    )
    comp.add_argument("--noise", type=_nonneg_float, default=None, help="noise std for image problems (0.1)")
    comp.add_argument("--prior", default="mnist", help="image prior: a shipped name or a diffusers folder")
    sampling(comp, 256, 100)
    comp.set_defaults(func=cmd_compare)

    cal = sub.add_parser("calibrate", parents=[common], help="simulation-based calibration and coverage")
    cal.add_argument(
        "--method", action="append", default=None, help="a method (repeatable; default: demo set)"
    )
    cal.add_argument("--problem", default="gmm:2:1", help="where x ~ prior, y ~ p(y|x) come from (gmm:2:1)")
    cal.add_argument("--num-problems", type=_positive_int, default=200, help="simulated problems B (200)")
    cal.add_argument("--draws", type=_positive_int, default=19, help="posterior draws ranked against x (19)")
    cal.add_argument(
        "--mode",
        choices=("auto", "runs", "draws"),
        default="auto",
        help="draws from independent runs or one run",
    )
    cal.add_argument("--noise", type=_nonneg_float, default=None, help="noise std for image problems (0.1)")
    cal.add_argument("--prior", default="mnist", help="image prior: a shipped name or a diffusers folder")
    sampling(cal, 64, 50)
    cal.set_defaults(func=cmd_calibrate)

    meth = sub.add_parser("methods", help="list the registered methods")
    meth.set_defaults(func=cmd_methods)
    return parser


# --------------------------------------------------------------------------- problems
def _device(name: str) -> Any:
    from posterior._utils import check_device

    try:
        return check_device(name)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _gmm_on(problem: Any, device: Any) -> Any:
    """The same Gaussian-mixture problem with its tensors on ``device``."""
    import posterior as ps

    if device.type == "cpu":
        return problem
    pr = problem.prior
    prior = ps.GaussianMixturePrior(
        pr.weights.to(device), pr.means.to(device), pr.distribution.covs.to(device), schedule=pr.schedule
    )
    A = problem.operator.matrix().to(device)
    out = ps.InverseProblem(prior, ps.operators.Matrix(A), problem.y.to(device), problem.sigma.to(device))
    out.truth = None if problem.truth is None else problem.truth.to(device)
    return out


def _image_prior(spec: str, device: Any) -> Any:
    import posterior as ps

    path = Path(spec)
    if path.exists() or os.sep in spec or spec.startswith("."):
        if not path.is_dir():
            raise UsageError(f"prior folder {spec!r} does not exist or is not a folder")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UsageError(f"prior folder {spec!r} is not readable")
        if not ((path / "unet").is_dir() or (path / "config.json").is_file()):  # before importing diffusers
            raise UsageError(
                f"cannot load a diffusers prior from {spec!r}: no unet/ subfolder and no config.json"
            )
        try:
            return ps.DiffusersPrior.from_pretrained(path, device=device)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            raise UsageError(f"cannot load a diffusers prior from {spec!r}: {_first_line(err)}") from None
    try:
        return ps.load_prior(spec, device=device)
    except ValueError as err:
        raise UsageError(f"{_first_line(err)} (or pass a diffusers folder)") from None


def make_problem(
    spec: str,
    num_problems: int = 1,
    seed: int = 0,
    device: str = "cpu",
    prior: str = "mnist",
    noise: float | None = None,
) -> Any:
    """Build a named problem (see :data:`PROBLEMS_HELP`); ``num_problems > 1`` simulates a batch
    with known truths from the same prior, operator and noise level."""
    import torch

    import posterior as ps

    dev = _device(device) if isinstance(device, str) else device
    if spec == "gmm-demo" or spec.startswith("gmm:"):
        if spec == "gmm-demo":
            base = ps.problems.gmm_demo(seed)
        else:
            parts = spec.split(":")
            try:
                dim, obs = int(parts[1]), int(parts[2])
                if len(parts) != 3:
                    raise ValueError
            except (ValueError, IndexError):
                raise UsageError(f"bad problem {spec!r}: expected gmm:DIM:OBS, e.g. gmm:8:2") from None
            try:
                base = ps.problems.gmm_benchmark(dim, obs, seed)
            except ValueError as err:
                raise UsageError(f"bad problem {spec!r}: {_first_line(err)}") from None
        if num_problems > 1:
            base = ps.problems.simulate(base.prior, base.operator, base.noise_std, num_problems, seed=seed)
        return _gmm_on(base, dev)
    image_ops = {"inpaint", "sr4", "blur", "denoise"}
    kind = spec.removeprefix("mnist-")
    if not spec.startswith("mnist-") or kind not in image_ops:
        raise UsageError(f"unknown problem {spec!r}; known problems: {PROBLEMS_HELP}")
    model = _image_prior(prior, dev)
    shape = tuple(model.event_shape)
    ops = ps.operators
    if kind == "inpaint":
        op = ops.Inpainting(ops.half_mask(shape, "bottom", device=dev))
    elif kind == "sr4":
        op = ops.SuperResolution(4)
    elif kind == "blur":
        op = ops.Blur(ops.gaussian_kernel(1.5, device=dev, dtype=model.dtype))
    else:
        op = ops.Identity()
    noise = 0.1 if noise is None else noise
    if shape == (1, 28, 28):
        truth, _ = ps.priors.shipped.mnist_heldout(slice(0, num_problems), device=dev, dtype=model.dtype)
        if truth.shape[0] < num_problems:
            raise UsageError(f"only {truth.shape[0]} held-out digits; ask for fewer problems")
    else:  # another model: truths drawn from the model itself
        truth = model.sample(num_problems, torch.Generator(dev).manual_seed(seed), num_steps=50)
    problem = ps.problems.simulate(model, op, noise, num_problems, seed=seed, truth=truth)
    if num_problems == 1:  # a single problem, unbatched
        single = ps.InverseProblem(model, problem.operator, problem.y_batch[0], noise)
        single.truth = truth[0]
        return single
    return problem


# --------------------------------------------------------------------------- commands
def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _methods(names: Sequence[str] | None) -> list[str]:
    import posterior as ps

    if not names:
        names = [m for m in DEMO_METHODS if m in ps.METHODS]
        if not names:
            raise UsageError("no method is registered")
    unknown = [m for m in names if m not in ps.METHODS]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}; known methods: {', '.join(sorted(ps.METHODS))}")
    return list(dict.fromkeys(names))


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def cmd_methods(args: argparse.Namespace) -> int:
    import posterior as ps

    width = max((len(n) for n in ps.METHODS), default=0)
    for name in sorted(ps.METHODS, key=lambda n: (not ps.METHODS[n].exact, n)):
        cls = ps.METHODS[name]
        kind = "exact " if cls.exact else "approx"
        print(f"{name:<{width}}  {kind}  {cls.summary}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import posterior as ps
    from posterior.diagnostics.report import compare

    out = args.out or Path("out/demo")
    device = _device(args.device)
    methods = [m for m in DEMO_METHODS if m in ps.METHODS]
    problem = _gmm_on(ps.problems.gmm_demo(), device)
    _say(args, f"posterior demo: {', '.join(methods) or 'no method registered yet'} on {problem}")
    report = compare(
        {"demo": problem},
        methods,
        num_particles=args.particles,
        num_steps=args.steps,
        seed=args.seed,
        out=out,
        progress=not args.quiet,
    )
    _print_rows(args, report.rows)
    print(f"report written to {out / 'report.md'} (figure: {out / 'demo_samples.png'})")
    if args.no_image:
        return 0
    image = make_problem("mnist-inpaint", 1, args.seed, device, noise=0.1)
    _say(args, f"posterior demo, image part: {', '.join(IMAGE_DEMO_METHODS)} on {image}")
    report = compare(
        {"mnist-inpaint": image},
        [m for m in IMAGE_DEMO_METHODS if m in ps.METHODS],
        num_particles=IMAGE_DEMO_PARTICLES,
        num_steps=IMAGE_DEMO_STEPS,
        seed=args.seed,
        out=out / "mnist",
        progress=not args.quiet,
    )
    _print_rows(args, report.rows)
    print(f"image report written to {out / 'mnist' / 'report.md'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from posterior.diagnostics.report import compare

    methods = _methods(args.method)
    specs = list(dict.fromkeys(args.problem or ["gmm-demo"]))
    problems = {
        s: make_problem(s, args.num_problems, args.seed, args.device, prior=args.prior, noise=args.noise)
        for s in specs
    }
    out = args.out or Path("out/compare")
    report = compare(
        problems,
        methods,
        num_particles=args.particles,
        num_steps=args.steps,
        seed=args.seed,
        out=out,
        progress=not args.quiet,
    )
    _print_rows(args, report.rows)
    print(f"report written to {out / 'report.md'}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import posterior as ps
    from posterior.diagnostics import plots
    from posterior.diagnostics.calibration import (
        coverage,
        coverage_curve_levels,
        simulation_based_calibration,
    )

    methods = _methods(args.method)
    base = make_problem(args.problem, 1, args.seed, args.device, prior=args.prior, noise=args.noise)
    out = args.out or Path("out/calibrate")
    mode = None if args.mode == "auto" else args.mode
    results, rows = {}, []
    for m in methods:
        _say(args, f"calibrate: {m} on {args.num_problems} problems x {args.draws} draws")
        m_mode = mode or ("runs" if ps.METHODS[m].exact else "draws")
        # one run must hold the draws in mode "draws"
        particles = args.particles if m_mode == "runs" else max(args.particles, args.draws)
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
            )
        except ValueError as err:
            rows.append({"method": m, "error": _first_line(err)})
            continue
        results[m] = cal
        rows.append({"method": m, **cal.to_dict()})
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if results:
        tests = {m: c.sbc for m, c in results.items()}
        figures.append(plots.save_figure(plots.plot_rank_histograms(tests), out / "ranks.png"))
        levels = coverage_curve_levels(
            max(1, args.draws // 2)
        )  # up to (L - 1) / (L + 1), see credible_interval
        curves = {m: coverage(c.draws, c.truth, levels) for m, c in results.items()}
        figures.append(plots.save_figure(plots.plot_coverage(curves), out / "coverage.png"))
    settings = {
        k: getattr(args, k)
        for k in ("problem", "num_problems", "draws", "particles", "steps", "seed", "mode")
    }
    (out / "calibration.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    (out / "calibration.md").write_text(_calibration_markdown(settings, rows, figures))
    for r in rows:
        if "error" in r:
            _say(args, f"  {r['method']}: error: {r['error']}")
        else:
            sbc, cov = r["sbc"], r["coverage"]
            c90 = dict(zip(cov["levels"], cov["coverage"], strict=True)).get(0.9)
            c90_text = "" if c90 is None else f", 90% coverage {c90:.3f}"
            _say(args, f"  {r['method']}: SBC p = {sbc['p_value']:.3g}{c90_text}, {r['wall_time']:.1f}s")
    print(f"calibration written to {out / 'calibration.md'}")
    return 0


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


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if args.quiet:
        return
    for r in rows:
        if "error" in r:
            print(f"  {r['problem']} / {r['method']}: error: {r['error']}", file=sys.stderr)
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


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posterior`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("missing command; use one of: demo, compare, calibrate, methods (see --help)")
        if hasattr(args, "device"):
            _device(args.device)
        if getattr(args, "quiet", False):
            os.environ.setdefault("TQDM_DISABLE", "1")
        func: Callable[[argparse.Namespace], int] = args.func
        start = time.perf_counter()
        status = func(args)
        if not getattr(args, "quiet", True):
            print(f"done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
        return status
    except UsageError as err:
        print(f"posterior: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posterior: interrupted", file=sys.stderr)
        return 130
    except (FloatingPointError, RuntimeError, ValueError, TypeError, OSError) as err:
        print(f"posterior: {type(err).__name__}: {_first_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
