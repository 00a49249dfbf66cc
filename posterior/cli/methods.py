"""``posterior methods``: the registered methods, exact ones first, with their one-line summary;
``posterior methods NAME``: one method's options, their defaults and what each does."""

from __future__ import annotations

import argparse
import inspect
import re
import textwrap
from typing import Any

from posterior.cli._common import UsageError

__all__ = ["add_parser", "describe", "option_help", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    meth = sub.add_parser(
        "methods",
        help="list the registered methods, or one method's options (posterior methods NAME)",
        description="Without NAME: every registered method, exact ones first, with its summary. "
        "With NAME: that method's options (--option NAME:KEY=VALUE in compare and calibrate, "
        "keywords of ps.sample), their defaults and what each does.",
    )
    meth.add_argument("name", nargs="?", default=None, help="a method whose options to print")
    meth.set_defaults(func=run)


def option_help(cls: type) -> dict[str, str]:
    """``{option: its description}`` from the ``Options:`` (or ``Args:``) section of the class's
    docstring (or of its ``__init__``'s), one paragraph per option, whitespace collapsed."""
    found: dict[str, str] = {}
    for doc in (cls.__doc__, cls.__init__.__doc__):
        lines = inspect.cleandoc(doc or "").splitlines()
        current: str | None = None
        indent: int | None = None
        in_section = False
        for line in lines:
            stripped = line.strip()
            if stripped in ("Options:", "Args:"):
                in_section, current, indent = True, None, None
                continue
            if not in_section:
                continue
            if not stripped:
                current = None
                continue
            lead = len(line) - len(line.lstrip())
            if indent is None:
                indent = lead
            if lead < indent:  # the section ended
                in_section, current = False, None
                continue
            match = re.match(r"([A-Za-z_][A-Za-z0-9_]*(?:, [A-Za-z_][A-Za-z0-9_]*)*):\s*(.*)", stripped)
            if lead == indent and match:
                names = match.group(1).split(", ")
                for name in names:
                    found.setdefault(name, match.group(2))
                current = names[0] if found.get(names[0]) == match.group(2) else None
                continue
            if current is not None and lead > indent:
                found[current] = f"{found[current]} {stripped}".strip()
    return found


def describe(name: str, width: int = 100) -> str:
    """The text ``posterior methods NAME`` prints: the method's kind, summary and each option with
    its default and description."""
    import posterior as ps

    cls = ps.METHODS[name]
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    helps = option_help(cls)
    kind = "exact" if cls.exact else "approximate"
    lines = [f"{name} ({kind}): {cls.summary}", ""]
    if not params:
        lines.append("no options")
        return "\n".join(lines)
    lines.append(
        f"options (--option {name}:KEY=VALUE in compare / calibrate; ps.sample(problem, {name!r}, ..., "
        "KEY=VALUE) in Python):"
    )
    for p in params:
        default: Any = "(required)" if p.default is inspect.Parameter.empty else repr(p.default)
        lines.append(f"  {p.name} = {default}")
        text = helps.get(p.name)
        if text:
            lines += textwrap.wrap(text, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import posterior as ps

    if args.name is not None:
        if args.name not in ps.METHODS:
            raise UsageError(f"unknown method {args.name!r}; known methods: {', '.join(sorted(ps.METHODS))}")
        print(describe(args.name))
        return 0
    width = max((len(n) for n in ps.METHODS), default=0)
    for name in sorted(ps.METHODS, key=lambda n: (not ps.METHODS[n].exact, n)):
        cls = ps.METHODS[name]
        kind = "exact " if cls.exact else "approx"
        print(f"{name:<{width}}  {kind}  {cls.summary}")
    print("\n`posterior methods NAME` prints a method's options and their defaults.")
    return 0
