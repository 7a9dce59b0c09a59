"""An edited plan from the shot editor (the Director node's ``plan_edits``, ``cinereel edit``): every problem
with its field.

``plan_edit_problems`` is the one check, pure (no files, no models): the plan schema's rules
(``vocabulary/plan.py``), then the narration budget of the voice that will speak each line
(``speaking_rates.py``, at the narration stage's top speed-up, as a ``--plan`` is checked). Each problem
is ``{"path": "shots.2.flow_shift", "message": "must be <= 8, got 9"}``: the path as the editor addresses
the field (dots, list indexes as numbers), so the browser can show the message beside it.
``plan_edit_rules`` is what the editor mirrors while the user types: the schema, the choices, and the flow
shift each shot type starts with.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ...model_loaders.vocabulary.plan import (
    CAMERA_MOVES,
    DEFAULT_FLOW_SHIFT,
    MAX_FLOW_SHIFT,
    MIN_FLOW_SHIFT,
    SHOT_TYPES,
    PlanError,
    validate_plan,
)

Problem = dict[str, str]
# "shots[2].flow_shift must be ...", "shots: durations add up ...", "characters: id 'x' is used twice"
_LEADING_PATH = re.compile(r"^(?P<path>[A-Za-z_]+(?:\[\d+\]|\.[A-Za-z_]+)*)(?::\s*|\s+)(?P<rest>.*)$", re.S)


class PlanEditError(ValueError):
    """An edited plan that cannot be rendered; the message names every field, ``problems`` holds them apart."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [f"{_readable(p['path'])}{' ' if p['message'].startswith(('is ', 'must ')) else ': '}{p['message']}"
                 for p in problems]
        super().__init__(f"the edited plan has {len(problems)} problem(s): " + "; ".join(lines))


def dotted(path: str) -> str:
    """``shots[2].flow_shift`` -> ``shots.2.flow_shift``."""
    return re.sub(r"\[(\d+)\]", r".\1", path)


def _readable(path: str) -> str:
    """``shots.2.flow_shift`` -> ``shots[2].flow_shift`` (as the plan's own errors write it)."""
    return re.sub(r"\.(\d+)", r"[\1]", path) or "plan"


def _split(problem: str) -> Problem:
    found = _LEADING_PATH.match(problem)
    if found is None or found.group("path") in ("plan",):
        return {"path": "", "message": problem}
    return {"path": dotted(found.group("path")), "message": found.group("rest")}


def _parsed(plan: str | dict[str, Any]) -> tuple[dict[str, Any] | None, list[Problem]]:
    if isinstance(plan, dict):
        return plan, []
    try:
        data = json.loads(plan)
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, [{"path": "", "message": f"the plan is not valid JSON: {exc}"}]
    if not isinstance(data, dict):
        return None, [{"path": "", "message": f"the plan must be a JSON object, got {type(data).__name__}"}]
    return data, []


def plan_edit_problems(plan: str | dict[str, Any], voice_engine: str | None = None,
                       narration: bool = True) -> list[Problem]:
    """Everything wrong with an edited plan, each problem with its field's path; [] when it can be rendered.

    ``voice_engine`` ("kokoro", "espeak-ng", or None for not known: the slower voice) sizes the narration;
    ``narration=False`` checks the schema only (where the voice is not known yet).
    """
    data, problems = _parsed(plan)
    if data is None:
        return problems
    try:
        validate_plan(data)
    except PlanError as exc:
        problems = [_split(p) for p in exc.problems]
    if not narration:
        return problems
    return problems + narration_problems(data, voice_engine, {p["path"] for p in problems})


def narration_problems(data: dict[str, Any], voice_engine: str | None, known: set[str] = frozenset()) -> list[Problem]:
    """Lines their voice cannot speak in their shot, even sped up: checked on every shot whose duration and
    narration are themselves valid, so a schema problem elsewhere does not hide them."""
    from ...model_loaders.speaking_rates import overrun
    from ...model_loaders.vocabulary.languages import normalize_language
    from .audio import MAX_SPEECH_SPEED

    try:
        language = normalize_language(data.get("language"))
    except (ValueError, TypeError, KeyError, AttributeError):
        return []  # the schema problems already name the language
    found = []
    for i, shot in enumerate(data.get("shots") or []):
        if not isinstance(shot, dict) or {f"shots.{i}.duration_s", f"shots.{i}.narration"} & set(known):
            continue
        duration, text = shot.get("duration_s"), shot.get("narration", "")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not isinstance(text, str) \
                or not 0 < duration <= 30:
            continue
        late = overrun(str(shot.get("id", f"shots[{i}]")), float(duration), text, language, voice_engine,
                       MAX_SPEECH_SPEED)
        if late is not None:
            found.append({"path": f"shots.{i}.narration",
                          "message": f"too long to speak in the shot: {late.describe()}; shorten the line or "
                                     "lengthen the shot"})
    return found


def check_plan_edits(plan: str | dict[str, Any], voice_engine: str | None = None) -> str:
    """The edited plan as JSON text when it can be rendered; else ``PlanEditError`` naming every problem."""
    problems = plan_edit_problems(plan, voice_engine)
    if problems:
        raise PlanEditError(problems)
    return plan if isinstance(plan, str) else json.dumps(plan, ensure_ascii=False)


def pin_reel_seed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with ``reel_seed`` pinned to ``old``'s when the edit changed the first shot's seed (a new seed for
    it, a reorder) and sets none itself: the portraits and the music bed belong to the whole reel and stay."""
    before = validate_plan(old).whole_reel_seed
    shots = new.get("shots")
    first = shots[0].get("seed") if isinstance(shots, list) and shots and isinstance(shots[0], dict) else None
    if new.get("reel_seed") is None and first != before:
        return {**new, "reel_seed": before}
    return new


def plan_edit_rules(flow_shift_defaults: dict[str, float] | None = None) -> dict[str, Any]:
    """What the shot editor mirrors as the user types: the plan's JSON Schema, the choices, and the flow shift a
    shot of each type starts with (the run's settings where given: hero 5, b-roll and establishing 8)."""
    from ...model_loaders.vocabulary.plan import plan_json_schema

    return {"schema": plan_json_schema(), "shot_types": list(SHOT_TYPES), "camera_moves": list(CAMERA_MOVES),
            "flow_shift": {"min": MIN_FLOW_SHIFT, "max": MAX_FLOW_SHIFT,
                           "by_type": dict(flow_shift_defaults or DEFAULT_FLOW_SHIFT)}}


def validate_request(body: Any) -> dict[str, Any]:
    """``POST /cinereel/validate_plan``: ``{"plan": {...} or "json", "voice_engine": "kokoro"}`` ->
    ``{"problems": [{"path", "message"}]}``."""
    from ...model_loaders.speaking_rates import ENGINES

    if not isinstance(body, dict) or "plan" not in body:
        return {"problems": [{"path": "", "message": 'send {"plan": <the edited plan>, "voice_engine": ...}'}]}
    engine = body.get("voice_engine")
    if engine not in (None, *ENGINES):
        return {"problems": [{"path": "", "message": f"voice_engine must be one of {', '.join(ENGINES)} or null, "
                                                     f"got {engine!r}"}]}
    return {"problems": plan_edit_problems(body["plan"], engine)}
