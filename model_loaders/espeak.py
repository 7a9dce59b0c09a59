"""eSpeak NG speech: the weights-free preview voice, and the fallback for languages Kokoro cannot speak.

The shared library and its voice data come from the ``espeakng-loader`` wheel, so
nothing has to be installed system-wide on Windows, macOS or Linux. It is driven
through its C API with ctypes, synchronous output into a callback: no audio
device, no subprocess.

Determinism: libespeak-ng keeps synthesis state in C statics that no API call
resets (the pitch-flutter phase, the roughness cycle counter), so a second
utterance of the same text comes out slightly different. Each utterance therefore
runs in a freshly loaded copy of the library, which is unloaded afterwards; that
costs about a millisecond. The copy lives in a private temporary folder so that
no other user of the same library file in this process (phonemizer, misaki)
keeps it loaded and its state alive. One module-level lock serialises all of it.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import ModelUnavailable
from .vocabulary.languages import LANGUAGES, normalize_language

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EE_OK = 0
_RATE_MIN, _RATE_MAX = 80, 450

NORMAL_RATE_WPM = 175
MIN_SPEED, MAX_SPEED = 0.5, 2.0

_log = logging.getLogger(__name__)

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _VoiceSpec(ctypes.Structure):
    """``espeak_VOICE``: used to select a voice by language tag when no voice file has that name."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class EspeakError(ModelUnavailable):
    pass


_lock = threading.Lock()
_private_copy: Path | None = None
_sample_rate: int | None = None


def _library_files() -> tuple[str, bytes]:
    try:
        import espeakng_loader
    except ImportError as exc:  # pragma: no cover - a hard dependency of the pack
        raise EspeakError("the preview voice needs the 'espeakng-loader' package: pip install espeakng-loader") from exc
    return espeakng_loader.get_library_path(), os.fsencode(espeakng_loader.get_data_path())


SCRATCH_PREFIX = "cinereel-espeak-"


def _remove_folders_of_dead_processes() -> None:
    """atexit does not run after kill -9: a later process removes the copies whose owner is gone."""
    import psutil

    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _private_library() -> Path:
    """A copy of libespeak-ng that only this module loads (see the module docstring); callers hold ``_lock``."""
    global _private_copy
    if _private_copy is None or not _private_copy.exists():
        source, _ = _library_files()
        _remove_folders_of_dead_processes()
        folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _private_copy = Path(shutil.copy2(source, folder / Path(source).name))
        if sys.platform == "win32":  # let the copy find any DLLs that ship beside the original
            os.add_dll_directory(str(Path(source).parent))
    return _private_copy


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_VoiceSpec)]
    lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int


def _unload(lib: ctypes.CDLL) -> None:
    if sys.platform == "win32":
        _ctypes.FreeLibrary(lib._handle)
    else:
        _ctypes.dlclose(lib._handle)


@contextmanager
def _fresh_engine() -> Iterator[tuple[ctypes.CDLL, int]]:
    """Load, initialise, and afterwards terminate and unload a private libespeak-ng; callers hold ``_lock``."""
    global _sample_rate
    _, data_path = _library_files()
    lib = ctypes.CDLL(str(_private_library()))
    try:
        _declare(lib)
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        if sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {sample_rate}); voice data at {os.fsdecode(data_path)}")
        _sample_rate = sample_rate
        try:
            yield lib, sample_rate
        finally:
            lib.espeak_Terminate()
    finally:
        _unload(lib)


def _select_voice(lib: ctypes.CDLL, voice: str) -> None:
    """Select by voice file name (``de``, ``pt-BR``), else by language tag (``en-gb``, ``fr-fr``) as espeak-ng's CLI does."""
    name = voice.encode()
    if lib.espeak_SetVoiceByName(name) == _EE_OK:
        return
    spec = _VoiceSpec(languages=name)
    if lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != _EE_OK:
        raise EspeakError(f"eSpeak NG has no voice or language named {voice!r}")


def _synthesize_pcm(text: str, voice: str, rate_wpm: int) -> tuple[np.ndarray, int]:
    """int16 samples of ``text`` from a fresh library instance; callers hold ``_lock``."""
    chunks: list[np.ndarray] = []

    def collect(wav, num_samples, _events) -> int:
        if wav and num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = keep going

    callback = _SynthCallback(collect)  # must outlive every call into the library below
    with _fresh_engine() as (lib, sample_rate):
        lib.espeak_SetSynthCallback(callback)
        _select_voice(lib, voice)
        lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
        encoded = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with status {status} for voice {voice!r}")
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return pcm, sample_rate


# Emoji and pictographs have no reading; eSpeak would spell some of them out by name.
_DROPPED_CATEGORIES = {"So", "Cs", "Co", "Cn", "Cf", "Me"}
_EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)
_VARIATION_SELECTORS = range(0xFE00, 0xFE10)


def speakable_text(text: str) -> str:
    """``text`` in NFC without emoji, format or private-use characters; control characters become spaces."""
    kept = []
    for ch in unicodedata.normalize("NFC", text):
        category = unicodedata.category(ch)
        if category == "Cc":
            kept.append(" ")
        elif category in _DROPPED_CATEGORIES or ord(ch) in _EMOJI_MODIFIERS or ord(ch) in _VARIATION_SELECTORS:
            continue
        else:
            kept.append(ch)
    return " ".join("".join(kept).split())


# eSpeak NG's Japanese voice reads kana only (for a kanji it says "Chinese letter").
# Japanese text is first turned into its katakana pronunciation with MeCab
# (fugashi + the UniDic dictionary in unidic-lite, the same tools Kokoro's
# Japanese front end uses). Without them, kanji are skipped with a warning.
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]+")
_tagger = None


def japanese_reading(text: str) -> str:
    """Katakana pronunciation of Japanese ``text`` (``東京は`` -> ``トーキョーワ``); punctuation kept."""
    global _tagger
    if _tagger is None:
        import fugashi

        _tagger = fugashi.Tagger()
    parts = []
    for word in _tagger(text):
        pron = getattr(word.feature, "pron", None)
        parts.append(pron if pron and pron != "*" else word.surface)
    return "".join(parts)


def _readable(text: str, voice: str) -> str:
    if voice != "ja" or not _HAN.search(text):
        return text
    try:
        return japanese_reading(text)
    except (ImportError, RuntimeError) as exc:  # fugashi or its dictionary is missing
        skipped = sum(len(m) for m in _HAN.findall(text))
        _log.warning("cannot read kanji without fugashi and unidic-lite (%s); %d kanji of %r are skipped. "
                     "Install them with: pip install fugashi unidic-lite", exc, skipped, text)
        return " ".join(_HAN.sub(" ", text).split())


def _trim_silence(pcm: np.ndarray) -> np.ndarray:
    """Drop the digital silence eSpeak leaves before the first and after the last sound."""
    sounding = np.flatnonzero(pcm)
    if sounding.size == 0:
        return pcm[:0]
    return pcm[sounding[0] : sounding[-1] + 1]


def _rate_wpm(speed: float) -> int:
    speed = float(speed)
    if not (MIN_SPEED <= speed <= MAX_SPEED):
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED} (1.0 is normal), got {speed}")
    return int(np.clip(round(NORMAL_RATE_WPM * speed), _RATE_MIN, _RATE_MAX))


class EspeakVoice:
    """Speak text with eSpeak NG in any CineReel language (see ``vocabulary/languages.py``)."""

    @property
    def sample_rate(self) -> int:
        """The library's native rate (22050 Hz), known after the first synthesis or one probe."""
        with _lock:
            if _sample_rate is None:
                with _fresh_engine():
                    pass
            return int(_sample_rate)

    def synthesize(self, text: str, language: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """Return mono float32 samples in [-1, 1] and their sample rate.

        ``language`` is a CineReel language code (``ValueError`` names the choices
        for an unknown one). ``speed`` scales the speaking rate, 1.0 being about
        175 words a minute. The same text, language and speed always give the
        same samples. Sample 0 is the onset of sound: the silence eSpeak puts
        before and after the utterance is trimmed. Emoji are skipped; Japanese is
        read through its katakana pronunciation (see ``japanese_reading``). Text
        with nothing speakable gives an empty array.
        """
        voice = LANGUAGES[normalize_language(language)].espeak
        rate = _rate_wpm(speed)
        spoken = _readable(speakable_text(text or ""), voice)
        if not spoken:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        with _lock:
            pcm, sample_rate = _synthesize_pcm(spoken, voice, rate)
        return _trim_silence(pcm).astype(np.float32) / np.float32(32768.0), sample_rate
