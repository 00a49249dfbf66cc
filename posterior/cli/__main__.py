"""``python -m posterior.cli``: the ``posterior`` command."""

import sys

from posterior.cli.app import main

sys.exit(main())
