"""The Kokoro voice backend, run on a Kokoro-82M folder with random weights (the real architecture).

The folder is loaded through the same loader and residency manager as the
real checkpoint. Nothing may reach the network: a socket guard fails any test
that tries. The fixture's duration head speaks at about the pace of real speech.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cinereel.model_loaders.handles import ModelHandle
from cinereel.model_loaders.kokoro_tts import (
    DEFAULT_VOICES,
    SAMPLE_RATE,
    G2PUnavailable,
    KokoroVoice,
    build_pipeline,
    load_kokoro,
    resolve_checkpoint,
    rough_tag,
)
from cinereel.model_loaders.residency import ResidencyManager, family
from cinereel_testkit import PACK_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tiny_kokoro", HERE / "tiny_kokoro.py")
tiny_kokoro = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_kokoro)

LINES = {
    "en-US": "The city sleeps, and she walks on!",
    "en-GB": "Good evening, London.",
    "es": "La ciudad duerme.",
    "fr": "La ville dort.",
    "hi": "शहर सो रहा है।",
    "it": "La città dorme.",
    "ja": "夜の東京。",
    "pt-BR": "A cidade dorme.",
    "zh": "夜晚的东京。",
}


# -- no network ------------------------------------------------------------------

# -- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder() -> Path:
    return tiny_kokoro.tiny_kokoro_checkpoint()


@pytest.fixture(scope="module")
def voice(folder: Path):
    manager = ResidencyManager()
    with manager.use(ModelHandle("kokoro", str(folder), dtype="float32", device="cpu")) as model:
        yield model
    manager.evict("end of tests")


# -- speech ----------------------------------------------------------------------

@pytest.mark.parametrize("language", list(LINES))
def test_each_kokoro_language_speaks_offline(voice: KokoroVoice, language: str):
    assert voice.speaks(language)
    audio, sr = voice.synthesize(LINES[language], language)
    assert sr == SAMPLE_RATE == 24000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size > 0.05 * sr and np.isfinite(audio).all() and np.abs(audio).max() > 0


@pytest.mark.parametrize("language", ["de", "ko"])
def test_languages_kokoro_cannot_speak_are_refused(voice: KokoroVoice, language: str):
    assert not voice.speaks(language)
    with pytest.raises(ValueError, match="Kokoro does not speak"):
        voice.synthesize("Hallo", language)


def test_same_inputs_give_the_same_samples(voice: KokoroVoice):
    first, _ = voice.synthesize(LINES["en-US"], "en-US")
    second, _ = voice.synthesize(LINES["en-US"], "en-US")
    np.testing.assert_array_equal(first, second)


def test_higher_speed_is_shorter(voice: KokoroVoice):
    slower, _ = voice.synthesize(LINES["es"], "es", speed=1.0)
    faster, _ = voice.synthesize(LINES["es"], "es", speed=1.5)
    assert faster.size < 0.75 * slower.size


def test_default_voices_and_voice_choice(voice: KokoroVoice):
    assert {lang: voice.default_voice(lang) for lang in LINES} == DEFAULT_VOICES
    assert voice.default_voice("en") == "af_heart"  # aliases are normalised
    own, _ = voice.synthesize(LINES["fr"], "fr", voice="ff_siwis")
    blend, _ = voice.synthesize(LINES["fr"], "fr", voice="ff_siwis,bf_emma")
    assert blend.size > 0 and not np.array_equal(own, blend)
    with pytest.raises(ValueError, match="no Kokoro voice 'af_nobody'.*available: af_heart"):
        voice.synthesize("Hi.", "en-US", voice="af_nobody")
    with pytest.raises(ValueError, match="no Kokoro voice"):
        voice.synthesize("Hi.", "en-US", voice="../../etc/passwd")


def test_bad_speed_and_empty_text(voice: KokoroVoice):
    with pytest.raises(ValueError, match="speed"):
        voice.synthesize("Hi.", "en-US", speed=0.0)
    audio, sr = voice.synthesize(" \n🎬 ", "en-US")
    assert audio.size == 0 and sr == SAMPLE_RATE


# -- grapheme-to-phoneme without network or with missing data ------------------------

def test_english_without_the_spacy_model_never_downloads(voice: KokoroVoice, monkeypatch):
    import spacy
    import spacy.cli

    if spacy.util.is_package("en_core_web_sm"):
        pytest.skip("en_core_web_sm is installed here: misaki uses it")

    def no_download(*args, **kwargs):
        raise AssertionError("spacy.cli.download was called")

    monkeypatch.setattr(spacy.cli, "download", no_download)
    pipeline = build_pipeline("a", voice.model)
    phonemes, tokens = pipeline.g2p("Wait, the city sleeps!")
    assert "," in phonemes and phonemes.rstrip().endswith("!")  # pauses survive without a tagger
    assert [rough_tag(t) for t in (".", "?!", ",", "—", "42", "city")] == [".", ".", ",", ":", "CD", ""]


@pytest.mark.parametrize(("code", "absent", "names"), [
    ("j", ["pyopenjtalk", "fugashi"], "pip install fugashi unidic-lite jaconv mojimoji pyopenjtalk"),
    ("z", ["jieba", "pypinyin"], "pip install jieba pypinyin pypinyin-dict cn2an ordered-set"),
])
def test_missing_g2p_packages_say_what_to_install(voice: KokoroVoice, monkeypatch, code, absent, names):
    import misaki

    for sub in ("ja", "zh", "cutlet"):  # forget misaki's front ends so they are imported again
        monkeypatch.delattr(misaki, sub, raising=False)
        monkeypatch.delitem(sys.modules, f"misaki.{sub}", raising=False)
    for name in absent:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError, as when not installed
    with pytest.raises(G2PUnavailable, match=names.replace("-", r"\-")):
        build_pipeline(code, voice.model)


def test_japanese_uses_no_pyopenjtalk_dictionary(voice: KokoroVoice, monkeypatch):
    import pyopenjtalk

    def no_dictionary(*args, **kwargs):
        raise AssertionError("pyopenjtalk's dictionary was needed")

    monkeypatch.setattr(pyopenjtalk, "run_frontend", no_dictionary)
    monkeypatch.setattr(pyopenjtalk, "_lazy_init", no_dictionary)
    phonemes, _ = build_pipeline("j", voice.model).g2p("夜の東京。")
    assert phonemes


# -- checkpoint ----------------------------------------------------------------------

def test_missing_folder_and_files_are_named(tmp_path: Path, folder: Path):
    with pytest.raises(FileNotFoundError, match="no Kokoro checkpoint at .*nowhere"):
        resolve_checkpoint(str(tmp_path / "nowhere"))
    partial = tmp_path / "partial"
    (partial / "voices").mkdir(parents=True)
    (partial / "config.json").write_text(json.dumps({}))
    with pytest.raises(FileNotFoundError, match=r"the Kokoro checkpoint in .*partial is incomplete: missing "
                                                r"kokoro-v1_0\.pth, voices/\*\.pt \(none found\); complete it with "
                                                r"`hf download hexgrad/Kokoro-82M --local-dir .*partial`"):
        load_kokoro(ModelHandle("kokoro", str(partial), device="cpu"))
    assert resolve_checkpoint(str(folder)) == folder


def test_hub_id_not_in_the_cache_fails_fast_without_downloading(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"is not downloaded; run `hf download hexgrad/Kokoro-82M"):
        resolve_checkpoint("hexgrad/Kokoro-82M")


def test_registered_family_and_cheap_import():
    assert family("kokoro").load is load_kokoro
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('cr', "
            f"{str(PACK_ROOT / '__init__.py')!r}, submodule_search_locations=[{str(PACK_ROOT)!r}]); "
            f"m = importlib.util.module_from_spec(spec); sys.modules['cr'] = m; spec.loader.exec_module(m); "
            f"import cr.model_loaders.kokoro_tts; "
            f"print(sorted(x for x in ('torch', 'kokoro', 'misaki', 'spacy') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
