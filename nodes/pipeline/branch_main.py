"""Entry point of a side branch's process (run as a script by ``branch_process.py``).

Arguments: the parent's package name for the pack, the pack's folder, the branch's name, then the modules to
import while the parent's director works. The pack is imported the way a Ray worker imports it
(``ray_worker.import_pack``, a standard-library-only module loaded here by its path).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

# Python put this script's folder first on sys.path; its module names must not shadow anything.
sys.path.pop(0)


def main(argv: list[str]) -> int:
    package, root, name, *warm_up = argv
    spec = importlib.util.spec_from_file_location("_cinereel_pack_import", Path(__file__).with_name("ray_worker.py"))
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    loader.import_pack(package, root)
    branch = importlib.import_module(f"{package}.nodes.pipeline.branch_process")
    return branch.child_main(name, warm_up)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
