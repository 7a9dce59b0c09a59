"""Every chosen checkpoint is checked against its published layout before any model loads: all problems
in one message, each with the command that fixes it; a hub id is never downloaded unless allowed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import huggingface_hub
import pytest
from cinereel.model_loaders import model_layouts
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.residency import RESIDENCY
from cinereel.nodes.pipeline.cli import main
from cinereel.nodes.pipeline.preflight import checkpoint_problems
from cinereel_testkit import load_test_module, workflow_to_prompt

SENTENCE = "A lone astronaut walks through a neon-lit Tokyo alley at dusk"
HUB_IDS = {"llm": "Qwen/Qwen3.5-35B-A3B", "keyframes": "black-forest-labs/FLUX.2-klein-4B",
           "motion": "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "voice": "hexgrad/Kokoro-82M",
           "music": "ACE-Step/acestep-v15-xl-turbo-diffusers"}


@pytest.fixture
def headless(monkeypatch):
    """A CLI process: no ComfyUI loaded (earlier executor tests in this process loaded its folder_paths)."""
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_the_layouts_name_their_source_and_every_component_of_each_pipeline():
    from diffusers import AceStepPipeline, Flux2KleinPipeline, WanImageToVideoPipeline

    data = json.loads(model_layouts.LAYOUTS_FILE.read_text(encoding="utf-8"))
    assert set(model_layouts.layouts()) == {"flux2-klein", "wan2.2-i2v", "acestep", "qwen3.5", "kokoro"}
    assert all("revision" in spec and "/" in spec["repo"] for name, spec in data.items() if name[0] != "_")
    for family, pipeline in (("flux2-klein", Flux2KleinPipeline), ("wan2.2-i2v", WanImageToVideoPipeline),
                             ("acestep", AceStepPipeline)):
        spec = model_layouts.layout(family)
        assert spec.pipeline == pipeline.__name__
        signature = set(pipeline._get_signature_keys(pipeline)[0])
        assert {c.name for c in spec.components} == signature - {"is_distilled", "boundary_ratio",
                                                                  "expand_timesteps"}
        assert {c.name for c in spec.components if c.optional} <= set(pipeline._optional_components)
    acestep = model_layouts.layout("acestep")
    assert acestep.component("audio_tokenizer").kind == "diffusers-model"  # a model, not a text tokenizer


def test_the_tiny_fixtures_carry_the_published_layouts():
    checkpoints = {"flux2-klein": ("tiny_flux2", "tiny_flux2_checkpoint"), "wan2.2-i2v": ("tiny_wan",
                                                                                         "tiny_wan_checkpoint"),
                   "acestep": ("tiny_acestep", "tiny_acestep_checkpoint"),
                   "qwen3.5": ("tiny_qwen", "tiny_qwen_checkpoint"), "kokoro": ("tiny_kokoro", "tiny_kokoro_checkpoint")}
    for family, (module, function) in checkpoints.items():
        folder = getattr(load_test_module(module), function)()
        assert model_layouts.missing_files(family, folder) == [], family
    base = load_test_module("tiny_acestep").tiny_acestep_base_checkpoint()
    assert model_layouts.missing_files("acestep", base) == []


def test_every_uncached_hub_id_is_one_line_with_its_download_command(empty_hub_cache, headless, tmp_path,
                                                                     capsys):
    mark = RESIDENCY.mark()
    stages = [arg for stage, repo in HUB_IDS.items() for arg in (f"--{stage}", repo)]
    assert main([SENTENCE, *stages, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cinereel: error: 5 problems: ") and err.count("\n") == 1, err
    for stage, repo in HUB_IDS.items():
        assert f"{stage}: {repo} is not downloaded; run `hf download {repo}`" in err
    assert not (tmp_path / "out").exists() and RESIDENCY.log_since(mark) == []
    assert list(empty_hub_cache.iterdir()) == [], "nothing was fetched into the cache"


def test_incomplete_folders_list_every_missing_file_and_how_to_complete_them(tmp_path, capsys):
    acestep = shutil.copytree(load_test_module("tiny_acestep").tiny_acestep_base_checkpoint(), tmp_path / "ace")
    for weights in (acestep / "audio_token_detokenizer").glob("*.safetensors"):
        weights.unlink()
    shutil.rmtree(acestep / "tokenizer")
    wan = shutil.copytree(load_test_module("tiny_wan").tiny_wan_checkpoint(), tmp_path / "wan")
    (wan / "model_index.json").unlink()
    shutil.rmtree(wan / "transformer_2")
    assert main([SENTENCE, "--music", str(acestep), "--motion", str(wan), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cinereel: error: 2 problems: "), err
    assert (f"music: the ACE-Step checkpoint in {acestep} is incomplete: missing audio_token_detokenizer/"
            "diffusion_pytorch_model.safetensors (or its shards with diffusion_pytorch_model.safetensors.index.json), "
            "tokenizer/tokenizer_config.json, tokenizer/tokenizer.json (or vocab.json + merges.txt, or spiece.model); "
            f"complete it with `hf download ACE-Step/acestep-v15-xl-turbo-diffusers --local-dir {acestep}`") in err
    # Without model_index.json the published layout still says which components must be there.
    assert (f"motion: the Wan2.2 I2V checkpoint in {wan} is incomplete: missing model_index.json, "
            "transformer_2/config.json, transformer_2/diffusion_pytorch_model.safetensors") in err


def test_allow_download_lets_an_uncached_hub_id_through_and_downloads_only_the_layout(empty_hub_cache, monkeypatch):
    handle = ModelHandle("acestep", HUB_IDS["music"])
    assert checkpoint_problems({"music": handle}) != []
    allowed = ModelHandle("acestep", HUB_IDS["music"], options={"allow_download": True})
    assert checkpoint_problems({"music": allowed}) == []
    calls = []
    tiny = load_test_module("tiny_acestep").tiny_acestep_checkpoint()

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(tiny)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert model_layouts.resolve("acestep", HUB_IDS["music"], allow_download=True) == tiny
    (cached, cached_args), (fetched, fetched_args) = calls
    assert cached == fetched == HUB_IDS["music"] and cached_args["local_files_only"] is True
    assert "local_files_only" not in fetched_args and "*.safetensors" in fetched_args["allow_patterns"]
    assert not any(pattern.endswith((".bin", ".ckpt")) for pattern in fetched_args["allow_patterns"])


def test_the_handle_key_is_unchanged_when_downloads_stay_off():
    from cinereel.nodes.pipeline.backends import make_handle

    off = make_handle("music", "ACE-Step/acestep-v15-xl-turbo-diffusers", allow_download=False)
    assert "allow_download" not in dict(off.options)
    on = make_handle("music", "ACE-Step/acestep-v15-xl-turbo-diffusers", allow_download=True)
    assert on.option("allow_download") is True


@pytest.mark.comfy
def test_the_720p_workflow_with_no_checkpoints_fails_at_the_director_naming_every_one(comfy, empty_hub_cache,
                                                                                      pack_root):
    workflow = json.loads((pack_root / "workflows" / "CineReel 720p reel (real models, GPU).json").read_text(encoding="utf-8"))
    prompt = workflow_to_prompt(workflow, comfy.nodes.NODE_CLASS_MAPPINGS)
    director = next(node for node in prompt.values() if node["class_type"] == "CineReelDirector")
    director["inputs"]["run_id"] = "no-checkpoints"
    mark = RESIDENCY.mark()
    executor = comfy.run(prompt)
    assert not executor.success
    errors = [data for kind, data in executor.status_messages if kind == "execution_error"]
    assert len(errors) == 1 and errors[0]["node_type"] == "CineReelDirector", errors
    message = errors[0]["exception_message"]
    assert message.startswith("5 problems: ") and "\n" not in message, message
    models = Path(comfy.folder_paths.get_folder_paths("cinereel")[0])
    for stage, repo in HUB_IDS.items():
        name = repo.split("/")[1]
        assert (f"{stage}: {repo} is not downloaded; run `hf download {repo} --local-dir {models / name}` and "
                f"choose 'folder: {name}'") in message
    assert RESIDENCY.log_since(mark) == [], "no model loaded"
    assert not (comfy.output_dir / "cinereel" / "no-checkpoints").exists()


def test_each_tiny_checkpoint_belongs_to_its_own_family_only():
    checkpoints = {"flux2-klein": ("tiny_flux2", "tiny_flux2_checkpoint"),
                   "wan2.2-i2v": ("tiny_wan", "tiny_wan_checkpoint"),
                   "acestep": ("tiny_acestep", "tiny_acestep_checkpoint"),
                   "qwen3.5": ("tiny_qwen", "tiny_qwen_checkpoint"),
                   "kokoro": ("tiny_kokoro", "tiny_kokoro_checkpoint")}
    folders = {family: getattr(load_test_module(module), function)()
               for family, (module, function) in checkpoints.items()}
    for family, folder in folders.items():
        assert [f for f in folders if model_layouts.belongs_to(f, folder)] == [family]
