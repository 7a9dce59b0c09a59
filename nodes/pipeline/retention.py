"""What a finished run keeps on disk, the runs under an output folder, and removing old ones.

``keep`` (the CLI's ``--keep`` and the Assemble node's widget) runs only after the reel was assembled:

- ``all``: everything stays (every attempt, ``superseded/``): the default.
- ``best``: the reel, the chosen attempt of every shot and everything the manifest needs to resume.
  Removed: the clips and keyframes of attempts the reel does not use (with their ``.qc.json`` and
  ``.call.json``) and ``superseded/``. Their manifest entries go too, so the manifest lists only files on
  disk; critiques, portraits, audio and the plan stay. A resumed run re-renders nothing it kept; a
  resumed ``--gate`` run replays its rounds and so re-renders exactly the removed attempts (their
  critiques are kept, so the critic is not asked again).
- ``final``: ``reel.mp4``, ``reel.srt`` and ``report.json`` only. The run no longer resumes: running it
  again starts over.

``report.json`` records under ``retention`` what was removed and how many bytes.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rundir import LOCK_FILE, RUN_ID_PATTERN, is_locked, run_lock

if TYPE_CHECKING:
    from .reel import Reel

KEEP_CHOICES = ("all", "best", "final")
FINAL_FILES = frozenset({"reel.mp4", "reel.srt", "report.json"})
ATTEMPT_FOLDERS = {"clips": ".mp4", "keyframes": ".png"}
SIDE_FILES = (".qc.json", ".call.json")  # written beside an attempt's clip or keyframe
SUPERSEDED = "superseded"


# -- the run lock ---------------------------------------------------------------

@contextmanager
def run_lock_if_free(root: Path) -> Iterator[bool]:
    """Hold ``root``'s run lock if no other process holds it (yields True); never waits (yields False)."""
    if is_locked(root):
        yield False
        return
    with run_lock(root):  # a process that took it since the check makes this raise RunInUse: nothing removed
        yield True


# -- keep -----------------------------------------------------------------------

def check_keep(keep: str) -> str:
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_CHOICES)}, got {keep!r}")
    return keep


def attempt_base(name: str, extension: str) -> str:
    """The clip or keyframe a file in clips/ or keyframes/ belongs to (``s1.attempt2.qc.json`` ->
    ``s1.attempt2.mp4``)."""
    for side in SIDE_FILES:
        if name.endswith(side):
            return name[: -len(side)] + extension
    return name


def best_removals(reel: Reel) -> list[Path]:
    """Files ``best`` removes: attempts the reel does not use, and everything under superseded/."""
    root = reel.run_dir.root
    chosen = {reel.artifacts.get(f"{kind}:{shot.id}") for shot in reel.plan.shots for kind in ("clip", "keyframe")}
    found = []
    for folder, extension in ATTEMPT_FOLDERS.items():
        if not (root / folder).is_dir():
            continue
        for path in sorted((root / folder).iterdir()):
            # hidden files are another writer's temporary files, not attempts
            if path.is_file() and not path.name.startswith(".") \
                    and f"{folder}/{attempt_base(path.name, extension)}" not in chosen:
                found.append(path)
    return found + files_under(root / SUPERSEDED)


def final_removals(reel: Reel) -> list[Path]:
    """Files ``final`` removes: all but the reel, its subtitles, the report and the run's lock file."""
    root = reel.run_dir.root
    keep = {root / name for name in (*FINAL_FILES, LOCK_FILE)}
    return [path for path in files_under(root) if path not in keep]


def files_under(folder: Path) -> list[Path]:
    """Every file (and symbolic link, not followed) below ``folder``, sorted; [] when it does not exist."""
    found = []
    for parent, dirs, files in os.walk(folder):
        found += [Path(parent, name) for name in files]
        found += [Path(parent, name) for name in dirs if Path(parent, name).is_symlink()]
    return sorted(found)


def remove_files(root: Path, paths: list[Path]) -> dict[str, Any]:
    """Remove ``paths`` (all inside ``root``), then the folders they leave empty; what went and its size."""
    removed, failed, size = [], [], 0
    for path in paths:
        if root not in path.parents:
            raise ValueError(f"{path} is not inside the run folder {root}")
        try:
            bytes_ = path.lstat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed.append(f"{path.relative_to(root).as_posix()} ({exc.strerror})")
            continue
        removed.append(path.relative_to(root).as_posix())
        size += bytes_
    for parent, _dirs, _files in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if Path(parent) != root and not os.listdir(parent):
            os.rmdir(parent)
    return {"removed": removed, "removed_files": len(removed), "removed_bytes": size, "not_removed": failed}


def apply_keep(reel: Reel, keep: str) -> Reel:
    """Apply ``keep`` to a run whose reel is assembled; the REEL returned lists only artifacts still on disk
    and notes ``retention`` (what was removed, how many bytes)."""
    from .reel import Reel
    from .stage import add_warning

    check_keep(keep)
    reel.artifact_path("reel")  # retention only ever follows a finished assembly
    run = reel.run_dir
    paths = {"all": lambda r: [], "best": best_removals, "final": final_removals}[keep](reel)
    if keep == "best":  # the manifest first: a crash in between leaves files it no longer vouches for
        run.forget([path.relative_to(run.root).as_posix() for path in paths])
    result = remove_files(run.root, paths)
    notes = {**reel.notes, "retention": {"keep": keep, **result}}
    if result["not_removed"]:
        notes["warnings"] = add_warning(reel, f"keep={keep}: could not remove {', '.join(result['not_removed'])}")
    artifacts = {name: rel for name, rel in reel.artifacts.items() if (run.root / rel).exists()}
    return Reel(reel.plan, run.root, artifacts, notes)


# -- runs under an output folder ------------------------------------------------------

@dataclass(frozen=True)
class RunInfo:
    run_id: str
    path: Path
    size: int  # bytes
    changed: float  # the newest modification time of the folder or anything in it (seconds since the epoch)
    has_reel: bool
    locked: bool


def runs_folder(out: str | os.PathLike[str]) -> Path:
    return Path(out).expanduser().resolve() / "cinereel"


def last_changed(root: Path) -> float:
    """When anything of the run last changed. The lock file and the run folder's own time are left out:
    taking the lock (``cinereel clean --dry-run`` does) says nothing about the run's age."""
    newest = 0.0
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            if parent == str(root) and name == LOCK_FILE:
                continue
            try:
                newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
            except FileNotFoundError:
                pass
    return newest or root.lstat().st_mtime


def run_info(root: Path) -> RunInfo:
    size = 0
    for path in files_under(root):
        try:
            size += path.lstat().st_size
        except FileNotFoundError:  # removed while we looked
            pass
    return RunInfo(root.name, root, size, last_changed(root), (root / "reel.mp4").is_file(), is_locked(root))


def list_runs(out: str | os.PathLike[str]) -> list[RunInfo]:
    """Every run folder under ``<out>/cinereel/``, newest first."""
    folder = runs_folder(out)
    if not folder.is_dir():
        return []
    roots = [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and RUN_ID_PATTERN.match(p.name)]
    return sorted((run_info(p) for p in roots), key=lambda r: r.changed, reverse=True)


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise ValueError(f"--older-than {text!r} must be a number and a unit (s, m, h, d or w): 30m, 12h, 7d, 2w")
    return float(match.group(1)) * AGE_UNITS[match.group(2)]


@dataclass(frozen=True)
class Cleaned:
    removed: list[RunInfo]
    skipped_locked: list[RunInfo]


def clean_runs(out: str | os.PathLike[str], older_than_s: float, dry_run: bool = False,
               now: float | None = None) -> Cleaned:
    """Remove whole runs unchanged for longer than ``older_than_s``; never one whose lock another process holds
    (the lock is held while the folder is removed, so the run cannot start meanwhile)."""
    import shutil

    now = time.time() if now is None else now
    removed, skipped = [], []
    for run in list_runs(out):
        if now - run.changed <= older_than_s:
            continue
        with run_lock_if_free(run.path) as got:
            if not got:
                skipped.append(run)
                continue
            if not dry_run:
                shutil.rmtree(run.path)
            removed.append(run)
    return Cleaned(removed, skipped)


def human_size(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1024
        if size < 1024 or unit == "TB":
            break
    return f"{size:.1f} {unit}"


__all__ = ["KEEP_CHOICES", "Cleaned", "RunInfo", "apply_keep", "check_keep", "clean_runs", "is_locked",
           "list_runs", "parse_age", "run_lock_if_free"]
