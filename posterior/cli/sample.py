"""``posterior sample``: your own observation in, posterior draws and their uncertainty out.

Every input is checked before any sampling (the files, the operator, the sizes against the prior)
and a method that refuses the problem is reported before anything is written: bad input gives one
line on stderr, exit status 2, and leaves ``--out`` untouched. The outputs are written into a
temporary folder beside ``--out`` and moved in only once all of them exist.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from posterior.cli._common import (
    UsageError,
    add_common,
    add_overwrite,
    add_sampling,
    check_device,
    check_memory,
    check_out,
    first_line,
    nonneg_float,
    positive_int,
    resolve_methods,
    say,
)
from posterior.cli.operator_spec import (
    OPERATORS,
    build_operator,
    load_observation,
    parse_operator,
    readable_file,
)
from posterior.cli.problems import image_prior
from posterior.schedule import DEFAULT_TIME_GRID, TIME_GRIDS

__all__ = ["DEFAULT_METHOD", "JOINT_METHOD", "UNKNOWN_NOISE", "add_parser", "noise_level", "run"]

#: The method for a problem with unknown parameters (``--noise ?``, ``blur:gaussian:?``).
JOINT_METHOD = "pmmh"
#: ``--noise ?``: the noise level's prior, ``LogNormal(log m, s)``, as ``(m, s)``.
UNKNOWN_NOISE = (0.1, 1.0)


def noise_level(text: str) -> float | str:
    """``--noise``: a finite number >= 0, or ``?`` (unknown)."""
    return "?" if text.strip() == "?" else nonneg_float(text)


#: The method the README recommends for images: its defaults (independent runs of a few particles,
#: the covariance twist) are the measured configuration for coverage on MNIST. It needs a positive
#: noise level; ``--method mcgdiff`` (or ``smc``) also takes ``--noise 0``.
DEFAULT_METHOD = "tds"


def add_parser(sub: argparse._SubParsersAction) -> None:
    width = max(map(len, OPERATORS))
    ops = "\n".join(f"  {k:<{width}}  {v}" for k, v in OPERATORS.items())
    samp = sub.add_parser(
        "sample",
        help="posterior draws for your own observation (an image or a .npy array)",
        description="Sample the posterior of x given your observation y = A(x) + noise and write\n"
        "mean.png, std.png, samples.png, samples.npy ([N, C, H, W]), posterior.nc (ArviZ),\n"
        "result.safetensors (ps.Result.load) and report.md into --out.",
        epilog=f"operators (--operator):\n{ops}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    samp.add_argument("--prior", default="mnist", help="a shipped prior (mnist) or a diffusers folder")
    samp.add_argument(
        "--observation",
        required=True,
        help="a PNG/JPEG (grayscale or RGB, mapped to [-1, 1]) or a .npy array in the operator's "
        "output space",
    )
    samp.add_argument("--operator", required=True, help="the forward operator A (one of the operators below)")
    samp.add_argument(
        "--noise",
        type=noise_level,
        required=True,
        help="noise standard deviation (in [-1, 1] units), or ? for an unknown one (prior "
        f"LogNormal(log {UNKNOWN_NOISE[0]:g}, {UNKNOWN_NOISE[1]:g})) sampled with the image",
    )
    samp.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help=f"a method (default {DEFAULT_METHOD}; {JOINT_METHOD} in its place where --noise or "
        "--operator has a ?, as tds needs every parameter known; `posterior methods` lists them, "
        "`posterior methods NAME` gives a method's options)",
    )
    samp.add_argument(
        "--resize",
        action="store_true",
        help="resize an image observation (and an image mask) of another size to the size the "
        "operator observes (bicubic); without it a size mismatch is an error",
    )
    samp.add_argument(
        "--time-grid",
        default=DEFAULT_TIME_GRID,
        choices=list(TIME_GRIDS),
        help=f"the diffusion times the method walks (default {DEFAULT_TIME_GRID}: chosen from the prior's "
        "noise levels)",
    )
    samp.add_argument(
        "--runs",
        type=positive_int,
        default=None,
        help="split --particles into this many independent runs of a particle sampler, merged as "
        "the method merges them (tds, smc, mcgdiff: by their evidence, the exact merge; default: the "
        "method's own, tds splits into at most 32 runs of 4 or more particles)",
    )
    add_common(samp, "sample")
    add_overwrite(samp)
    add_sampling(samp, 64, 50)
    samp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import posterior as ps
    from posterior.cli.sample_output import write_outputs

    # everything that needs no model first: the cheapest checks fail fastest
    spec = parse_operator(args.operator)
    obs_path = readable_file(args.observation, "--observation")
    unknown = args.noise == "?" or spec.unknown
    (method,) = resolve_methods([JOINT_METHOD if unknown and args.method == DEFAULT_METHOD else args.method])
    if args.runs is not None and args.particles % args.runs:
        raise UsageError(f"--runs {args.runs} must divide --particles {args.particles}")
    out = check_out(args.out or Path("out/sample"), args.overwrite, beside=True)
    prior = image_prior(args.prior, check_device(args.device))
    notes: list[str] = []  # what was done to the inputs, for the report
    operator = build_operator(spec, prior, resize=args.resize, notes=notes)
    y = load_observation(obs_path, spec, operator, prior, resize=args.resize, notes=notes)
    for text in notes:
        print(f"posterior: note: {text}", file=sys.stderr)
    try:
        problem = ps.InverseProblem(prior, operator, y, _noise(args.noise))
    except (ValueError, TypeError) as err:
        raise UsageError(first_line(err)) from None
    check_memory(problem, args.particles)
    runs = {} if args.runs is None else {"runs": args.runs}
    split = f" in {args.runs} runs" if args.runs not in (None, 1) else ""
    say(
        args,
        f"posterior sample: {method} on {problem.operator!r}, {args.particles} particles{split}, "
        f"{args.steps} steps",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ps.ParticleDegeneracyWarning)
        try:
            result = ps.sample(
                problem,
                method,
                num_particles=args.particles,
                num_steps=args.steps,
                seed=args.seed,
                progress=not args.quiet,
                time_grid=args.time_grid,
                **runs,
            )
        except (ValueError, TypeError, NotImplementedError) as err:
            why = _without_option_hints(method, first_line(err))
            raise UsageError(f"method {method!r} refuses this problem: {why}") from None
    degenerate = [str(w.message) for w in caught if issubclass(w.category, ps.ParticleDegeneracyWarning)]
    for w in caught:  # other warnings as usual
        if not issubclass(w.category, ps.ParticleDegeneracyWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    for text in degenerate:  # a warning, not progress: --quiet keeps it
        print(f"posterior: warning: {text}", file=sys.stderr)
    settings = {
        "prior": args.prior,
        "observation": str(obs_path),
        "operator": args.operator,
        "noise": args.noise,
        "method": method,
        "particles": args.particles,
        "runs": args.runs,
        "steps": args.steps,
        "seed": args.seed,
        "out": str(out),
        "resize": args.resize,
        "overwrite": args.overwrite,
    }
    write_outputs(out, problem, result, settings, degenerate, notes)
    print(f"posterior samples written to {out} (report: {out / 'report.md'})", file=sys.stdout)
    return 0


def _noise(value: float | str) -> object:
    """The noise of the problem: a level, or a Gaussian of unknown level (``--noise ?``)."""
    if value != "?":
        return value
    import math

    import pyro.distributions as dist

    import posterior as ps

    prior = dist.LogNormal(math.log(UNKNOWN_NOISE[0]), UNKNOWN_NOISE[1])
    return ps.noise.Gaussian(ps.Unknown(prior, name="noise_std"))


def _without_option_hints(method: str, message: str) -> str:
    """``message`` without its clauses (after the first) that suggest one of the method's options,
    which ``posterior sample`` cannot pass (``--runs`` aside), and with what it can do instead."""
    import re

    import posterior as ps

    names = [n for n in ps.METHODS[method].option_names() if n != "runs"]
    first, *rest = message.split("; ")
    kept = [c for c in rest if not any(re.search(rf"\b{n}\b", c) for n in names)]
    if len(kept) == len(rest):
        return message
    return "; ".join([first, *kept, "choose another --method"])
