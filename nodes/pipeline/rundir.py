"""A run's folder and its artifacts: atomic writes keyed by the inputs that made them.

Artifacts are written atomically (temporary file in the same folder, then
``os.replace``) and keyed by the inputs that made them. ``RunDir.produce``
skips the work when the artifact on disk was made from the same inputs, so a
re-run with the same run id resumes; when the inputs changed, the old file is
moved under ``superseded/`` rather than overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
MANIFEST = "manifest.json"
PRODUCER_VERSION = "1"  # bump to invalidate every cached artifact when a producer changes output


class RunIdError(ValueError):
    pass


def check_run_id(run_id: str) -> str:
    """A run id is one folder name: no path separators, no ``..``, nothing hidden."""
    if not isinstance(run_id, str) or not run_id.strip():
        raise RunIdError("run id is empty; leave it blank to derive one from the inputs")
    if "/" in run_id or "\\" in run_id or ".." in run_id or not RUN_ID_PATTERN.match(run_id):
        raise RunIdError(
            f"run id {run_id!r} is not a plain folder name: use letters, digits, '.', '_' or '-' "
            "(at most 80, no '..' and no path separators)"
        )
    return run_id


def slugify(text: str, max_len: int = 40) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = "-".join(words)[:max_len].strip("-")
    return slug or "reel"


def derive_run_id(sentence: str, **inputs: Any) -> str:
    """A deterministic run id: same sentence and settings, same folder, so re-running resumes."""
    return f"{slugify(sentence, 32)}-{input_key({'sentence': sentence, **inputs})[:10]}"


def input_key(inputs: Any) -> str:
    """A stable hash of JSON-able inputs (sorted keys, floats as repr)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=_json_default, ensure_ascii=False)
    return hashlib.sha256(f"{PRODUCER_VERSION}:{blob}".encode()).hexdigest()


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot key a {type(value).__name__}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary path beside ``path``, then rename it into place.

    If ``write`` raises (or the process is cancelled), no file appears at ``path``
    and the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name created with open(..., "x") (not mkstemp, whose 0600 mode would stick to the
    # artifact): the file gets the user's usual permissions. The suffix keeps the real extension
    # last so encoders that pick a format from it (ffmpeg, soundfile) still can.
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(6)}.partial{path.suffix}"
    with open(tmp, "xb"):
        pass
    try:
        write(tmp)
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise RuntimeError(f"writing {path.name} produced an empty file")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class RunDir:
    """One run's folder: ``<output root>/cinereel/<run id>/`` and its artifact manifest."""

    _locks: dict[str, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.run_id = check_run_id(self.root.name)
        with RunDir._locks_guard:
            self._lock = RunDir._locks.setdefault(str(self.root), threading.Lock())

    @classmethod
    def create(cls, output_root: str | os.PathLike[str], run_id: str) -> "RunDir":
        check_run_id(run_id)
        root = Path(output_root).resolve() / "cinereel" / run_id
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    def path(self, rel: str) -> Path:
        p = (self.root / rel).resolve()
        if self.root not in p.parents:
            raise ValueError(f"artifact path {rel!r} leaves the run directory")
        return p

    # -- manifest ---------------------------------------------------------
    def manifest(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError:
            # A manifest is only a cache of keys: a damaged one means "redo", never "crash".
            return {}

    def _record(self, rel: str, key: str) -> None:
        with self._lock:
            manifest = self.manifest()
            manifest[rel] = {"key": key, "time": time.time()}
            atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))

    def is_current(self, rel: str, key: str) -> bool:
        entry = self.manifest().get(rel)
        return bool(entry and entry.get("key") == key and self.path(rel).exists())

    def produce(self, rel: str, inputs: Any, make: Callable[[Path], None]) -> tuple[Path, bool]:
        """Make the artifact ``rel`` from ``inputs`` unless it is already on disk from the same inputs.

        ``make(tmp_path)`` writes the file. Returns ``(path, made)`` where ``made`` is False
        when the existing artifact was reused.
        """
        key = input_key(inputs)
        target = self.path(rel)
        if self.is_current(rel, key):
            return target, False
        if target.exists():
            self._supersede(rel)
        atomic_write(target, make)
        self._record(rel, key)
        return target, True

    def _supersede(self, rel: str) -> None:
        """Keep a file made from other inputs instead of overwriting it: work is never lost."""
        src = self.path(rel)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.path(f"superseded/{stamp}/{rel}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)

    def write_json(self, rel: str, data: Any) -> Path:
        return atomic_write_text(self.path(rel), json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.path(rel).read_text(encoding="utf-8"))

    def forget(self, rels: list[str]) -> None:
        """Drop manifest entries (files about to be removed by ``keep``): the manifest lists only what is on disk."""
        with self._lock:
            manifest = self.manifest()
            if any(rel in manifest for rel in rels):
                for rel in rels:
                    manifest.pop(rel, None)
                atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
