"""The real voice backend: Kokoro-82M through kokoro's ``KModel`` and ``KPipeline``.

Registers the model family ``kokoro``. Same interface as the preview
``EspeakVoiceBackend``: ``synthesize(text, language, voice, speed)`` returns mono
float32 samples at Kokoro's 24 kHz (the mix stage resamples).

Nothing is downloaded at run time. The checkpoint is a local folder laid out
like ``hexgrad/Kokoro-82M`` (``config.json``, ``kokoro-v1_0.pth``,
``voices/<name>.pt``) or that hub id, resolved from the local hub cache only.
``KModel`` gets the folder's config and weights, and voices are read from the
folder and handed to ``KPipeline`` as tensors, so kokoro never calls the hub.

Grapheme-to-phoneme (misaki) per language, all offline once installed:

- English (en-US, en-GB): misaki's G2P over spaCy's ``en_core_web_sm`` when that
  package is installed. Otherwise over a blank spaCy English pipeline (no
  part-of-speech tagger; punctuation is tagged by rule so pauses survive),
  because misaki would try to download ``en_core_web_sm`` from the web.
- es, fr, hi, it, pt-BR: eSpeak NG (``espeakng-loader`` + ``phonemizer-fork``).
- ja: misaki's cutlet front end: ``fugashi`` with the ``unidic-lite`` dictionary,
  ``jaconv``, ``mojimoji``; ``pyopenjtalk`` must be importable (misaki imports
  it) but its run-time dictionary download is never triggered.
- zh: ``jieba``, ``pypinyin``, ``pypinyin-dict``, ``cn2an``, ``ordered-set``.

A language whose G2P packages are missing raises ``G2PUnavailable`` naming what
to ``pip install``. Importing this module imports no torch, kokoro or misaki.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import model_layouts
from .checkpoints import resolve_device
from .errors import ModelUnavailable
from .handles import ModelHandle
from .residency import register_family

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger("cinereel.kokoro")

FAMILY = "kokoro"
DEFAULT_CHECKPOINT = "hexgrad/Kokoro-82M"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "kokoro-v1_0.pth"  # KModel.MODEL_NAMES["hexgrad/Kokoro-82M"]
VOICES_DIR = "voices"
SAMPLE_RATE = 24000
MIN_SPEED, MAX_SPEED = 0.25, 50.0  # KModel divides predicted durations by speed
SYNTHESIS_SEED = 0  # the decoder's harmonic source draws random phases and noise

# One voice per language from the repository's voices/ folder (VOICES.md lists all 54).
DEFAULT_VOICES = {
    "en-US": "af_heart",
    "en-GB": "bf_emma",
    "es": "ef_dora",
    "fr": "ff_siwis",
    "hi": "hf_alpha",
    "it": "if_sara",
    "ja": "jf_alpha",
    "pt-BR": "pf_dora",
    "zh": "zf_xiaobei",
}

G2P_PACKAGES = {
    "a": "spacy num2words espeakng-loader phonemizer-fork",
    "b": "spacy num2words espeakng-loader phonemizer-fork",
    "e": "espeakng-loader phonemizer-fork",
    "f": "espeakng-loader phonemizer-fork",
    "h": "espeakng-loader phonemizer-fork",
    "i": "espeakng-loader phonemizer-fork",
    "p": "espeakng-loader phonemizer-fork",
    "j": "fugashi unidic-lite jaconv mojimoji pyopenjtalk",
    "z": "jieba pypinyin pypinyin-dict cn2an ordered-set",
}

_VOICE_NAME = re.compile(r"^[a-z]{2}_[a-z0-9]+$")


class G2PUnavailable(ModelUnavailable):
    """The grapheme-to-phoneme packages (or data) for a language are not installed."""


# -- checkpoint ----------------------------------------------------------------

def resolve_checkpoint(checkpoint: str, allow_download: bool = False) -> Path:
    """A complete Kokoro-82M folder: ``checkpoint`` itself, or a hub id found in the local hub cache."""
    return model_layouts.resolve(FAMILY, checkpoint, allow_download)


# -- languages -----------------------------------------------------------------

def kokoro_code(language: str) -> str | None:
    """Kokoro's one-letter code for a CineReel language, None when Kokoro cannot speak it."""
    from .vocabulary.languages import LANGUAGES, normalize_language

    return LANGUAGES[normalize_language(language)].kokoro


def _english_g2p(british: bool) -> Any:
    """misaki's English G2P that never downloads: the full spaCy model if installed, else a blank pipeline."""
    import spacy
    from misaki import en, espeak

    fallback = espeak.EspeakFallback(british=british)
    if spacy.util.is_package("en_core_web_sm"):
        return en.G2P(trf=False, british=british, fallback=fallback, unk="")
    log.warning("spaCy's en_core_web_sm is not installed; English is phonemised without part-of-speech tags "
                "(some heteronyms may be misread). Install it with: python -m spacy download en_core_web_sm")
    return _blank_g2p_class()(british=british, fallback=fallback)


# Penn Treebank tags that misaki turns into pauses and quotes; a blank spaCy pipeline tags nothing.
_PUNCT_TAGS = {".": ".", "!": ".", "?": ".", ",": ",", ":": ":", ";": ":", "—": ":", "–": ":", "-": ":",
               "…": ":", "(": "-LRB-", ")": "-RRB-", "“": "``", "”": "''", '"': '""', "$": "$", "#": "#"}


def rough_tag(text: str) -> str:
    """A Penn Treebank tag for punctuation and numbers; '' for words (no tagger)."""
    if text in _PUNCT_TAGS:
        return _PUNCT_TAGS[text]
    if text and all(ch in ".!?" for ch in text):
        return "."
    if text and set(text) <= set("…."):
        return ":"
    if re.fullmatch(r"[+-]?\d[\d,]*(\.\d+)?", text):
        return "CD"
    return ""


@functools.cache
def _blank_g2p_class() -> type:
    import spacy
    from misaki import en

    class BlankSpacyG2P(en.G2P):
        """misaki's G2P over ``spacy.blank("en")``: same lexicon and rules, rule-based punctuation tags."""

        def __init__(self, british: bool, fallback: Any) -> None:  # noqa: D107 - skips en.G2P's model download
            self.version = None
            self.british = british
            self.nlp = spacy.blank("en")
            self.lexicon = en.Lexicon(british)
            self.fallback = fallback
            self.unk = ""

        def tokenize(self, text: str, tokens: Any, features: Any) -> list[Any]:
            mtokens = super().tokenize(text, tokens, features)
            for token in mtokens:
                token.tag = token.tag or rough_tag(token.text)
            return mtokens

    return BlankSpacyG2P


def build_pipeline(code: str, model: Any) -> Any:
    """A ``KPipeline`` for Kokoro language ``code`` on ``model`` whose G2P runs offline."""
    try:
        return _build_pipeline(code, model)
    except ImportError as err:
        raise G2PUnavailable(
            f"Kokoro's phonemiser for language code {code!r} is not installed ({err}). "
            f"Install it with: pip install {G2P_PACKAGES[code]}") from err
    except RuntimeError as err:
        if code != "j" or "mecab" not in str(err).lower():
            raise
        raise G2PUnavailable(f"Japanese needs a MeCab dictionary for fugashi ({err}). Install it with: "
                             f"pip install {G2P_PACKAGES['j']}") from err


def _build_pipeline(code: str, model: Any) -> Any:
    from kokoro import KPipeline

    if code not in "ab":
        pipeline = KPipeline(lang_code=code, repo_id=DEFAULT_CHECKPOINT, model=model)
        if code == "j":
            pipeline.g2p("テスト")  # loads fugashi's dictionary now, so a missing one fails at load time
        return pipeline
    g2p = _english_g2p(british=code == "b")
    # KPipeline builds misaki's English G2P itself, which downloads en_core_web_sm when it is missing.
    # Build it for an eSpeak language instead, then give it the English code and the offline G2P.
    pipeline = KPipeline(lang_code="e", repo_id=DEFAULT_CHECKPOINT, model=model)
    pipeline.lang_code, pipeline.g2p = code, g2p
    return pipeline


# -- the backend -----------------------------------------------------------------

class KokoroVoice:
    """Kokoro-82M speaking the nine languages it was trained on; thread-safe, deterministic."""

    engine = "kokoro"

    def __init__(self, model: Any, folder: Path) -> None:
        self.model = model
        self.folder = folder
        self._pipelines: dict[str, Any] = {}
        self._voices: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def speaks(self, language: str) -> bool:
        try:
            return kokoro_code(language) is not None
        except ValueError:
            return False

    def default_voice(self, language: str) -> str:
        from .vocabulary.languages import normalize_language

        self._code(language)
        return DEFAULT_VOICES[normalize_language(language)]

    def available_voices(self) -> list[str]:
        return sorted(path.stem for path in (self.folder / VOICES_DIR).glob("*.pt"))

    def synthesize(self, text: str, language: str, voice: str | None = None,
                   speed: float = 1.0) -> tuple["np.ndarray", int]:
        """Mono float32 samples at 24 kHz; the same inputs always give the same samples.

        ``voice`` is a voice name from the checkpoint's voices/ folder, or several
        joined by commas (their style vectors are averaged); None or "" picks the
        language's default. Text with nothing speakable gives an empty array.
        """
        import numpy as np

        from .espeak import speakable_text

        code = self._code(language)
        speed = _checked_speed(speed)
        spoken = speakable_text(text or "")
        if not spoken:
            return np.zeros(0, dtype=np.float32), SAMPLE_RATE
        with self._lock:
            pack = self._voice_pack(voice or self.default_voice(language))
            pipeline = self._pipeline(code)
            audio = self._run(pipeline, spoken, pack, speed)
        return audio, SAMPLE_RATE

    def close(self) -> None:
        with self._lock:
            self._pipelines.clear()
            self._voices.clear()
            self.model = None

    # -- internals ---------------------------------------------------------
    def _code(self, language: str) -> str:
        code = kokoro_code(language)
        if code is None:
            raise ValueError(f"Kokoro does not speak {language!r}; it speaks {', '.join(DEFAULT_VOICES)} "
                             f"(use eSpeak NG for other languages)")
        return code

    def _pipeline(self, code: str) -> Any:
        if code not in self._pipelines:
            self._pipelines[code] = build_pipeline(code, self.model)
        return self._pipelines[code]

    def _voice_pack(self, voice: str) -> "torch.Tensor":
        if voice not in self._voices:
            import torch

            packs = [self._load_voice(name.strip()) for name in voice.split(",")]
            self._voices[voice] = packs[0] if len(packs) == 1 else torch.mean(torch.stack(packs), dim=0)
        return self._voices[voice]

    def _load_voice(self, name: str) -> "torch.Tensor":
        import torch

        path = self.folder / VOICES_DIR / f"{name}.pt"
        if not _VOICE_NAME.match(name) or not path.is_file():
            raise ValueError(f"no Kokoro voice {name!r} in {(self.folder / VOICES_DIR).absolute()}; available: "
                             f"{', '.join(self.available_voices()) or 'none'}")
        return torch.load(path, map_location="cpu", weights_only=True).float()

    def _run(self, pipeline: Any, text: str, pack: "torch.Tensor", speed: float) -> "np.ndarray":
        import numpy as np
        import torch

        device = self.model.device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(SYNTHESIS_SEED)
            chunks = [result.audio.numpy() for result in pipeline(text, voice=pack, speed=speed)
                      if result.audio is not None]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)


def _checked_speed(speed: float) -> float:
    speed = float(speed)
    if not (math.isfinite(speed) and MIN_SPEED <= speed <= MAX_SPEED):
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED} (1.0 is normal), got {speed}")
    return speed


def load_kokoro(handle: ModelHandle) -> KokoroVoice:
    """Kokoro-82M from ``handle.checkpoint`` on ``handle.device``; it always runs in float32 (82M parameters)."""
    from kokoro import KModel

    folder = resolve_checkpoint(handle.checkpoint, bool(handle.option("allow_download", False)))
    model = KModel(repo_id=DEFAULT_CHECKPOINT, config=str(folder / CONFIG_FILE), model=str(folder / WEIGHTS_FILE))
    model = model.to(resolve_device(handle.device)).eval()
    return KokoroVoice(model, folder)


def unload_kokoro(model: KokoroVoice) -> None:
    model.close()


register_family(FAMILY, load_kokoro, unload_kokoro)
