"""The director's plan: a validated schema shared by every stage.

Validation is pydantic's; ``PlanError`` rewrites its messages so that each one
names the field the way a user reads it (``shots[3].duration_s must be > 0,
got -2``). ``plan_json_schema()`` is the same schema as JSON Schema, which the
language-model director uses for constrained decoding.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .languages import normalize_language

MAX_FLOW_SHIFT = 8.0
MIN_FLOW_SHIFT = 1.0
MAX_REEL_SECONDS = 120.0
MAX_SHOTS = 24
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"

ShotType = Literal["hero", "broll", "establishing"]
CameraMove = Literal["static", "push_in", "pull_out", "pan_left", "pan_right", "tilt_up", "tilt_down"]
CAMERA_MOVES: tuple[str, ...] = CameraMove.__args__  # type: ignore[attr-defined]
# Each move as a plain verb phrase: what the motion model reads when a shot has no camera_detail,
# and what replaces the free-text direction after CAMERA_IGNORED.
PLAIN_CAMERA: dict[str, str] = {
    "static": "static shot",
    "push_in": "slow push in",
    "pull_out": "slow pull out",
    "pan_left": "slow pan left",
    "pan_right": "slow pan right",
    "tilt_up": "slow tilt up",
    "tilt_down": "slow tilt down",
}
SHOT_TYPES: tuple[str, ...] = ShotType.__args__  # type: ignore[attr-defined]

DEFAULT_FLOW_SHIFT: dict[str, float] = {"hero": 5.0, "broll": 8.0, "establishing": 8.0}


class PlanError(ValueError):
    """A plan that breaks the schema. ``problems`` lists one readable line per broken rule."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid plan: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, defer_build=True)


class Character(_Strict):
    id: str = Field(pattern=SLUG_PATTERN, description="Lower-case identifier used in file names.")
    name: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=1, max_length=600, description="Face, age, build: what keeps them the same person.")
    wardrobe: list[str] = Field(min_length=1, max_length=12, description="Clothing descriptors, re-injected on WARDROBE_DRIFT.")


class Shot(_Strict):
    id: str = Field(pattern=SLUG_PATTERN)
    type: ShotType
    duration_s: float = Field(gt=0, le=30)
    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str = Field(default="", max_length=2000)
    camera: CameraMove = "static"
    camera_detail: str = Field(default="", max_length=300, description="Free-text camera direction on top of the move.")
    characters: list[str] = Field(default_factory=list, max_length=8)
    narration: str = Field(default="", max_length=1000)
    seed: int = Field(ge=0, le=2**63 - 1)
    flow_shift: float = Field(default=5.0, ge=MIN_FLOW_SHIFT, le=MAX_FLOW_SHIFT)
    ref_weight: float = Field(default=0.75, ge=0.0, le=1.0)
    locked: bool = Field(default=False, description="A locked shot keeps its keyframe and clip: never re-rendered, "
                                                    "never sent back by the critic gate.")

    @field_validator("duration_s", "flow_shift", "ref_weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value


# Fields that say how the user wants a shot treated, not what it looks like: left out of every render's key,
# so locking or unlocking a shot never by itself re-renders it.
SHOT_CONTROL_FIELDS: frozenset[str] = frozenset({"locked"})


def shot_render_fields(shot: Shot) -> dict[str, Any]:
    """The shot as a render's content key sees it (``SHOT_CONTROL_FIELDS`` left out)."""
    return shot.model_dump(mode="json", exclude=set(SHOT_CONTROL_FIELDS))


class Plan(_Strict):
    version: Literal[1] = 1
    title: str = Field(min_length=1, max_length=200)
    sentence: str = Field(min_length=1, max_length=10_000)
    locale: str = Field(min_length=1, max_length=100)
    language: str
    mood: str = Field(min_length=1, max_length=40)
    time_of_day: str = Field(min_length=1, max_length=40)
    duration_s: float = Field(gt=0, le=MAX_REEL_SECONDS)
    fps: int = Field(default=16, ge=8, le=60)
    width: int = Field(default=1280, ge=256, le=3840, multiple_of=16)
    height: int = Field(default=720, ge=256, le=3840, multiple_of=16)
    characters: list[Character] = Field(default_factory=list, max_length=8)
    shots: list[Shot] = Field(min_length=1, max_length=MAX_SHOTS)
    reel_seed: int | None = Field(default=None, ge=0, le=2**63 - 1,
                                  description="Seed of what belongs to the whole reel (portraits, music); None: the "
                                              "first shot's seed. Pinned when an edit changes the first shot's seed, "
                                              "so re-rendering that shot leaves the portraits and music as they are.")

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        return normalize_language(value)

    @model_validator(mode="after")
    def _consistent(self) -> "Plan":
        problems = []
        char_ids = [c.id for c in self.characters]
        for dup in sorted({c for c in char_ids if char_ids.count(c) > 1}):
            problems.append(f"characters: id {dup!r} is used twice")
        shot_ids = [s.id for s in self.shots]
        for dup in sorted({s for s in shot_ids if shot_ids.count(s) > 1}):
            problems.append(f"shots: id {dup!r} is used twice")
        for i, shot in enumerate(self.shots):
            for name in shot.characters:
                if name not in char_ids:
                    problems.append(f"shots[{i}].characters names {name!r}, which is not in characters")
        total = sum(s.duration_s for s in self.shots)
        if abs(total - self.duration_s) > 0.5 / self.fps:
            problems.append(
                f"shots: durations add up to {total:g} s but duration_s is {self.duration_s:g} s"
            )
        if problems:
            raise ValueError(" | ".join(problems))
        return self

    # -- helpers ---------------------------------------------------------
    @property
    def whole_reel_seed(self) -> int:
        """The seed of the portraits and the music bed."""
        return self.reel_seed if self.reel_seed is not None else self.shots[0].seed

    def shot(self, shot_id: str) -> Shot:
        for s in self.shots:
            if s.id == shot_id:
                return s
        raise KeyError(f"no shot {shot_id!r} in plan (shots: {', '.join(s.id for s in self.shots)})")

    def character(self, char_id: str) -> Character:
        for c in self.characters:
            if c.id == char_id:
                return c
        raise KeyError(f"no character {char_id!r} in plan")

    def shot_start_s(self, shot_id: str) -> float:
        start = 0.0
        for s in self.shots:
            if s.id == shot_id:
                return start
            start += s.duration_s
        raise KeyError(shot_id)

    def locked_shots(self) -> list[str]:
        return [s.id for s in self.shots if s.locked]

    def with_shot(self, shot: Shot) -> "Plan":
        """A new plan with ``shot`` replacing the shot of the same id."""
        shots = [shot if s.id == shot.id else s for s in self.shots]
        return validate_plan({**self.model_dump(), "shots": [s.model_dump() for s in shots]})


# -- validation -------------------------------------------------------------

def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "plan"


def _n(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


_RULES = {
    "greater_than": lambda c: f"must be > {_n(c['gt'])}",
    "greater_than_equal": lambda c: f"must be >= {_n(c['ge'])}",
    "less_than": lambda c: f"must be < {_n(c['lt'])}",
    "less_than_equal": lambda c: f"must be <= {_n(c['le'])}",
    "multiple_of": lambda c: f"must be a multiple of {_n(c['multiple_of'])}",
    "string_too_short": lambda c: f"must have at least {c['min_length']} character(s)",
    "string_too_long": lambda c: f"must have at most {c['max_length']} characters",
    "too_short": lambda c: f"must have at least {c['min_length']} item(s)",
    "too_long": lambda c: f"must have at most {c['max_length']} items",
    "string_pattern_mismatch": lambda c: f"must match {c['pattern']}",
    "literal_error": lambda c: f"must be one of {c['expected']}",
    "missing": lambda c: "is required",
    "extra_forbidden": lambda c: "is not a known field",
}


def _describe(err: dict[str, Any]) -> str:
    path = _field_path(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind in _RULES:
        rule = _RULES[kind](ctx)
    else:
        rule = err.get("msg", "is invalid")
        for prefix in ("Value error, ", "Assertion failed, "):
            if rule.startswith(prefix):
                rule = rule[len(prefix):]
        if path == "plan":
            return rule
        rule = rule[0].lower() + rule[1:] if rule else "is invalid"
        if not rule.startswith(("must", "is ", "names", "unknown")):
            rule = f"is invalid: {rule}"
    if kind in ("missing", "extra_forbidden"):
        return f"{path} {rule}"
    got = err.get("input")
    shown = repr(got) if isinstance(got, str) else json.dumps(got, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{path} {rule}, got {shown}"


def validate_plan(data: dict[str, Any] | str | Plan) -> Plan:
    """Parse and validate a plan from a dict or JSON text; raise ``PlanError`` naming each broken field."""
    if isinstance(data, Plan):
        return data
    try:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise PlanError([f"plan is not valid JSON: {exc}"]) from None
            except RecursionError:
                raise PlanError(["plan is nested too deeply to be a plan (a plan is an object of shots, "
                                 "a few levels deep)"]) from None
        if not isinstance(data, dict):
            raise PlanError([f"plan must be a JSON object, got {type(data).__name__}"])
        return Plan.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors(include_url=False):
            msg = _describe(err)
            problems.extend(p.strip() for p in msg.split(" | "))
        raise PlanError(problems) from None


def plan_json_schema() -> dict[str, Any]:
    return Plan.model_json_schema()
