"""What the CLI tests share: run ``posterior`` in-process and capture its streams."""

from __future__ import annotations

from posterior.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``posterior argv``."""
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err
