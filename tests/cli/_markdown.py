"""A Markdown table check shared by the report tests."""

from __future__ import annotations

import re


def tables(markdown: str) -> list[list[list[str]]]:
    """The tables of ``markdown`` (consecutive lines starting with ``|``), as lists of rows of
    cells; ``\\|`` inside a cell is not a separator."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            current.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif current:
            found.append(current)
            current = []
    return found


def assert_tables_well_formed(markdown: str) -> None:
    """Every table has a header, a ``---`` rule and rows, all with the header's number of cells."""
    found = tables(markdown)
    assert found, "no table"
    for rows in found:
        widths = [len(r) for r in rows]
        assert len(rows) >= 2 and len(set(widths)) == 1, f"cells per line {widths} in\n{markdown}"
        assert all(set(c) <= {"-", ":"} and c for c in rows[1]), f"no rule under the header {rows[0]}"
