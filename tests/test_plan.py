"""The plan schema: valid plans pass, and each malformed plan fails naming its field."""

from __future__ import annotations

import copy
import json

import pytest
from cinereel.model_loaders.vocabulary.plan import PlanError, plan_json_schema, validate_plan
from cinereel_testkit import sample_plan_dict


def test_valid_plan_round_trips_through_json():
    plan = validate_plan(sample_plan_dict())
    again = validate_plan(plan.model_dump_json())
    assert again == plan
    assert again.shot_start_s("shot_02") == 5.0
    assert plan_json_schema()["properties"]["shots"]["type"] == "array"


def _set(path: str, value):
    """A plan with one field changed; path like 'shots.1.duration_s'. value=... deletes the field."""
    plan = copy.deepcopy(sample_plan_dict())
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = plan
    for p in parents:
        target = target[p]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return plan


MALFORMED = [
    # (plan, text that must appear in the message)
    (_set("shots.1.duration_s", -2), "shots[1].duration_s must be > 0, got -2"),
    (_set("shots.0.duration_s", 0), "shots[0].duration_s must be > 0"),
    (_set("shots.0.type", "closeup"), "shots[0].type must be one of"),
    (_set("shots.1.flow_shift", 8.5), "shots[1].flow_shift must be <= 8"),
    (_set("shots.1.flow_shift", 0.5), "shots[1].flow_shift must be >= 1"),
    (_set("shots.1.ref_weight", 1.2), "shots[1].ref_weight must be <= 1"),
    (_set("shots.0.ref_weight", float("nan")), "shots[0].ref_weight"),
    (_set("shots.0.seed", -1), "shots[0].seed must be >= 0"),
    (_set("shots.0.prompt", ""), "shots[0].prompt must have at least 1 character"),
    (_set("shots.0.prompt", ...), "shots[0].prompt is required"),
    (_set("shots.0.id", "Shot 1!"), "shots[0].id must match"),
    (_set("shots.0.camera", "dolly_zoom"), "shots[0].camera must be one of"),
    (_set("shots.1.characters", ["robot"]), "shots[1].characters names 'robot'"),
    (_set("shots.1.id", "shot_01"), "id 'shot_01' is used twice"),
    (_set("shots", []), "shots must have at least 1 item"),
    (_set("duration_s", 12.0), "durations add up to 10 s but duration_s is 12 s"),
    (_set("duration_s", 0), "duration_s must be > 0"),
    (_set("duration_s", 500), "duration_s must be <= 120"),
    (_set("width", 1000), "width must be a multiple of 16"),
    (_set("language", "klingon"), "unknown language 'klingon'"),
    (_set("characters.0.wardrobe", []), "characters[0].wardrobe must have at least 1 item"),
    (_set("characters.0.id", ...), "characters[0].id is required"),
    (_set("mood", ""), "mood must have at least 1 character"),
    (_set("surprise", 1), "surprise is not a known field"),
    (_set("shots.0.zoom", 2), "shots[0].zoom is not a known field"),
    (_set("fps", 4), "fps must be >= 8"),
]


@pytest.mark.parametrize("plan,expected", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_plan_is_rejected_naming_the_field(plan, expected):
    with pytest.raises(PlanError) as info:
        validate_plan(plan)
    assert expected in str(info.value), str(info.value)


def test_there_are_at_least_15_distinct_malformed_plans():
    assert len({json.dumps(p, sort_keys=True, default=str) for p, _ in MALFORMED}) >= 15


@pytest.mark.parametrize("text,expected", [
    ("{not json", "plan is not valid JSON"),
    ("[1, 2]", "plan must be a JSON object, got list"),
])
def test_plan_text_that_is_not_an_object(text, expected):
    with pytest.raises(PlanError, match=expected):
        validate_plan(text)


def test_language_aliases_are_normalised():
    assert validate_plan(_set("language", "pt")).language == "pt-BR"
    assert validate_plan(_set("language", "en")).language == "en-US"
