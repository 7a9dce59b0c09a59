"""The shot editor's client side without a browser: its mirror of the plan schema (js/cinereel_plan.js), which
checks fields as the user types, matches the schema the server validates with; and its plan JSON keeps every
63-bit seed exact through parse, edit and write (run under Node.js where it is installed).

tests/test_browser.py drives the editor, the critic board and the keyframe strip in ComfyUI's real frontend.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from cinereel_testkit import PACK_ROOT

PLAN_JS = PACK_ROOT / "js" / "cinereel_plan.js"
# JSON Schema keyword -> the mirror's name for the same rule
KEYWORDS = {"minLength": "min_length", "maxLength": "max_length", "exclusiveMinimum": "gt", "minimum": "ge",
            "maximum": "le", "minItems": "min_items", "maxItems": "max_items"}


def mirror() -> dict:
    text = PLAN_JS.read_text(encoding="utf-8")
    start = text.index("export const MIRROR = ") + len("export const MIRROR = ")
    return json.loads(text[start:text.index("\n};", start) + 2])


def schema_rules(properties: dict, fields: list[str]) -> dict:
    rules = {}
    for name in fields:
        found = {KEYWORDS[k]: v for k, v in properties[name].items() if k in KEYWORDS}
        rules[name] = found
    return rules


def numbers(rules: dict) -> dict:
    return {field: {k: int(v) if isinstance(v, str) else v for k, v in r.items()} for field, r in rules.items()}


def test_the_editor_checks_the_limits_the_plan_schema_has():
    from cinereel.model_loaders.vocabulary import plan

    schema = plan.plan_json_schema()["$defs"]
    mirrored = mirror()
    assert mirrored["camera_moves"] == list(plan.CAMERA_MOVES)
    assert mirrored["shot_types"] == list(plan.SHOT_TYPES)
    assert mirrored["default_flow_shift"] == plan.DEFAULT_FLOW_SHIFT
    assert (mirrored["max_shots"], mirrored["max_reel_seconds"]) == (plan.MAX_SHOTS, plan.MAX_REEL_SECONDS)
    shot_fields = [f for f in mirrored["shot"]]
    assert numbers(mirrored["shot"]) == schema_rules(schema["Shot"]["properties"], shot_fields)
    character_fields = [f for f in mirrored["character"]]
    assert mirrored["character"] == schema_rules(schema["Character"]["properties"], character_fields)
    # every constrained field the editor shows is mirrored (a new limit in the schema fails here until mirrored)
    editable = {"prompt", "camera_detail", "narration", "duration_s", "flow_shift", "ref_weight", "seed"}
    constrained = {name for name, spec in schema["Shot"]["properties"].items() if set(spec) & set(KEYWORDS)}
    assert editable <= constrained and editable == set(shot_fields)


NODE_SCRIPT = """
import * as plan from %s;
const text = %s;
const parsed = plan.parsePlan(text);
parsed.shots[1].prompt = "edited";
parsed.shots[0].flow_shift = 12;
console.log(JSON.stringify({written: plan.planText(parsed), problems: plan.checkPlan(parsed),
  next: plan.nextShotId(parsed), seed: plan.newSeed(), started: plan.planText(plan.startEdit(plan.parsePlan(text)))}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: the browser tests cover this too")
def test_plan_json_keeps_every_seed_exact_and_checks_as_the_server_does(tmp_path):
    from cinereel.model_loaders.vocabulary.plan import validate_plan
    from cinereel.nodes.pipeline.plan_edits import plan_edit_problems

    data = {"title": "t", "sentence": "s", "locale": "Tokyo", "language": "ja", "mood": "calm", "time_of_day": "dusk",
            "duration_s": 4.0, "characters": [],
            "shots": [{"id": "shot-01", "type": "hero", "duration_s": 2.0, "prompt": "a", "seed": 2**63 - 1},
                      {"id": "shot-02", "type": "broll", "duration_s": 2.0, "prompt": "b", "seed": 2**53 + 1}]}
    text = validate_plan(data).model_dump_json()
    script = tmp_path / "check.mjs"
    script.write_text(NODE_SCRIPT % (json.dumps(PLAN_JS.as_uri()), json.dumps(text)), encoding="utf-8")
    done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    written = json.loads(out["written"])
    assert [s["seed"] for s in written["shots"]] == [2**63 - 1, 2**53 + 1]
    assert written["shots"][1]["prompt"] == "edited"
    server = plan_edit_problems(out["written"], narration=False)
    assert out["problems"] == [{"path": "shots.0.flow_shift", "message": "must be <= 8, got 12"}]
    assert [p["path"] for p in server] == ["shots.0.flow_shift"] and "<= 8" in server[0]["message"]
    assert out["next"] == "shot-03" and 0 <= int(out["seed"]) < 2**63
    # an edit pins the reel's seed (portraits, music) to the first shot's, exactly: a new first-shot seed later
    # re-renders that shot alone
    started = validate_plan(out["started"])
    assert started.reel_seed == 2**63 - 1 and started.whole_reel_seed == validate_plan(text).whole_reel_seed


def test_every_event_the_server_sends_has_a_listener_in_the_browser():
    """A CineReel event without a listener is an "unhandled message" in the frontend's console; the browser test sees
    only the events its runs happen to send."""
    import re

    sent = set()
    for path in [*(PACK_ROOT / "nodes").rglob("*.py"), *(PACK_ROOT / "model_loaders").rglob("*.py")]:
        sent |= set(re.findall(r'send_ui_event\(\s*"(cinereel\.[a-z_]+)"', path.read_text(encoding="utf-8")))
    heard = set()
    for path in (PACK_ROOT / "js").glob("*.js"):
        heard |= set(re.findall(r'api\.addEventListener\(\s*"(cinereel\.[a-z_]+)"', path.read_text(encoding="utf-8")))
    assert {"cinereel.gate", "cinereel.keyframe", "cinereel.plan"} <= sent
    assert sent <= heard, sorted(sent - heard)
