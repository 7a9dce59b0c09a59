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
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
MANIFEST_LOCK_FILE = ".manifest.lock"  # guards manifest and superseded-log updates across processes
SUPERSEDED_LOG = "superseded.json"
PARTIAL = re.compile(r"^\..+\.[0-9a-f]{12}\.partial(\..*)?$")  # atomic_write's temporary names
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


def atomic_write(path: Path, write: Callable[[Path], None],
                 before_rename: Callable[[], None] | None = None) -> Path:
    """Run ``write(tmp)`` on a temporary path beside ``path``, then rename it into place.

    If ``write`` raises (or the process is cancelled), no file appears at ``path``
    and the temporary file is removed. ``before_rename`` runs once the file is written, just before it
    appears (``RunDir.produce`` records its key there).
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
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class RunInUse(RuntimeError):
    """Another process is working on this run folder."""


# -- the run lock ----------------------------------------------------------------------
# One process at a time works on a run folder. The lock is the OS's (flock, or a byte-range lock on
# Windows) on <run>/.lock, so it is released when its process dies, by kill -9 too: a stale lock is
# simply free. Within a process it is re-entrant (the CLI holds it for the whole reel; each stage takes
# it again), counted per folder.

_held: dict[str, tuple[Any, int]] = {}
_held_guard = threading.Lock()
_policy = {"wait": False, "holder": "ComfyUI"}


def set_lock_policy(wait: bool, holder: str) -> None:
    """How this process takes a busy run: wait for it (CLI ``--wait``) or refuse at once; and its name."""
    _policy.update(wait=wait, holder=holder)


def _try_lock(handle: Any) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def lock_holder(root: Path) -> str:
    """Who holds ``root``'s lock, as its holder wrote it (``process 123 (cinereel CLI) since 10:02:03``)."""
    try:
        return (root / LOCK_FILE).read_text(encoding="utf-8").strip() or "another process"
    except OSError:
        return "another process"


def is_locked(root: Path) -> bool:
    """Whether a live process holds ``root``'s run lock (this one included)."""
    if str(root) in _held:
        return True
    if not (root / LOCK_FILE).exists():
        return False
    with open(root / LOCK_FILE, "a+", encoding="utf-8") as handle:
        return not _try_lock(handle)  # closing the file releases a lock taken here


@contextmanager
def run_lock(root: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``root``'s run lock; the first hold in this process also clears what a dead one left half-written."""
    key = str(root)
    with _held_guard:
        if key in _held:
            handle, count = _held[key]
            _held[key] = (handle, count + 1)
        else:
            handle = _acquire(root, on_wait)
            # Cleared before the hold is known: a thread that joined it meanwhile lost the file it was writing.
            try:
                remove_partials(root)
            except BaseException:
                handle.close()
                raise
            _held[key] = (handle, 1)
    try:
        yield
    finally:
        with _held_guard:
            handle, count = _held[key]
            if count > 1:
                _held[key] = (handle, count - 1)
            else:
                del _held[key]
                handle.close()  # releases the OS lock


@contextmanager
def parents_run_lock(root: Path) -> Iterator[None]:
    """Work on ``root`` under the run lock this process's parent holds (a side branch's process): the lock is
    not taken (the parent has it) and nothing is cleared (the parent's writes in flight own their files)."""
    key = str(root)
    with _held_guard:
        if key in _held:
            raise RuntimeError(f"this process already holds run {root.name}'s lock")
        _held[key] = (None, 1)
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """The OS's exclusive lock on ``path``, waiting for it: short read-modify-writes of shared files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        while not _try_lock(handle):
            time.sleep(0.005)
        yield  # closing the file releases the lock


def _acquire(root: Path, on_wait: Callable[[str], None] | None) -> Any:
    while True:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held until released
        if not _try_lock(handle):
            holder = lock_holder(root)
            if not _policy["wait"]:
                handle.close()
                raise RunInUse(f"run {root.name} is in use by {holder}; wait until it finishes (headless: add "
                               f"--wait to queue behind it) or choose another run id")
            if on_wait is not None:
                on_wait(f"run {root.name} is in use by {holder}; waiting for it to finish")
            while not _try_lock(handle):
                time.sleep(0.5)
        if _still_there(handle, root / LOCK_FILE):
            break
        handle.close()  # `cinereel clean` removed the run while this process waited: lock the new file
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} ({_policy['holder']}) since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return handle


def _still_there(handle: Any, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def remove_partials(root: Path) -> list[Path]:
    """Delete the temporary files of writes that never finished (a killed process); only inside ``root``.
    Called with the run lock held, so no live writer owns them."""
    removed = [path for path in root.rglob(".*") if path.is_file() and PARTIAL.match(path.name)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


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

    @contextmanager
    def _updating(self) -> Iterator[None]:
        """Around a read-modify-write of the manifest or the superseded log: one thread of this process and one
        process at a time (the headless runner's sound branch runs in a process of its own)."""
        with self._lock, _exclusive(self.root / MANIFEST_LOCK_FILE):
            yield

    def _record(self, rel: str, key: str) -> None:
        with self._updating():
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
        with self.locked():
            if self.is_current(rel, key):
                return target, False
            if target.exists():
                self._supersede(rel, key)
            # The key is recorded before the file appears: a process killed between the two leaves a key without
            # its file, which the next run makes (the work was not finished), never a finished file without its
            # key, which the next run would move aside and make again (seen in CI: a keyframe, kill -9).
            atomic_write(target, make, before_rename=lambda: self._record(rel, key))
        return target, True

    def locked(self) -> Any:
        """The run lock (re-entrant); see ``run_lock``."""
        return run_lock(self.root, lambda message: print(f"cinereel: {message}", file=sys.stderr))

    def _supersede(self, rel: str, new_key: str) -> None:
        """Keep a file made from other inputs instead of overwriting it: work is never lost. Each version
        gets its own folder (microseconds, then a counter), and superseded.json says what moved and why."""
        src = self.path(rel)
        stamp = time.strftime("%Y%m%d-%H%M%S") + f".{time.time_ns() // 1000 % 1_000_000:06d}"
        folder, count = stamp, 1
        while self.path(f"superseded/{folder}/{rel}").exists():
            count += 1
            folder = f"{stamp}-{count}"
        dest = self.path(f"superseded/{folder}/{rel}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        old_key = (self.manifest().get(rel) or {}).get("key")
        with self._updating():
            log = self.superseded() + [{"artifact": rel, "moved_to": f"superseded/{folder}/{rel}",
                                        "time": time.time(), "old_key": old_key, "new_key": new_key,
                                        "reason": "its inputs changed" if old_key else "it was not in the manifest"}]
            atomic_write_text(self.root / SUPERSEDED_LOG, json.dumps(log, indent=1))

    def superseded(self) -> list[dict[str, Any]]:
        """Every artifact version moved aside, oldest first."""
        try:
            return json.loads((self.root / SUPERSEDED_LOG).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def write_json(self, rel: str, data: Any) -> Path:
        with self.locked():
            return atomic_write_text(self.path(rel), json.dumps(data, indent=2, ensure_ascii=False,
                                                                default=_json_default))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.path(rel).read_text(encoding="utf-8"))

    def forget(self, rels: list[str]) -> None:
        """Drop manifest entries (files about to be removed by ``keep``): the manifest lists only what is on disk."""
        with self._updating():
            manifest = self.manifest()
            if any(rel in manifest for rel in rels):
                for rel in rels:
                    manifest.pop(rel, None)
                atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
