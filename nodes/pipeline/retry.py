"""The critic gate's retry policy: a failure label becomes a concrete change to the shot.

DESIGN §5: every label changes one parameter of the shot, and the changed shot is
what the next render receives. ``revise`` returns that shot together with a record
of what changed, so the caller renders ``revision.shot`` (never the old one) and the
report can say why attempt N differs from attempt N-1.

``REMEDIES`` is the table: one entry per label, each a pure function from
(shot, plan) to the fields to update. Phrases are added to the prompt or the
negative prompt one comma-separated term at a time, and a term the text already
holds (as whole words, any case) is not added again, so repeating a label never
repeats a phrase. Every attempt also gets a fresh seed from ``attempt_seed``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...model_loaders.vocabulary.critique import FAILURE_LABELS, IMAGE_LABELS
from ...model_loaders.vocabulary.plan import MAX_FLOW_SHIFT, PLAIN_CAMERA, Plan, Shot

REF_WEIGHT_STEP = 0.15
REF_WEIGHT_CAP = 1.0
FLOW_SHIFT_STEP = 1.0
FLOW_SHIFT_FLOOR = 3.0  # OBJECT_MORPHING lowers flow shift to here, never below; a shot already lower keeps its value
PROMPT_MAX_CHARS = 2000  # Shot.prompt and Shot.negative_prompt max_length
MAX_SEED = 2**63 - 1


Remedy = Callable[[Shot, Plan], dict[str, Any]]


@dataclass(frozen=True)
class Revision:
    """The shot for the next attempt and what changed to get it."""

    shot: Shot
    label: str | None
    changes: dict[str, tuple[Any, Any]]  # field -> (old, new), for every field that changed (seed included)
    rerender_keyframe: bool


# -- seeds ---------------------------------------------------------------------

def attempt_seed(shot_seed: int, attempt: int) -> int:
    """The seed of attempt ``attempt`` (1-based): the shot's own seed first, then a hash of (seed, attempt)."""
    if not 0 <= shot_seed <= MAX_SEED:
        raise ValueError(f"shot_seed must be in 0..2**63-1, got {shot_seed}")
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if attempt == 1:
        return shot_seed
    digest = hashlib.blake2b(f"cinereel-retry:{shot_seed}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & MAX_SEED


# -- phrases -------------------------------------------------------------------

def _terms(phrase: str) -> tuple[str, ...]:
    return tuple(term.strip() for term in phrase.split(",") if term.strip())


def _holds(text: str, term: str) -> bool:
    """Whether ``text`` already holds ``term`` as whole words, in any case."""
    return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.IGNORECASE) is not None


def _append(text: str, term: str) -> str:
    text = text.rstrip().rstrip(",").rstrip()
    if not text:
        return term
    return f"{text} {term}" if text.endswith((".", "!", "?", ";", ":")) else f"{text}, {term}"


def with_terms(text: str, terms: tuple[str, ...], limit: int = PROMPT_MAX_CHARS) -> str:
    """``text`` with each term it lacks appended; a term that would push it past ``limit`` is skipped."""
    for term in terms:
        if _holds(text, term):
            continue
        longer = _append(text, term)
        if len(longer) <= limit:
            text = longer
    return text


# -- the table -----------------------------------------------------------------

def _phrases(prompt: str = "", negative: str = "") -> Remedy:
    """A remedy that adds ``prompt`` to the prompt and ``negative`` to the negative prompt."""

    def remedy(shot: Shot, plan: Plan) -> dict[str, Any]:
        update: dict[str, Any] = {}
        if prompt:
            update["prompt"] = with_terms(shot.prompt, _terms(prompt))
        if negative:
            update["negative_prompt"] = with_terms(shot.negative_prompt, _terms(negative))
        return update

    return remedy


def _stronger_reference(shot: Shot, plan: Plan) -> dict[str, Any]:
    return {"ref_weight": min(REF_WEIGHT_CAP, round(shot.ref_weight + REF_WEIGHT_STEP, 6))}


def _plain_camera(shot: Shot, plan: Plan) -> dict[str, Any]:
    return {"camera_detail": PLAIN_CAMERA[shot.camera]}


def _lower_flow_shift(shot: Shot, plan: Plan) -> dict[str, Any]:
    if shot.flow_shift <= FLOW_SHIFT_FLOOR:
        return {}
    return {"flow_shift": min(MAX_FLOW_SHIFT, max(FLOW_SHIFT_FLOOR, shot.flow_shift - FLOW_SHIFT_STEP))}


def _reinject_wardrobe(shot: Shot, plan: Plan) -> dict[str, Any]:
    wardrobe = tuple(item for char_id in shot.characters for item in plan.character(char_id).wardrobe)
    return {"prompt": with_terms(shot.prompt, wardrobe)}


REMEDIES: dict[str, Remedy] = {
    "CHARACTER_DRIFT": _stronger_reference,
    "EXTRAS_INVADE_FRAME": _phrases(negative="crowd, extra people, bystanders, background figures"),
    "CAMERA_IGNORED": _plain_camera,
    "WALKING_BACKWARDS": _phrases(prompt="walking forward, facing the direction of travel",
                                  negative="walking backwards, moonwalking, reversed motion"),
    "OBJECT_MORPHING": _lower_flow_shift,
    "HAND_FINGER_ARTIFACT": _phrases(prompt="anatomically correct hands, five fingers",
                                     negative="extra fingers, fused fingers, malformed hands"),
    "WARDROBE_DRIFT": _reinject_wardrobe,
    "NEON_GLOW_LEAK": _phrases(prompt="neutral white balance, natural skin tones",
                               negative="neon colour cast, colour bleeding"),
    "STYLIZED_AI_LOOK": _phrases(prompt="photorealistic, natural film grain, real skin texture",
                                 negative="CGI, plastic skin, airbrushed, illustration"),
    "RANDOM_INTIMACY": _phrases(prompt="characters keep a natural distance, no physical contact",
                                negative="kissing, embracing, touching"),
}


# -- revising a shot -----------------------------------------------------------

def _changed_fields(old: Shot, new: Shot) -> dict[str, tuple[Any, Any]]:
    before, after = old.model_dump(), new.model_dump()
    return {name: (before[name], after[name]) for name in before if before[name] != after[name]}


def revise(shot: Shot, plan: Plan, label: str | None, attempt: int, original_seed: int) -> Revision:
    """The shot for attempt ``attempt`` (>= 2) after a failure with ``label``.

    ``label`` None (a technical failure, or no label) changes only the seed and re-renders only the clip.
    """
    if label is not None and label not in REMEDIES:
        raise ValueError(f"unknown failure label {label!r}; expected None or one of {', '.join(FAILURE_LABELS)}")
    if attempt < 2:
        raise ValueError(f"a revision is for attempt 2 or later, got attempt {attempt}")
    update = REMEDIES[label](shot, plan) if label is not None else {}
    update["seed"] = attempt_seed(original_seed, attempt)
    new = Shot.model_validate(shot.model_copy(update=update).model_dump())
    return Revision(shot=new, label=label, changes=_changed_fields(shot, new),
                    rerender_keyframe=label in IMAGE_LABELS)


def revise_sequence(shot: Shot, plan: Plan, labels: list[str | None]) -> list[Revision]:
    """Revisions for attempts 2, 3, ... after failures with ``labels``, each from the one before."""
    original_seed = shot.seed
    revisions: list[Revision] = []
    for attempt, label in enumerate(labels, start=2):
        revision = revise(shot, plan, label, attempt, original_seed)
        revisions.append(revision)
        shot = revision.shot
    return revisions
