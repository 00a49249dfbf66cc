"""``posterior methods``: the registered methods, exact ones first, with their one-line summary."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    meth = sub.add_parser("methods", help="list the registered methods")
    meth.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import posterior as ps

    width = max((len(n) for n in ps.METHODS), default=0)
    for name in sorted(ps.METHODS, key=lambda n: (not ps.METHODS[n].exact, n)):
        cls = ps.METHODS[name]
        kind = "exact " if cls.exact else "approx"
        print(f"{name:<{width}}  {kind}  {cls.summary}")
    return 0
