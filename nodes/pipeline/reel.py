"""The REEL: the small value that travels between CineReel nodes.

A REEL holds the validated plan, the run directory, and references to the
artifacts made so far (paths relative to the run directory). Big media stays
on disk (see ``rundir.py``). A REEL is immutable: every node returns a new one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ...model_loaders.vocabulary.plan import Plan, validate_plan
from .rundir import RunDir, RunIdError, atomic_write, atomic_write_text, check_run_id, derive_run_id, input_key

__all__ = ["Reel", "RunDir", "RunIdError", "atomic_write", "atomic_write_text", "check_run_id", "derive_run_id",
           "input_key"]


class Reel:
    """Immutable REEL value: plan, run directory and artifact references."""

    __slots__ = ("_plan", "_run_dir", "_artifacts", "_notes")

    def __init__(
        self,
        plan: Plan,
        run_dir: str | os.PathLike[str],
        artifacts: Mapping[str, str] | None = None,
        notes: Mapping[str, Any] | None = None,
    ):
        object.__setattr__(self, "_plan", validate_plan(plan))
        object.__setattr__(self, "_run_dir", str(Path(run_dir).resolve()))
        object.__setattr__(self, "_artifacts", MappingProxyType(dict(artifacts or {})))
        object.__setattr__(self, "_notes", MappingProxyType(json.loads(json.dumps(dict(notes or {})))))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a REEL is immutable; use Reel.evolve() to make a new one")

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self._run_dir)

    @property
    def run_id(self) -> str:
        return Path(self._run_dir).name

    @property
    def artifacts(self) -> Mapping[str, str]:
        """Logical name (``keyframe:shot_01``) -> path relative to the run directory."""
        return self._artifacts

    @property
    def notes(self) -> Mapping[str, Any]:
        """Small JSON facts stages leave for later stages and the report (warnings, voice engine...)."""
        return self._notes

    def artifact_path(self, name: str) -> Path:
        try:
            rel = self._artifacts[name]
        except KeyError:
            have = ", ".join(sorted(self._artifacts)) or "nothing yet"
            raise KeyError(f"the REEL has no {name!r} artifact (it has: {have}); connect the stage that makes it first") from None
        return self.run_dir.path(rel)

    def evolve(
        self,
        plan: Plan | None = None,
        artifacts: Mapping[str, str] | None = None,
        notes: Mapping[str, Any] | None = None,
    ) -> "Reel":
        """A new REEL with ``artifacts`` and ``notes`` merged over this one's; ``self`` is unchanged."""
        return Reel(
            plan or self._plan,
            self._run_dir,
            {**self._artifacts, **(artifacts or {})},
            {**self._notes, **(notes or {})},
        )

    # -- JSON round trip --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "cinereel_reel": 1,
            "run_dir": self._run_dir,
            "plan": self._plan.model_dump(mode="json"),
            "artifacts": dict(self._artifacts),
            "notes": json.loads(json.dumps(dict(self._notes))),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any]) -> "Reel":
        data = json.loads(text) if isinstance(text, str) else dict(text)
        if data.get("cinereel_reel") != 1:
            raise ValueError("not a CineReel REEL (missing 'cinereel_reel': 1)")
        return cls(validate_plan(data["plan"]), data["run_dir"], data.get("artifacts"), data.get("notes"))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickled as its JSON (a Ray worker receives the jobs that capture it)."""
        return Reel.from_json, (self.to_json(),)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reel) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Reel(run_id={self.run_id!r}, shots={len(self._plan.shots)}, artifacts={len(self._artifacts)})"
