"""``python -m agcl``: the ``agcl`` command (see :mod:`agcl.cli`)."""

from __future__ import annotations

import sys

from agcl.cli import main

if __name__ == "__main__":
    sys.exit(main())
