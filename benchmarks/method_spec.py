"""A method with options on a benchmark's command line: ``NAME[:KEY=JSON[;KEY=JSON...]]``.

``tds`` or ``tds:prior_var="covariance";twist_scale=0.5`` (a value that is not JSON is taken as a
string). The whole spec labels the method's rows.
"""

from __future__ import annotations

import json
from typing import Any


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of a method spec."""
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(";")):
        key, value = item.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options
