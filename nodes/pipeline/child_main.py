"""Entry point of the pack's child processes, run as a script: a side branch's process (``branch_process.py``)
or one round of a benchmark, a command of its own (``benchmark.py``).

Arguments: the parent's package name for the pack, the pack's folder, then either ``branch NAME [MODULE ...]``
(the branch's name and the modules to import while the parent's director works) or ``cli ARG ...`` (the
command line). The pack is imported the way a Ray worker imports it (``ray_worker.import_pack``, a
standard-library-only module loaded here by its path).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

# Python put this script's folder first on sys.path; its module names must not shadow anything.
sys.path.pop(0)


def main(argv: list[str]) -> int:
    package, root, kind, *rest = argv
    spec = importlib.util.spec_from_file_location("_cinereel_pack_import", Path(__file__).with_name("ray_worker.py"))
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    loader.import_pack(package, root)
    if kind == "cli":
        return importlib.import_module(f"{package}.nodes.pipeline.cli").main(rest)
    name, *warm_up = rest
    return importlib.import_module(f"{package}.nodes.pipeline.branch_process").child_main(name, warm_up)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
