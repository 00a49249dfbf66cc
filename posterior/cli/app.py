"""The parser of the ``posterior`` command and its entry point."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from posterior.cli import calibrate, compare, demo, methods, sample
from posterior.cli._common import Parser, UsageError, check_device, first_line
from posterior.distributed.launch import init_from_env, is_main_process

__all__ = ["build_parser", "main"]

_COMMANDS = (demo, compare, calibrate, sample, methods)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``error`` raises :class:`UsageError` instead of exiting)."""
    parser = Parser(prog="posterior", description="Calibrated posterior sampling with diffusion priors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posterior`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            names = ", ".join(c.__name__.rsplit(".", 1)[1] for c in _COMMANDS)
            raise UsageError(f"missing command; use one of: {names} (see --help)")
        if hasattr(args, "device"):
            check_device(args.device)
        # under torchrun (WORLD_SIZE > 1): one process group, the samplers split over its ranks
        args.distributed = init_from_env(getattr(args, "device", "cpu"))
        if not is_main_process():
            args.quiet = True
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
    except (FloatingPointError, RuntimeError, ValueError, TypeError, OSError, ImportError) as err:
        print(f"posterior: {type(err).__name__}: {first_line(err)}", file=sys.stderr)
        return 1
