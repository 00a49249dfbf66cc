"""The ``posterior`` command: ``demo``, ``compare``, ``calibrate``, ``sample``, ``methods``.

One module per command (each with ``add_parser`` and ``run``), the named problems in
:mod:`~posterior.cli.problems`, the parsing of ``--operator`` in :mod:`~posterior.cli.operator_spec`.
Bad arguments (an unknown method, problem or operator, a non-positive count, a missing or
unreadable file, an unavailable device, a method that refuses the problem) print one line on
stderr and exit with status 2; a failure while sampling prints one line and exits with status 1.
Never a traceback.
"""

from posterior.cli._common import UsageError
from posterior.cli.app import build_parser, main
from posterior.cli.problems import PROBLEMS_HELP, make_problem

__all__ = ["PROBLEMS_HELP", "UsageError", "build_parser", "main", "make_problem"]
