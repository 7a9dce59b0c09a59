"""workflows/CineReel 720p reel (real models, GPU).json, every real backend on tiny checkpoints in a ComfyUI model folder, through
the real executor: the Qwen director plans, one load per model and stage, the critic on the director's
checkpoint, a finished reel."""

from __future__ import annotations

import json

import pytest
from cinereel_testkit import check_full_real_reel, load_test_module, workflow_to_prompt

pytestmark = [pytest.mark.comfy, pytest.mark.reel]

TINY = {  # model-folder name (as a user would name the download) -> builder
    "Qwen3.5-35B-A3B": ("tiny_qwen", "tiny_qwen_checkpoint"),
    "FLUX.2-klein-4B": ("tiny_flux2", "tiny_flux2_checkpoint"),
    "Wan2.2-I2V-A14B-Diffusers": ("tiny_wan", "tiny_wan_checkpoint"),
    "Kokoro-82M": ("tiny_kokoro", "tiny_kokoro_checkpoint"),
    "acestep-v15-xl-turbo-diffusers": ("tiny_acestep", "tiny_acestep_checkpoint"),
}
LOADER_FOLDER = {"CineReelLLMLoader": "Qwen3.5-35B-A3B", "CineReelKeyframeLoader": "FLUX.2-klein-4B",
                 "CineReelMotionLoader": "Wan2.2-I2V-A14B-Diffusers", "CineReelVoiceLoader": "Kokoro-82M",
                 "CineReelMusicLoader": "acestep-v15-xl-turbo-diffusers"}


def test_the_720p_workflow_runs_every_real_backend_on_tiny_checkpoints(comfy, tmp_path, pack_root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = tmp_path / "models-cinereel"
    models.mkdir()
    for name, (module, function) in TINY.items():
        (models / name).symlink_to(getattr(load_test_module(module), function)(), target_is_directory=True)
    comfy.folder_paths.add_model_folder_path("cinereel", str(models))

    workflow = json.loads((pack_root / "workflows" / "CineReel 720p reel (real models, GPU).json").read_text(encoding="utf-8"))
    prompt = workflow_to_prompt(workflow, comfy.nodes.NODE_CLASS_MAPPINGS)
    by_type = {node["class_type"]: (node_id, node["inputs"]) for node_id, node in prompt.items()}
    # The recommended GPU settings, as a CPU user changes them: real folders, float32, no offload, no compile.
    for loader, folder in LOADER_FOLDER.items():
        inputs = by_type[loader][1]
        assert inputs["backend"] != "preview"
        inputs.update(backend=f"folder: {folder}", dtype="float32", device="cpu")
        for name, value in {"offload": "none", "compile_transformer_2": False, "first_block_cache": 0.0,
                            "steps": 2}.items():
            if name in inputs:
                inputs[name] = value
    # A short draft: two 1.5 s shots at 480p, narrated in English (the Qwen director plans it).
    by_type["CineReelDirector"][1].update(duration_s=3.0, shots=2, resolution="480p", language="en-US",
                                          run_id="tiny-720p-workflow")
    # No retries (one load per model and phase); random tiny decoders draw nearly flat frames that the
    # technical check rightly fails, so it is off and the critic model judges every clip.
    by_type["CineReelCriticGate"][1].update(max_retries=0, technical_check=False)
    by_type["CineReelKeyframeGate"][1].update(max_retries=0)  # judges each keyframe once (a real critic: on)

    executor = comfy.run(prompt)
    assert executor.success, [m for m in executor.status_messages if m[0] == "execution_error"]
    run = comfy.output_dir / "cinereel" / "tiny-720p-workflow"
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    check_full_real_reel(report, shots=2, width=832, height=480, frames=48)
    assert (run / "reel.mp4").stat().st_size > 0
    unload_id = by_type["CineReelUnloadModels"][0]
    assert executor.outputs_ui[unload_id]["text"][0].startswith("unloaded ")
