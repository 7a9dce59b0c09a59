"""A critique: the one JSON shape every critic writes, the technical check or the language model.

::

    {"scores": {"composition": 8, "motion_coherence": 7, "character_consistency": 9, "lighting_fidelity": 8},
     "label": None or one of FAILURE_LABELS,
     "technical": ["frozen", ...],
     "notes": "human readable"}

The ten failure labels are the critic gate's vocabulary; what each one changes in the next render
lives with the retry policy (``nodes/pipeline/retry.py``).
"""

from __future__ import annotations

from typing import Any

FAILURE_LABELS: tuple[str, ...] = (
    "CHARACTER_DRIFT",
    "EXTRAS_INVADE_FRAME",
    "CAMERA_IGNORED",
    "WALKING_BACKWARDS",
    "OBJECT_MORPHING",
    "HAND_FINGER_ARTIFACT",
    "WARDROBE_DRIFT",
    "NEON_GLOW_LEAK",
    "STYLIZED_AI_LOOK",
    "RANDOM_INTIMACY",
)
# Motion labels re-render only the clip; image labels re-render the keyframe and the clip.
MOTION_LABELS: frozenset[str] = frozenset({"OBJECT_MORPHING", "CAMERA_IGNORED", "WALKING_BACKWARDS"})
IMAGE_LABELS: frozenset[str] = frozenset(FAILURE_LABELS) - MOTION_LABELS

SCORE_AXES: tuple[str, ...] = ("composition", "motion_coherence", "character_consistency", "lighting_fidelity")
TECHNICAL_SOURCE = "technical"  # a critique the technical check wrote: measured figures, no judged scores
CRITIC_SOURCE = "critic"


def critique_source(critique: dict[str, Any] | None) -> str | None:
    """Who judged: ``technical`` (the cheap check, also the preview critic) or ``critic`` (a model); None when
    nobody did (no critique, or a critic that could not answer)."""
    if not critique or not critique.get("scores"):
        return None
    return TECHNICAL_SOURCE if critique.get("source") == TECHNICAL_SOURCE else CRITIC_SOURCE


# -- the critique's shape -------------------------------------------------------

def critique_json_schema() -> dict[str, Any]:
    """JSON Schema of a critique, for a language model's constrained decoding."""
    return {
        "type": "object",
        "properties": {
            "scores": {
                "type": "object",
                "properties": {axis: {"type": "integer", "minimum": 1, "maximum": 10} for axis in SCORE_AXES},
                "required": list(SCORE_AXES),
                "additionalProperties": False,
            },
            "label": {"enum": [*FAILURE_LABELS, None]},
            "notes": {"type": "string"},
        },
        "required": ["scores", "label"],
    }


def validate_critique(data: Any) -> dict[str, Any]:
    """Check a critique's shape and return it normalised; raise ValueError naming the bad field.

    Scores must be whole numbers 1–10 (``7.0`` is accepted as 7), the label one of
    ``FAILURE_LABELS`` (any case) or None. ``technical`` and ``notes`` are optional; so are the technical
    check's ``source`` ("technical") and ``measured`` figures, kept when well formed. Other keys are dropped.
    """
    if not isinstance(data, dict):
        raise ValueError(f"critique must be a JSON object, got {type(data).__name__}")
    scores = data.get("scores")
    if not isinstance(scores, dict):
        raise ValueError(f"scores must be an object with {', '.join(SCORE_AXES)}, got {scores!r}")
    clean_scores = {axis: _score(scores, axis) for axis in SCORE_AXES}
    extra = sorted(set(scores) - set(SCORE_AXES))
    if extra:
        raise ValueError(f"scores.{extra[0]} is not a score axis (axes: {', '.join(SCORE_AXES)})")
    technical = data.get("technical", [])
    if not isinstance(technical, list) or not all(isinstance(item, str) for item in technical):
        raise ValueError(f"technical must be a list of strings, got {technical!r}")
    notes = data.get("notes", "")
    if not isinstance(notes, str):
        raise ValueError(f"notes must be a string, got {type(notes).__name__}")
    clean = {"scores": clean_scores, "label": _label(data.get("label")), "technical": list(technical), "notes": notes}
    return {**clean, **_technical_source(data)}


def _technical_source(data: dict[str, Any]) -> dict[str, Any]:
    """The technical check's marker and figures (``model_loaders/technical.py``), when the critique carries them."""
    measured = data.get("measured")
    figures = isinstance(measured, dict) and all(isinstance(k, str) and isinstance(v, (int, float))
                                                 and not isinstance(v, bool) for k, v in measured.items())
    if data.get("source") != TECHNICAL_SOURCE or not figures:
        return {}
    return {"source": TECHNICAL_SOURCE, "measured": dict(measured)}


def _score(scores: dict[str, Any], axis: str) -> int:
    if axis not in scores:
        raise ValueError(f"scores.{axis} is missing")
    value = scores[axis]
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise ValueError(f"scores.{axis} must be a whole number from 1 to 10, got {value!r}")
    if not 1 <= value <= 10:
        raise ValueError(f"scores.{axis} must be from 1 to 10, got {value!r}")
    return int(value)


def _label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().upper() in FAILURE_LABELS:
        return value.strip().upper()
    raise ValueError(f"label must be null or one of {', '.join(FAILURE_LABELS)}, got {value!r}")


def mean_score(critique: dict[str, Any]) -> float:
    """The gate's number: the mean of the four scores."""
    return sum(critique["scores"][axis] for axis in SCORE_AXES) / len(SCORE_AXES)
