"""What every command shares: the usage error, the argument types, the device check, messages."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "DEMO_METHODS",
    "UsageError",
    "add_common",
    "add_options",
    "add_overwrite",
    "add_sampling",
    "available_memory",
    "check_device",
    "check_memory",
    "check_out",
    "first_line",
    "method_options",
    "nonneg_float",
    "particle_bytes",
    "positive_int",
    "refusals",
    "report_refusals",
    "resolve_methods",
    "say",
]

#: The exact samplers and the approximate baseline the demo shows, when registered.
DEMO_METHODS = ("smc", "tds", "mcgdiff", "dps")


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose ``error`` raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def add_common(parser: argparse.ArgumentParser, command: str) -> None:
    """``--out``, ``--seed``, ``--quiet``, ``--device``."""
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: out/{command})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, only the final line")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: allow writing into an existing, non-empty ``--out``."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into --out even if it exists and holds files (default: refuse)",
    )


def check_out(out: Path, overwrite: bool, beside: bool = False) -> Path:
    """``out`` if the command may write there: not an existing file, not a folder holding files
    unless ``overwrite``, and a folder that can be created and written (with ``beside``, also a
    temporary folder next to it); a :class:`UsageError` otherwise, before any work is done."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise UsageError(f"--out {str(out)!r} is not empty; pass --overwrite to write into it")
    for folder in {_nearest(out), *([_nearest(out.parent)] if beside else [])}:
        if not folder.is_dir():
            raise UsageError(f"--out {str(out)!r} cannot be created: {str(folder)!r} is not a folder")
        try:  # a real write: permissions, read-only or virtual file systems alike
            tempfile.TemporaryDirectory(dir=folder).cleanup()
        except OSError as err:
            raise UsageError(
                f"--out {str(out)!r} cannot be written ({err.strerror} in {str(folder)!r})"
            ) from None
    return out


def _nearest(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


#: A particle sampler holds at least this many copies of its particles at a time (positions,
#: proposals, the denoiser's ``eps`` and ``x_0``, gradients, resampled copies) ...
_COPIES = 8
#: ... and per particle these bytes of scalars (weights, log-likelihoods, ancestors, ESS terms).
_SCALARS = 256


def particle_bytes(event_numel: int, itemsize: int) -> int:
    """A lower bound of the memory one particle takes during a run: measured peaks are above it
    (``tds`` on ``gmm_benchmark``, float32: 1271 bytes per particle at ``d = 2`` against 320 here,
    1895 at ``d = 16`` against 768)."""
    return event_numel * itemsize * _COPIES + _SCALARS


def available_memory(device: Any) -> int | None:
    """Free memory in bytes on ``device`` (``MemAvailable`` for the CPU, the CUDA allocator's
    free memory for a GPU), or ``None`` where unknown."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(problem: Any, num_particles: int, rows: int | None = None) -> None:
    """A :class:`UsageError` if ``num_particles`` particles for each of ``rows`` problems
    (default: the problem's batch) surely exceed the memory free on the prior's device."""
    import math

    import torch

    prior = problem.prior
    rows = problem.batch_size if rows is None else rows
    d = math.prod(prior.event_shape)
    need = rows * num_particles * particle_bytes(d, torch.finfo(prior.dtype).bits // 8)
    free = available_memory(prior.device)
    if free is not None and need > free:
        raise UsageError(
            f"--particles {num_particles}: {rows} problem(s) x {num_particles:,} particles of {d} "
            f"coordinates need at least {need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB are "
            f"available on {prior.device}; use fewer --particles"
        )


def add_sampling(parser: argparse.ArgumentParser, particles: int, steps: int) -> None:
    """``--particles`` and ``--steps`` with their defaults."""
    parser.add_argument(
        "--particles", type=positive_int, default=particles, help=f"particles / draws (default {particles})"
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=steps,
        help=f"diffusion steps, or iterations for the MCMC kernels (default {steps})",
    )


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--option METHOD:KEY=VALUE`` (repeatable): a method's keyword option."""
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE",
        help="a method's option, VALUE as JSON or a plain string (repeatable), e.g. tds:runs=32 "
        "or tds:prior_var=covariance; `posterior methods NAME` lists a method's options and defaults",
    )


_PYTHON_LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}


def method_options(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{method: {key: value}}`` from ``--option METHOD:KEY=VALUE`` items, each checked against the
    selected methods and the method's own options (a :class:`UsageError` names the bad one)."""
    import posterior as ps

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        method, colon, pair = item.partition(":")
        key, equals, text = pair.partition("=")
        if not (colon and equals and method and key):
            raise UsageError(f"--option {item!r} must look like METHOD:KEY=VALUE, e.g. tds:runs=32")
        if method not in methods:
            raise UsageError(f"--option {item!r} names {method!r}, which is not among the methods run")
        names = ps.METHODS[method].option_names()
        if key not in names:
            raise UsageError(
                f"--option: {method!r} has no option {key!r}; its options are: {', '.join(names)} "
                f"(`posterior methods {method}` describes them)"
            )
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = _PYTHON_LITERALS.get(text, text)  # True / False / None as Python spells them
        out.setdefault(method, {})[key] = value
    return out


def check_device(name: Any) -> Any:
    """The ``torch.device`` for a name, or a :class:`UsageError` if it is unknown or unavailable."""
    from posterior._utils import check_device as check

    try:
        return check(name)
    except ValueError as err:
        raise UsageError(str(err)) from None


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def resolve_methods(names: Sequence[str] | None) -> list[str]:
    """The requested method names (default: the demo set), each registered, without repeats."""
    import posterior as ps

    if not names:
        names = [m for m in DEMO_METHODS if m in ps.METHODS]
        if not names:
            raise UsageError("no method is registered")
    unknown = [m for m in names if m not in ps.METHODS]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}; known methods: {', '.join(sorted(ps.METHODS))}")
    return list(dict.fromkeys(names))


def say(args: argparse.Namespace, text: str) -> None:
    """Progress text on stderr, silenced by ``--quiet``."""
    if not args.quiet:
        print(text, file=sys.stderr)


def refusals(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One message per distinct error among report rows, naming who refused: the same error from
    several methods (e.g. ``--steps`` beyond the schedule) is one message."""
    grouped: dict[str, list[str]] = {}
    for r in rows:
        if "error" in r:
            who = f"{r['problem']} / {r['method']}" if "problem" in r else r["method"]
            grouped.setdefault(r["error"], []).append(who)
    return [f"{', '.join(who)}: {error}" for error, who in grouped.items()]


def report_refusals(rows: Sequence[dict[str, Any]]) -> bool:
    """Print every method's refusal on stderr (``--quiet`` or not): one ``posterior: error:`` line
    per distinct error. Returns whether there was any."""
    messages = refusals(rows)
    for text in messages:
        print(f"posterior: error: {text}", file=sys.stderr)
    return bool(messages)
