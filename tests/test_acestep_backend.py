"""The ACE-Step music backend, run on a tiny random-weight checkpoint of the real classes.

The checkpoint is loaded from a folder through the same loader and residency
manager as the real one. Nothing may reach the network: a socket guard fails
any test that tries.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cinereel.model_loaders.acestep import (
    INSTRUMENTAL_LYRICS,
    AceStepMusic,
    load_acestep,
    resolve_checkpoint,
)
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.model_layouts import missing_files
from cinereel.model_loaders.residency import ResidencyManager, family
from cinereel.model_loaders.synth import mood_tempo

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tiny_acestep", HERE / "tiny_acestep.py")
tiny_acestep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_acestep)

STEPS = 2
PLAN = {"mood": "mysterious", "locale": "Tokyo", "time_of_day": "dusk"}


@pytest.fixture(scope="module")
def folder() -> Path:
    return tiny_acestep.tiny_acestep_checkpoint()


@pytest.fixture(scope="module")
def music(folder: Path):
    manager = ResidencyManager()
    handle = ModelHandle("acestep", str(folder), dtype="float32", device="cpu", options={"steps": STEPS})
    with manager.use(handle) as model:
        yield model
    manager.evict("end of tests")


@pytest.mark.parametrize(("duration_s", "sample_rate"), [(1.3, 48000), (2.0007, 48000), (1.5, 44100)])
def test_bed_is_stereo_and_exactly_the_requested_length(music: AceStepMusic, duration_s, sample_rate):
    bed = music.compose(PLAN, duration_s, None, seed=3, sample_rate=sample_rate)
    assert music.native_sample_rate == 48000
    assert bed.shape == (round(duration_s * sample_rate), 2) and bed.dtype == np.float32
    assert np.isfinite(bed).all() and np.abs(bed).max() > 0
    assert np.abs(bed[-5:]).max() < np.abs(bed).max() * 0.1  # faded out, not cut


def test_same_seed_same_bed_other_seed_other_bed(music: AceStepMusic):
    first = music.compose(PLAN, 1.0, 90.0, seed=11)
    again = music.compose(PLAN, 1.0, 90.0, seed=11)
    other = music.compose(PLAN, 1.0, 90.0, seed=12)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_callback_per_step_and_cancel(music: AceStepMusic):
    steps: list[tuple[int, int]] = []
    music.compose(PLAN, 1.0, None, seed=1, callback=lambda step, total: steps.append((step, total)))
    assert steps == [(1, STEPS), (2, STEPS)]

    class Cancelled(Exception):
        pass

    seen: list[int] = []

    def cancel(step: int, total: int) -> None:
        seen.append(step)
        raise Cancelled

    with pytest.raises(Cancelled):
        music.compose(PLAN, 1.0, None, seed=1, callback=cancel)
    assert seen == [1]


def test_instrumental_prompt_from_plan_and_mood_tempo(music: AceStepMusic, monkeypatch):
    calls: list[dict] = []
    real = music.pipe.__class__.__call__

    def spy(pipe, **kwargs):
        calls.append(kwargs)
        return real(pipe, **kwargs)

    monkeypatch.setattr(music.pipe.__class__, "__call__", spy)
    music.compose(PLAN, 1.0, None, seed=1)
    (kwargs,) = calls
    assert kwargs["lyrics"] == INSTRUMENTAL_LYRICS and kwargs["bpm"] == round(mood_tempo("mysterious"))
    assert all(word in kwargs["prompt"] for word in ("mysterious", "Tokyo", "dusk", "Instrumental"))
    assert kwargs["num_inference_steps"] == STEPS and kwargs["guidance_scale"] == 1.0 and kwargs["shift"] == 3.0


def test_bad_inputs(music: AceStepMusic, folder: Path):
    with pytest.raises(ValueError, match="duration"):
        music.compose(PLAN, 0.0, None, seed=1)
    with pytest.raises(ValueError, match="tempo"):
        music.compose(PLAN, 1.0, 10.0, seed=1)
    with pytest.raises(ValueError, match="steps"):
        load_acestep(ModelHandle("acestep", str(folder), dtype="float32", device="cpu", options={"steps": 0}))


def test_missing_folder_and_files_are_named(tmp_path: Path, folder: Path):
    with pytest.raises(FileNotFoundError, match="no ACE-Step checkpoint at .*nowhere: the folder does not exist"):
        resolve_checkpoint(str(tmp_path / "nowhere"))
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.unlink()
    (broken / "tokenizer" / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"the ACE-Step checkpoint in .*broken is incomplete: missing "
                                                r"tokenizer/tokenizer_config\.json, "
                                                r"transformer/diffusion_pytorch_model\.safetensors \(or its shards"):
        load_acestep(ModelHandle("acestep", str(broken), dtype="float32", device="cpu"))


def test_the_base_and_sft_layout_with_the_audio_tokenizer_loads_and_scores_music(tmp_path: Path):
    folder = tiny_acestep.tiny_acestep_base_checkpoint()
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["audio_tokenizer"] == ["ace_step", "AceStepAudioTokenizer"]
    assert index["audio_token_detokenizer"] == ["ace_step", "AceStepAudioTokenDetokenizer"]
    assert missing_files("acestep", folder) == []
    manager = ResidencyManager()
    with manager.use(ModelHandle("acestep", str(folder), dtype="float32", device="cpu",
                                 options={"steps": STEPS})) as model:
        assert type(model.pipe.audio_tokenizer).__name__ == "AceStepAudioTokenizer"
        bed = model.compose(PLAN, 1.0, None, seed=3)
    manager.evict("end of test")
    assert bed.shape == (48000, 2) and np.isfinite(bed).all() and np.abs(bed).max() > 0
    broken = shutil.copytree(folder, tmp_path / "broken")  # a shipped optional component's weights are checked too
    for weights in (broken / "audio_tokenizer").glob("*.safetensors"):
        weights.unlink()
    assert missing_files("acestep", broken) == [
        "audio_tokenizer/diffusion_pytorch_model.safetensors (or its shards with "
        "diffusion_pytorch_model.safetensors.index.json)"]


def test_hub_id_not_in_the_cache_fails_fast_without_downloading(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"is not downloaded; run `hf download ACE-Step/"):
        resolve_checkpoint("ACE-Step/acestep-v15-xl-turbo-diffusers")


def test_registered_family():
    assert family("acestep").load is load_acestep
