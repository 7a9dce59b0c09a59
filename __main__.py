"""``python -m cinereel``: the headless pipeline (see nodes/cli.py)."""

import sys

from .nodes.cli import main

if __name__ == "__main__":
    sys.exit(main())
