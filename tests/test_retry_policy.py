"""The critic gate's retry policy (DESIGN §5): each failure label changes exactly its parameter, within bounds."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest
from cinereel.model_loaders.vocabulary.critique import FAILURE_LABELS, IMAGE_LABELS, MOTION_LABELS
from cinereel.model_loaders.vocabulary.plan import CAMERA_MOVES, MAX_FLOW_SHIFT, Shot, validate_plan
from cinereel.nodes.pipeline.retry import (
    PLAIN_CAMERA,
    PROMPT_MAX_CHARS,
    REMEDIES,
    Revision,
    attempt_seed,
    revise,
    revise_sequence,
)
from cinereel_testkit import sample_plan_dict
from hypothesis import given, settings
from hypothesis import strategies as st

MAX_SEED = 2**63 - 1
LABELS_OR_NONE = (*FAILURE_LABELS, None)

# The phrases DESIGN §5's table adds, written out here independently of the module.
PROMPT_PHRASES = {
    "WALKING_BACKWARDS": "walking forward, facing the direction of travel",
    "HAND_FINGER_ARTIFACT": "anatomically correct hands, five fingers",
    "NEON_GLOW_LEAK": "neutral white balance, natural skin tones",
    "STYLIZED_AI_LOOK": "photorealistic, natural film grain, real skin texture",
    "RANDOM_INTIMACY": "characters keep a natural distance, no physical contact",
}
NEGATIVE_PHRASES = {
    "EXTRAS_INVADE_FRAME": "crowd, extra people, bystanders, background figures",
    "WALKING_BACKWARDS": "walking backwards, moonwalking, reversed motion",
    "HAND_FINGER_ARTIFACT": "extra fingers, fused fingers, malformed hands",
    "NEON_GLOW_LEAK": "neon colour cast, colour bleeding",
    "STYLIZED_AI_LOOK": "CGI, plastic skin, airbrushed, illustration",
    "RANDOM_INTIMACY": "kissing, embracing, touching",
}
WARDROBE = "white EVA suit, gold visor"  # the sample astronaut's wardrobe

# shot_02 of the sample plan: hero, static, astronaut, flow_shift 5.0, ref_weight 0.75, empty negative prompt.
HERO_PROMPT = "the astronaut walks toward camera"
EXPECTED: dict[str, dict[str, object]] = {
    "CHARACTER_DRIFT": {"ref_weight": pytest.approx(0.9)},
    "EXTRAS_INVADE_FRAME": {"negative_prompt": NEGATIVE_PHRASES["EXTRAS_INVADE_FRAME"]},
    "CAMERA_IGNORED": {"camera_detail": "static shot"},
    "WALKING_BACKWARDS": {"prompt": f"{HERO_PROMPT}, {PROMPT_PHRASES['WALKING_BACKWARDS']}",
                          "negative_prompt": NEGATIVE_PHRASES["WALKING_BACKWARDS"]},
    "OBJECT_MORPHING": {"flow_shift": 4.0},
    "HAND_FINGER_ARTIFACT": {"prompt": f"{HERO_PROMPT}, {PROMPT_PHRASES['HAND_FINGER_ARTIFACT']}",
                             "negative_prompt": NEGATIVE_PHRASES["HAND_FINGER_ARTIFACT"]},
    "WARDROBE_DRIFT": {"prompt": f"{HERO_PROMPT}, {WARDROBE}"},
    "NEON_GLOW_LEAK": {"prompt": f"{HERO_PROMPT}, {PROMPT_PHRASES['NEON_GLOW_LEAK']}",
                       "negative_prompt": NEGATIVE_PHRASES["NEON_GLOW_LEAK"]},
    "STYLIZED_AI_LOOK": {"prompt": f"{HERO_PROMPT}, {PROMPT_PHRASES['STYLIZED_AI_LOOK']}",
                         "negative_prompt": NEGATIVE_PHRASES["STYLIZED_AI_LOOK"]},
    "RANDOM_INTIMACY": {"prompt": f"{HERO_PROMPT}, {PROMPT_PHRASES['RANDOM_INTIMACY']}",
                        "negative_prompt": NEGATIVE_PHRASES["RANDOM_INTIMACY"]},
}

PLAN = validate_plan(sample_plan_dict())
HERO = PLAN.shot("shot_02")


def shot_with(base: Shot = HERO, **update) -> Shot:
    return Shot.model_validate({**base.model_dump(), **update})


def terms(phrase: str) -> list[str]:
    return [t.strip() for t in phrase.split(",")]


def occurrences(text: str, term: str) -> int:
    return len(re.findall(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.IGNORECASE))


# -- the vocabulary ------------------------------------------------------------

def test_labels_in_design_order_and_partitioned():
    assert FAILURE_LABELS == ("CHARACTER_DRIFT", "EXTRAS_INVADE_FRAME", "CAMERA_IGNORED", "WALKING_BACKWARDS",
                              "OBJECT_MORPHING", "HAND_FINGER_ARTIFACT", "WARDROBE_DRIFT", "NEON_GLOW_LEAK",
                              "STYLIZED_AI_LOOK", "RANDOM_INTIMACY")
    assert MOTION_LABELS == {"OBJECT_MORPHING", "CAMERA_IGNORED", "WALKING_BACKWARDS"}
    assert IMAGE_LABELS == set(FAILURE_LABELS) - MOTION_LABELS and len(IMAGE_LABELS) == 7
    assert set(REMEDIES) == set(FAILURE_LABELS) == set(EXPECTED)


def test_policy_imports_nothing_heavy(pack_root: Path):
    tree = ast.parse((pack_root / "nodes" / "pipeline" / "retry.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not imported & {"torch", "numpy", "PIL"}


def test_prompt_limit_matches_schema():
    props = Shot.model_json_schema()["properties"]
    assert props["prompt"]["maxLength"] == props["negative_prompt"]["maxLength"] == PROMPT_MAX_CHARS


# -- one label, one change -----------------------------------------------------

@pytest.mark.parametrize("label", FAILURE_LABELS)
def test_each_label_changes_exactly_its_fields(label):
    revision = revise(HERO, PLAN, label, attempt=2, original_seed=HERO.seed)
    new_seed = attempt_seed(HERO.seed, 2)
    assert isinstance(revision, Revision) and revision.label == label
    assert set(revision.changes) == set(EXPECTED[label]) | {"seed"}
    assert revision.changes["seed"] == (HERO.seed, new_seed) and revision.shot.seed == new_seed
    for field, new in EXPECTED[label].items():
        old_value, new_value = revision.changes[field]
        assert old_value == getattr(HERO, field)
        assert new_value == new
        assert getattr(revision.shot, field) == new  # the next render receives the change
    assert Shot.model_validate(revision.shot.model_dump()) == revision.shot


@pytest.mark.parametrize("label", LABELS_OR_NONE)
def test_image_labels_rerender_keyframe_motion_labels_only_clip(label):
    revision = revise(HERO, PLAN, label, attempt=2, original_seed=HERO.seed)
    assert revision.rerender_keyframe is (label in IMAGE_LABELS)


def test_no_label_changes_only_the_seed():
    revision = revise(HERO, PLAN, None, attempt=3, original_seed=HERO.seed)
    assert revision.changes == {"seed": (HERO.seed, attempt_seed(HERO.seed, 3))}
    assert revision.rerender_keyframe is False and revision.label is None


def test_character_drift_caps_at_one():
    assert revise(shot_with(ref_weight=0.9), PLAN, "CHARACTER_DRIFT", 2, HERO.seed).shot.ref_weight == 1.0
    at_cap = revise(shot_with(ref_weight=1.0), PLAN, "CHARACTER_DRIFT", 2, HERO.seed)
    assert at_cap.shot.ref_weight == 1.0 and set(at_cap.changes) == {"seed"}


@pytest.mark.parametrize("start, expected", [(8.0, 7.0), (3.5, 3.0), (3.0, 3.0), (2.0, 2.0), (1.0, 1.0)])
def test_object_morphing_lowers_flow_shift_to_three_never_below(start, expected):
    revision = revise(shot_with(flow_shift=start), PLAN, "OBJECT_MORPHING", 2, HERO.seed)
    assert revision.shot.flow_shift == expected
    assert ("flow_shift" in revision.changes) is (start != expected)


@pytest.mark.parametrize("camera", CAMERA_MOVES)
def test_camera_ignored_replaces_detail_with_plain_verb(camera):
    assert set(PLAIN_CAMERA) == set(CAMERA_MOVES)
    shot = shot_with(camera=camera, camera_detail="slow, steady dolly move; wide framing, horizon level")
    revision = revise(shot, PLAN, "CAMERA_IGNORED", 2, HERO.seed)
    assert revision.shot.camera_detail == PLAIN_CAMERA[camera] and revision.shot.camera == camera
    assert set(revision.changes) == {"camera_detail", "seed"}
    assert "static shot" == PLAIN_CAMERA["static"] and "slow push in" == PLAIN_CAMERA["push_in"]


def test_wardrobe_of_every_character_in_the_shot():
    data = sample_plan_dict()
    data["characters"].append({"id": "cat", "name": "Cat", "description": "a grey cat", "wardrobe": ["red collar"]})
    data["shots"][1]["characters"] = ["astronaut", "cat"]
    plan = validate_plan(data)
    revision = revise(plan.shot("shot_02"), plan, "WARDROBE_DRIFT", 2, 2)
    assert revision.shot.prompt == f"{HERO_PROMPT}, {WARDROBE}, red collar"


def test_wardrobe_on_a_shot_without_characters_changes_only_the_seed():
    revision = revise(PLAN.shot("shot_01"), PLAN, "WARDROBE_DRIFT", 2, 1)
    assert set(revision.changes) == {"seed"}


# -- phrases are never repeated -------------------------------------------------

@pytest.mark.parametrize("label", FAILURE_LABELS)
def test_same_label_twice_adds_nothing_new(label):
    first, second = revise_sequence(HERO, PLAN, [label, label])
    if label in ("CHARACTER_DRIFT", "OBJECT_MORPHING"):  # numeric steps keep stepping
        return
    assert set(second.changes) == {"seed"}
    assert (second.shot.prompt, second.shot.negative_prompt) == (first.shot.prompt, first.shot.negative_prompt)


def test_terms_already_in_the_text_are_not_added_again():
    shot = shot_with(negative_prompt="blurry, Crowd, extra people, duplicate subject, walking backwards")
    extras = revise(shot, PLAN, "EXTRAS_INVADE_FRAME", 2, HERO.seed).shot.negative_prompt
    assert extras == "blurry, Crowd, extra people, duplicate subject, walking backwards, bystanders, background figures"
    # whole words only: "crowded" is not "crowd"
    crowded = revise(shot_with(negative_prompt="crowded"), PLAN, "EXTRAS_INVADE_FRAME", 2, HERO.seed)
    assert crowded.shot.negative_prompt == "crowded, crowd, extra people, bystanders, background figures"


def test_sentence_prompts_are_continued_not_comma_spliced():
    shot = shot_with(prompt="Medium shot of the astronaut. Dusk light.")
    revision = revise(shot, PLAN, "NEON_GLOW_LEAK", 2, HERO.seed)
    assert revision.shot.prompt == "Medium shot of the astronaut. Dusk light. neutral white balance, natural skin tones"


def test_additions_that_do_not_fit_are_skipped_and_the_shot_stays_valid():
    full = shot_with(prompt="a" * PROMPT_MAX_CHARS, negative_prompt="b" * PROMPT_MAX_CHARS)
    revision = revise(full, PLAN, "HAND_FINGER_ARTIFACT", 2, HERO.seed)
    assert set(revision.changes) == {"seed"}
    nearly = shot_with(prompt="a" * (PROMPT_MAX_CHARS - 20))
    revision = revise(nearly, PLAN, "HAND_FINGER_ARTIFACT", 2, HERO.seed)
    assert revision.shot.prompt == "a" * (PROMPT_MAX_CHARS - 20) + ", five fingers"  # the longer term did not fit
    assert len(revision.shot.prompt) <= PROMPT_MAX_CHARS


# -- errors ----------------------------------------------------------------------

@pytest.mark.parametrize("label", ["BLURRY", "character_drift", ""])
def test_unknown_label_raises_naming_it_and_the_ten(label):
    with pytest.raises(ValueError) as info:
        revise(HERO, PLAN, label, 2, HERO.seed)
    message = str(info.value)
    assert repr(label) in message and all(known in message for known in FAILURE_LABELS)


@pytest.mark.parametrize("attempt", [1, 0, -3])
def test_revision_is_for_attempt_two_or_later(attempt):
    with pytest.raises(ValueError, match="attempt"):
        revise(HERO, PLAN, None, attempt, HERO.seed)


# -- seeds -------------------------------------------------------------------------

@given(st.integers(0, MAX_SEED))
def test_attempt_seeds_are_deterministic_distinct_and_in_range(seed):
    seeds = [attempt_seed(seed, attempt) for attempt in range(1, 7)]
    assert seeds[0] == seed
    assert len(set(seeds)) == 6
    assert all(0 <= s <= MAX_SEED for s in seeds)
    assert seeds == [attempt_seed(seed, attempt) for attempt in range(1, 7)]


@pytest.mark.parametrize("seed, attempt", [(-1, 2), (2**63, 2), (5, 0)])
def test_attempt_seed_rejects_bad_input(seed, attempt):
    with pytest.raises(ValueError):
        attempt_seed(seed, attempt)


# -- sequences -------------------------------------------------------------------------

def test_sequence_builds_each_attempt_on_the_one_before():
    labels = ["CHARACTER_DRIFT", None, "OBJECT_MORPHING", "CHARACTER_DRIFT"]
    revisions = revise_sequence(HERO, PLAN, labels)
    assert [r.label for r in revisions] == labels
    assert [r.shot.seed for r in revisions] == [attempt_seed(HERO.seed, a) for a in (2, 3, 4, 5)]
    assert revisions[0].changes["ref_weight"] == (0.75, pytest.approx(0.9))
    assert revisions[2].changes["flow_shift"] == (5.0, 4.0)
    assert revisions[3].changes["ref_weight"] == (pytest.approx(0.9), 1.0)
    assert revisions[3].shot.flow_shift == 4.0  # earlier changes carry forward
    for before, after in itertools.pairwise(revisions):
        assert after.changes["seed"][0] == before.shot.seed


PHRASE_TERMS = {
    "prompt": [t for p in PROMPT_PHRASES.values() for t in terms(p)] + terms(WARDROBE),
    "negative_prompt": [t for p in NEGATIVE_PHRASES.values() for t in terms(p)],
}


@settings(max_examples=150, deadline=None)
@given(
    labels=st.lists(st.sampled_from(LABELS_OR_NONE), max_size=12),
    ref_weight=st.floats(0.0, 1.0),
    flow_shift=st.floats(1.0, 8.0),
    seed=st.integers(0, MAX_SEED),
    prompt_pad=st.integers(0, PROMPT_MAX_CHARS),
    negative_pad=st.integers(0, PROMPT_MAX_CHARS),
)
def test_any_label_sequence_stays_in_bounds(labels, ref_weight, flow_shift, seed, prompt_pad, negative_pad):
    start = shot_with(ref_weight=ref_weight, flow_shift=flow_shift, seed=seed,
                      prompt=(HERO_PROMPT + " " + "x" * prompt_pad)[:PROMPT_MAX_CHARS],
                      negative_prompt="y" * negative_pad)
    revisions = revise_sequence(start, PLAN, labels)
    seeds = [start.seed]
    previous = start
    for revision in revisions:
        shot = revision.shot
        assert Shot.model_validate(shot.model_dump()) == shot
        assert set(revision.changes) - {"seed"} <= set(EXPECTED[revision.label] if revision.label else ())
        assert revision.rerender_keyframe is (revision.label in IMAGE_LABELS)
        # ref_weight only rises, within [0, 1]
        assert previous.ref_weight <= shot.ref_weight <= 1.0 and shot.ref_weight >= 0.0
        # flow shift: only falls, never above 8.0, never below 3.0 by our doing
        assert shot.flow_shift <= previous.flow_shift <= MAX_FLOW_SHIFT
        assert shot.flow_shift >= min(start.flow_shift, 3.0)
        for field, field_terms in PHRASE_TERMS.items():
            text = getattr(shot, field)
            assert len(text) <= PROMPT_MAX_CHARS
            for term in field_terms:
                assert occurrences(text, term) <= 1, (field, term)
        seeds.append(shot.seed)
        previous = shot
    assert len(set(seeds)) == len(seeds)
