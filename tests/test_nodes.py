"""Every node follows the house rules: registered, described, a tooltip and limits on every input."""

from __future__ import annotations

import cinereel
import pytest

NODES = sorted(cinereel.NODE_CLASS_MAPPINGS.items())
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def all_inputs(cls):
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            yield section, name, decl


@pytest.mark.parametrize("node_id,cls", NODES)
def test_node_is_registered_and_described(node_id, cls):
    assert node_id.startswith("CineReel")
    assert cinereel.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("CineReel")
    assert cls.CATEGORY.startswith("CineReel")
    assert len(getattr(cls, "DESCRIPTION", "")) > 30
    assert callable(getattr(cls, cls.FUNCTION))
    assert len(cls.RETURN_TYPES) == len(getattr(cls, "OUTPUT_TOOLTIPS", ()))


@pytest.mark.parametrize("node_id,cls", NODES)
def test_every_input_has_a_tooltip_and_limits(node_id, cls):
    for section, name, decl in all_inputs(cls):
        kind, options = decl[0], (decl[1] if len(decl) > 1 else {})
        assert len(options.get("tooltip", "")) > 10, f"{node_id}.{name} has no tooltip"
        if type(kind) is str and kind in ("INT", "FLOAT"):  # the wildcard "*" type equals everything
            assert "min" in options and "max" in options and "default" in options, f"{node_id}.{name} unbounded"
            assert options["min"] <= options["default"] <= options["max"]
        if isinstance(kind, list):
            assert options["default"] in kind, f"{node_id}.{name} default not among its choices"


def test_display_names_are_unique():
    names = list(cinereel.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert len(names) == len(set(names))


def test_every_backend_a_loader_offers_has_a_registered_family():
    from cinereel.model_loaders.residency import family
    from cinereel.nodes.pipeline.backends import STAGES

    for stage in STAGES.values():
        for backend in stage.backends:
            assert family(backend.family).name == backend.family, backend
            assert backend.issue == 0, f"{backend.choice} is still a placeholder"


def test_loader_options_reach_only_the_families_they_belong_to():
    from cinereel.nodes.pipeline.backends import make_handle

    qwen = make_handle("llm", "Qwen/Qwen3.5-35B-A3B", base_url="http://127.0.0.1:9/v1", director_prompt="/p.txt")
    assert qwen.option("base_url") is None and qwen.option("director_prompt") == "/p.txt"
    assert qwen.residency == "subprocess"
    server = make_handle("llm", "OpenAI-compatible server", base_url="http://127.0.0.1:9/v1", api_key_env="MY_API_KEY")
    assert server.option("base_url") == "http://127.0.0.1:9/v1" and server.option("api_key_env") == "MY_API_KEY"
    preview = make_handle("keyframes", "preview (storyboard frames)", steps=4, offload="model")
    assert preview.options == (("unload_comfy_models", True),)


def test_preview_loaders_return_handles_without_weights():
    from cinereel.nodes.loaders import NODES

    LLMLoader = NODES["CineReelLLMLoader"][0]

    out = LLMLoader().load("preview (rules + technical critic)", "bfloat16", "auto", "auto", True)
    (handle,) = out["result"]
    assert handle.family == "preview-llm" and handle.residency == "in_process"
    assert handle.option("unload_comfy_models") is True
    # what the browser extension matches to the resident model, to badge the one resident loader
    assert out["ui"] == {"cinereel_handle": [{"key": handle.key, "label": "preview-llm:preview"}]}
    (worker,) = LLMLoader().load("preview (rules + technical critic)", "bfloat16", "cpu", "subprocess", False)["result"]
    assert worker.residency == "subprocess" and worker.key != handle.key


def test_a_checkpoint_folder_runs_where_its_hub_checkpoint_runs(tmp_path):
    from cinereel.nodes.pipeline.backends import STAGES, backend_for_checkpoint, make_handle

    # A Qwen folder goes to a worker subprocess by default, as the hub id does; diffusion folders stay in-process.
    for stage, residency in (("llm", "subprocess"), ("keyframes", "in_process"), ("motion", "in_process")):
        by_folder = make_handle(stage, backend_for_checkpoint(stage, str(tmp_path)))
        by_hub = make_handle(stage, backend_for_checkpoint(stage, STAGES[stage].backends[1].checkpoint))
        assert by_folder.residency == by_hub.residency == residency, stage
        assert by_folder.checkpoint == str(tmp_path.resolve())


def test_a_warning_is_shown_on_the_node_whose_stage_raised_it(tmp_path):
    """Kokoro does not speak German: the Narrate node falls back to eSpeak NG and says so on the node, in the
    REEL's warnings (report.json) too; a stage that adds no warning shows nothing new."""
    from cinereel.model_loaders.rules import DirectorRequest
    from cinereel.nodes.music import ScoreMusicNode
    from cinereel.nodes.pipeline.backends import make_handle
    from cinereel.nodes.pipeline.director import direct
    from cinereel.nodes.pipeline.headless import preview_handles
    from cinereel.nodes.voice import NarrateNode

    handles = preview_handles()
    reel = direct(handles["llm"], DirectorRequest("Ein Astronaut geht nachts durch Berlin", duration_s=2.0, shots=1,
                                                  language="de"), tmp_path)
    kokoro = make_handle("voice", "hexgrad/Kokoro-82M", device="cpu")
    result = NarrateNode().narrate(reel, kokoro, 0.25)
    (warning,) = result["ui"]["text"]
    assert warning.startswith("⚠ ") and "Kokoro does not speak German" in warning
    (out,) = result["result"]
    assert warning[2:] in out.notes["warnings"] and out.notes["narration"]["engine"] == "espeak-ng"
    music = ScoreMusicNode().score(out, handles["music"], 0.0)  # the German warning is not the music stage's
    assert isinstance(music, tuple) and len(music) == 1 and "music" in music[0].artifacts
