"""Entry point of a CineReel model worker process (run as a script by ``worker.py``).

It imports the pack by file path under a private name, connects back to the
parent, loads one model with the family's own loader and serves calls until
told to close. It never outlives its parent's interest: eviction ends it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

# Python put this script's folder first on sys.path; its module names must not shadow anything.
sys.path.pop(0)

ALIAS = "_cinereel_worker_pack"


def import_pack(root: Path):
    spec = importlib.util.spec_from_file_location(ALIAS, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[ALIAS] = module
    spec.loader.exec_module(module)
    return module


def public_attributes(model) -> dict:
    """What the parent's proxy offers: the model's public methods, and its plain public values."""
    methods, values = [], {}
    for name in dir(model):
        if name.startswith("_"):
            continue
        value = getattr(model, name, None)
        if callable(value):
            methods.append(name)
        elif value is None or isinstance(value, (str, int, float, bool)):
            values[name] = value
    return {"methods": methods, "values": values}


def serve(conn, residency, handles) -> None:
    model = None
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the parent went away
        kind = message[0]
        if kind == "close":
            return
        try:
            if kind == "load":
                model = residency.load_model(handles.ModelHandle.from_dict(message[1]))
                result = public_attributes(model)
            elif kind == "call":
                _, method, args, kwargs = message
                result = getattr(model, method)(*args, **kwargs)
            else:
                raise ValueError(f"unknown worker request {kind!r}")
            conn.send(("ok", result))
        except Exception as exc:  # noqa: BLE001 - sent to the parent with its traceback
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def main() -> None:
    root = Path(sys.argv[1])
    import_pack(root)
    importlib.import_module(f"{ALIAS}.model_loaders")
    conn = importlib.import_module(f"{ALIAS}.model_loaders.children").connect_to_parent(sys.stdin)
    residency = sys.modules[f"{ALIAS}.model_loaders.residency"]
    residency.load_worker_plugins()
    handles = sys.modules[f"{ALIAS}.model_loaders.handles"]
    try:
        serve(conn, residency, handles)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
