"""The shot editor's routes in a current ComfyUI (0.3.64) server, called as the browser calls them.

Shares the session's server with tests/test_comfy_current.py and tests/test_browser.py (one xdist group).
"""

from __future__ import annotations

import json

import pytest
from cinereel_testkit import sample_plan_dict

pytestmark = [pytest.mark.comfy, pytest.mark.slow, pytest.mark.xdist_group("comfyui-server")]


def post(server, body) -> tuple[int, dict]:
    status, raw = server.post("/cinereel/validate_plan", body)
    return status, json.loads(raw)


def test_validate_plan_answers_each_problem_beside_its_field(comfy_server):
    plan = sample_plan_dict()
    plan["shots"][1]["flow_shift"] = 9
    plan["shots"][0]["camera"] = "zoom"
    status, answer = post(comfy_server, {"plan": plan, "voice_engine": "kokoro"})
    assert status == 200
    assert [p["path"] for p in answer["problems"]] == ["shots.0.camera", "shots.1.flow_shift"], answer
    assert answer["problems"][1]["message"] == "must be <= 8, got 9"

    status, answer = post(comfy_server, {"plan": json.dumps(sample_plan_dict()), "voice_engine": None})
    assert (status, answer) == (200, {"problems": []})
    status, raw = comfy_server.request("POST", "/cinereel/validate_plan", None)
    assert status == 400 and b"must be JSON" in raw


def test_plan_rules_give_the_editor_the_schema_and_the_flow_shift_of_each_shot_type(comfy_server):
    rules = comfy_server.get("/cinereel/plan_rules")
    assert rules["flow_shift"] == {"min": 1.0, "max": 8.0, "by_type": {"hero": 5.0, "broll": 8.0,
                                                                       "establishing": 8.0}}
    shot = rules["schema"]["$defs"]["Shot"]["properties"]
    assert shot["locked"]["type"] == "boolean" and "push_in" in rules["camera_moves"]
