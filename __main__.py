"""``python -m cinereel``: the headless pipeline (see nodes/pipeline/cli.py)."""

import sys

from .nodes.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
