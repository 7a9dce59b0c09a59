"""The pack in a current ComfyUI (0.3.64) server, through its HTTP API, as a user's browser drives it.

Skips, saying how to enable it, when there is no ComfyUI source (``$COMFYUI_PATH`` or the vendored
archive) or its requirements are not installed in this venv; CI installs them (``.ci/run``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import cinereel
import pytest
from cinereel_testkit import PACK_ROOT, load_test_module

current = load_test_module("comfy_current")

pytestmark = [pytest.mark.comfy, pytest.mark.slow, pytest.mark.xdist_group("comfyui-server")]  # one server

PREVIEW = PACK_ROOT / "workflows" / "CineReel preview reel (CPU, no weights).json"


@pytest.fixture(scope="session")
def server(comfy_server):
    """The session's ComfyUI server (tests/conftest.py; shared with tests/test_browser.py)."""
    return comfy_server


@pytest.fixture(scope="session")
def object_info(server) -> dict:
    return server.get("/object_info")


@pytest.fixture(scope="session")
def preview_prompt(object_info) -> dict:
    return current.workflow_to_prompt(json.loads(PREVIEW.read_text(encoding="utf-8")), object_info)


@pytest.fixture(scope="session")
def preview_run(server, preview_prompt) -> dict:
    entry = server.run(preview_prompt)
    assert entry["status"]["status_str"] == "success", current.failure_of(entry)
    return entry


def node_id(prompt: dict, class_type: str) -> str:
    (found,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return found


def test_every_node_is_listed_with_a_tooltip_on_every_input(object_info):
    for node, display in cinereel.NODE_DISPLAY_NAME_MAPPINGS.items():
        assert node in object_info, f"{node} is not in /object_info"
        info = object_info[node]
        assert info["display_name"] == display and info["category"].startswith("CineReel")
        assert info["python_module"] == f"custom_nodes.{current.PACK_FOLDER}", info["python_module"]
        inputs = [(s, name, decl) for s in ("required", "optional") for name, decl in info["input"].get(s, {}).items()]
        assert inputs, node
        for section, name, decl in inputs:
            assert len(decl) > 1 and decl[1].get("tooltip", "").strip(), f"{node}.{name} ({section}) has no tooltip"


def test_the_shipped_workflows_are_its_templates(server):
    shipped = sorted(p.stem for p in (PACK_ROOT / "workflows").glob("*.json"))
    assert shipped and PREVIEW.stem in shipped
    templates = server.get("/api/workflow_templates")
    assert sorted(templates.get(current.PACK_FOLDER, [])) == shipped, templates
    for name in shipped:  # names with spaces and parentheses, as the template browser requests them
        served = server.get(f"/api/workflow_templates/{current.PACK_FOLDER}/{quote(name)}.json")
        assert served == json.loads((PACK_ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8"))
        status, thumbnail = server.request("GET", f"/api/workflow_templates/{current.PACK_FOLDER}/{quote(name)}.jpg")
        assert status == 200 and thumbnail[:3] == b"\xff\xd8\xff", (name, status)  # a JPEG beside it


def test_the_preview_workflow_makes_a_reel(server, preview_prompt, preview_run):
    from cinereel.nodes.pipeline.video import probe

    assert preview_prompt[node_id(preview_prompt, "CineReelDirector")]["inputs"]["sentence"].startswith("A lone")
    outputs = preview_run["outputs"]
    video = outputs[node_id(preview_prompt, "CineReelAssemble")]["cinereel_video"][0]
    reel = server.output / video["subfolder"] / video["filename"]
    assert reel.is_file() and reel.name == "reel.mp4", reel
    info = probe(reel)
    assert (info["width"], info["height"], info["video_codec"], info["audio_codec"]) == (1280, 720, "h264", "aac")
    assert info["video_duration"] == pytest.approx(30.0, abs=0.1) and info["duration"] == pytest.approx(30.0, abs=0.2)
    assert current.decode_errors(reel) == ""
    assert len(outputs[node_id(preview_prompt, "CineReelCriticGate")]["cinereel_scores"]) == 6
    (still,) = outputs[node_id(preview_prompt, "PreviewImage")]["images"]
    assert still["type"] == "temp" and still["filename"].endswith(".png")


def test_reel_adapters_feed_the_core_save_nodes(server, preview_prompt, preview_run):
    """REEL to Image / Audio / Video into core Save Image / Save Audio / Save Video, after the preview workflow
    (its nodes are cached, so only these run)."""
    from cinereel.nodes.pipeline.video import probe, read_audio
    from PIL import Image

    reel = [node_id(preview_prompt, "CineReelAssemble"), 0]
    prompt = dict(preview_prompt)
    prompt.update({
        "a1": {"class_type": "CineReelToImage", "inputs": {"reel": reel, "kind": "keyframe", "shot": 2}},
        "a2": {"class_type": "SaveImage", "inputs": {"images": ["a1", 0], "filename_prefix": "adapters/still"}},
        "b1": {"class_type": "CineReelToAudio", "inputs": {"reel": reel, "kind": "mix"}},
        "b2": {"class_type": "SaveAudio", "inputs": {"audio": ["b1", 0], "filename_prefix": "adapters/mix"}},
        "c1": {"class_type": "CineReelToVideo", "inputs": {"reel": reel}},
        "c2": {"class_type": "SaveVideo", "inputs": {"video": ["c1", 0], "filename_prefix": "adapters/reel",
                                                     "format": "auto", "codec": "auto"}},
    })
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", current.failure_of(entry)
    files = current.saved_files(entry, server.output)

    (still,) = files["a2"]
    with Image.open(still) as image:
        assert image.format == "PNG" and image.size == (1280, 720)
    (mix,) = files["b2"]
    assert mix.suffix == ".flac" and current.decode_errors(mix) == ""
    samples, rate = read_audio(mix)
    assert samples.shape[0] / rate == pytest.approx(30.0, abs=0.1) and abs(samples).max() > 0.01
    (video,) = files["c2"]
    info = probe(video)
    assert video.suffix == ".mp4" and current.decode_errors(video) == ""
    assert (info["width"], info["height"], info["video_codec"]) == (1280, 720, "h264") and info["audio_codec"]
    assert info["video_duration"] == pytest.approx(30.0, abs=0.1)


def test_free_memory_unloads_the_resident_model(server, preview_run):
    """ComfyUI's Unload Models / Free Memory (POST /free) evicts CineReel's resident model too."""
    before = server.get("/cinereel/residency")
    assert before["resident"] == "preview-music:preview", before["resident"]  # the preview run's last load
    status, body = server.post("/free", {"unload_models": True, "free_memory": True})
    assert status == 200, body
    deadline = time.monotonic() + 60
    now = before
    while now["resident"] is not None and time.monotonic() < deadline:
        server.check_alive()
        time.sleep(0.5)
        now = server.get("/cinereel/residency")
    assert now["resident"] is None, now["log"][-3:]
    last = now["log"][-1]
    assert (last["event"], last["family"], last["reason"]) == ("evict", "preview-music", "ComfyUI unloaded models")
    assert not last["still_referenced"]


def test_the_server_log_shows_no_import_failure(server, object_info):
    log = Path(server.log_path).read_text(encoding="utf-8", errors="replace")
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, server.log_tail(80)


REAL_WORKFLOW = PACK_ROOT / "workflows" / "CineReel 720p reel (real models, GPU).json"
HUB_IDS = {"llm": "Qwen/Qwen3.5-35B-A3B", "keyframes": "black-forest-labs/FLUX.2-klein-4B",
           "motion": "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "voice": "hexgrad/Kokoro-82M",
           "music": "ACE-Step/acestep-v15-xl-turbo-diffusers"}


def test_the_720p_workflow_without_checkpoints_fails_at_once_naming_every_one(server, object_info):
    """Queued with no checkpoint anywhere: one short error, from the Director before it plans, naming all five
    models, where to put each and the command that gets it; nothing loaded, no run folder."""
    prompt = current.workflow_to_prompt(json.loads(REAL_WORKFLOW.read_text(encoding="utf-8")), object_info)
    prompt[node_id(prompt, "CineReelDirector")]["inputs"]["run_id"] = "no-checkpoints-0364"
    loads_before = [e for e in server.get("/cinereel/residency")["log"] if e["event"] == "load"]
    entry = server.run(prompt, limit_s=120)
    assert entry["status"]["status_str"] == "error"
    (error,) = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    assert error["node_type"] == "CineReelDirector"
    message = error["exception_message"].rstrip("\n")  # ComfyUI ends it with a newline
    assert message.startswith("5 problems: ") and "\n" not in message and len(message) < 2000, message
    models = server.base / "models" / "cinereel"
    for stage, repo in HUB_IDS.items():
        name = repo.split("/")[1]
        assert (f"{stage}: {repo} is not downloaded; run `hf download {repo} --local-dir {models / name}` and "
                f"choose 'folder: {name}'") in message
    assert [e for e in server.get("/cinereel/residency")["log"] if e["event"] == "load"] == loads_before
    assert not (server.output / "cinereel" / "no-checkpoints-0364").exists()


# What makes a folder a family's, without weights: the loaders decide by model_index.json or config.json.
FAMILY_MARKERS = {
    "CineReelKeyframeLoader": ("FLUX.2-klein-4B", "model_index.json", {"_class_name": "Flux2KleinPipeline"}),
    "CineReelMotionLoader": ("Wan2.2-I2V", "model_index.json", {"_class_name": "WanImageToVideoPipeline"}),
    "CineReelMusicLoader": ("acestep-turbo", "model_index.json", {"_class_name": "AceStepPipeline"}),
    "CineReelLLMLoader": ("Qwen3.5-35B-A3B", "config.json", {"model_type": "qwen3_5_moe"}),
    "CineReelVoiceLoader": ("Kokoro-82M", "config.json", {"istftnet": {}}),
}


def test_each_loader_offers_only_folders_of_its_model_family(server):
    models = server.base / "models" / "cinereel"
    made = []
    try:
        for folder, marker, content in [*FAMILY_MARKERS.values(),
                                        ("sdxl", "model_index.json", {"_class_name": "StableDiffusionXLPipeline"})]:
            (models / folder).mkdir(parents=True)
            (models / folder / marker).write_text(json.dumps(content), encoding="utf-8")
            made.append(models / folder)
        info = server.get("/object_info")
        for loader, (folder, _, _) in FAMILY_MARKERS.items():
            choices = info[loader]["input"]["required"]["backend"][0]
            assert [c for c in choices if c.startswith("folder: ")] == [f"folder: {folder}"], (loader, choices)
    finally:
        for folder in made:
            shutil.rmtree(folder)
