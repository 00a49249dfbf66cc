"""A method with options on a benchmark's command line: ``NAME[:KEY=JSON[;KEY=JSON...]]``.

``tds`` or ``tds:prior_var="covariance";twist_scale=0.5`` (a value that is not JSON is taken as a
string). The whole spec labels the method's rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of a method spec."""
    name, _, rest = spec.partition(":")
    return name, parse_options(filter(None, rest.split(";")))


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """``{key: value}`` of ``KEY=JSON`` items (a value that is not JSON is taken as a string)."""
    options: dict[str, Any] = {}
    for item in items:
        key, value = item.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
