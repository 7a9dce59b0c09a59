"""The language a sentence is written in, read from the text itself (not from the places it names).

Backend: ``py3langid`` (a maintained fork of langid.py; its naive-Bayes byte
n-gram model ships in the wheel as ``model.npz.xz`` and is loaded with
``np.load(allow_pickle=False)``: data, not code). It is imported on first use,
so importing the pack stays light, and it is restricted to the narration
languages (``vocabulary.languages.LANGUAGES``), which removes look-alike
neighbours (Bulgarian for Russian, Afrikaans for Dutch).

How the candidates compared (70 short sentences, 4-9 words, in the nine Kokoro
languages and eleven eSpeak NG ones; two CPU cores; see the README):

=========================  ========  =============  =============  ============
package                    correct   first load     per sentence   installed
=========================  ========  =============  =============  ============
py3langid 0.4.0 (ours)     70 / 70   0.8 s          0.2 ms         4.5 MB
  (all 97 languages)       69 / 70   (ru → bg)
lingua-language-detector   70 / 70   5.1 s, 490 MB  0.7 ms         96 MB
  2.1.1 (20 languages)
lingua, all languages      68 / 70   lazy           175 ms         96 MB, 1.2 GB RSS
langdetect 1.0.9           66 / 70   2.3 s          71 ms          2.5 MB
=========================  ========  =============  =============  ============

fastText-based identifiers were not candidates: their model is a separate
download. Same text, same answer (the classifiers are deterministic).
"""

from __future__ import annotations

import functools
import logging
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .vocabulary.languages import LANGUAGES, normalize_language

log = logging.getLogger("cinereel.textlang")

# py3langid's label -> ours, where they differ (it has no regional variants).
_FROM_LANGID = {"en": "en-US", "pt": "pt-BR", "no": "nb"}
_TO_LANGID = {"nb": "no", "en-US": "en", "en-GB": "en", "pt-BR": "pt", "pt-PT": "pt"}
MIN_CONFIDENCE = 0.5  # below this (normalised probability), the text does not decide
MIN_LETTERS = 3  # fewer letters than this say nothing about a language ("OK", "🌙")


@dataclass(frozen=True)
class TextLanguage:
    code: str  # canonical code of vocabulary.languages
    confidence: float  # 0..1


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # lazy: numpy, only when a sentence is read

    identifier = _from_unpacked(LanguageIdentifier, _model_path())
    if identifier is None:
        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    wanted = {_TO_LANGID.get(code, code) for code in LANGUAGES}
    identifier.set_languages(sorted(wanted & set(identifier.labels)))
    return identifier


# -- py3langid's model, unpacked once ---------------------------------------------------------------------------
# The wheel ships the model as one LZMA-compressed npz (4.5 MB): 68 MB of arrays that take 0.37 s to decompress
# and 0.1 s to copy at every first use, most of what the director's plan costs with the preview backends. The
# first use writes them to the user's cache as plain .npy files, which later ones read in a tenth of the time;
# the two that py3langid wants as standard-library arrays are read straight into them. (Read, not memory-mapped:
# a mapped file truncated by anyone else would crash the process with SIGBUS.) The folder is named by the packed
# model's content, so every installation of the same model shares one. A damaged cache is unpacked again; any
# other problem with it falls back to py3langid's own loader.

MODEL_ARRAYS = ("ptc", "pc", "classes", "nextmove", "nextmove_row", "out_feat")
_ARRAY_TYPECODES = {2: "H", 4: "I", 8: "L"}  # numpy unsigned item size -> stdlib array, as py3langid stores them


def _model_path() -> Path:
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    return Path(MODEL_DIR) / MODEL_FILE


def cache_root() -> Path:
    """Where CineReel keeps what it can remake: ``$CINEREEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/cinereel``,
    else ``~/.cache/cinereel``."""
    explicit = os.environ.get("CINEREEL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cinereel"


def _from_unpacked(identifier_class: Any, model: Path) -> Any:
    try:
        arrays = _unpacked_model(model)
        return identifier_class(arrays["ptc"], arrays["pc"], arrays["classes"].tolist(), arrays["nextmove"],
                                arrays["out_feat"].tolist(), norm_probs=True, tk_row=arrays["nextmove_row"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a read-only home, a changed model layout...
        log.debug("py3langid's model not read from the cache (%s); loading the packed one", exc)
        return None


def _unpacked_model(model: Path) -> dict[str, Any]:
    folder = cache_root() / f"py3langid-{_content_digest(model)}"
    if not (folder / "complete").is_file():
        _unpack(model, folder)
        _remove_mtime_named_folders(folder.parent)
    try:
        return _read(folder)
    except (OSError, ValueError):  # damaged since: unpack it again
        import shutil

        shutil.rmtree(folder)
        _unpack(model, folder)
        return _read(folder)


def _content_digest(model: Path) -> str:
    import hashlib

    return hashlib.blake2b(model.read_bytes(), digest_size=10).hexdigest()


def _remove_mtime_named_folders(root: Path) -> None:
    """Earlier versions named the folder by the model file's version, size and mtime, so each installation left
    one more 68 MB copy behind; they go once this one is unpacked. (A process still reading one finds it damaged
    and unpacks its own.)"""
    import re
    import shutil

    for old in root.glob("py3langid-*"):
        if re.fullmatch(r"py3langid-[^-]+-\d+-\d+", old.name) and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


STDLIB_ARRAYS = ("nextmove", "nextmove_row")  # py3langid indexes these one element at a time: stdlib arrays


def _read(folder: Path) -> dict[str, Any]:
    import numpy as np

    return {name: _read_stdlib_array(folder / f"{name}.npy") if name in STDLIB_ARRAYS
            else np.load(folder / f"{name}.npy", allow_pickle=False) for name in MODEL_ARRAYS}


def _read_stdlib_array(path: Path) -> array:
    """A one-dimensional .npy of unsigned integers as a standard-library array, read into it directly."""
    import numpy as np
    from numpy.lib import format as npy

    with open(path, "rb") as file:
        version = npy.read_magic(file)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran_order, dtype = read_header(file)
        typecode = _ARRAY_TYPECODES.get(dtype.itemsize, "")
        if len(shape) != 1 or dtype.kind != "u" or not typecode or dtype != np.dtype(typecode):
            raise ValueError(f"{path.name}: not a one-dimensional array of native unsigned integers")
        out = array(typecode)
        try:
            out.fromfile(file, shape[0])
        except EOFError as exc:
            raise ValueError(f"{path.name} is cut short") from exc
        return out


def _unpack(model: Path, folder: Path) -> None:
    """Decompress the model's arrays into ``folder``, whole or not at all (another process may do the same)."""
    import lzma
    import secrets
    import shutil
    import tempfile

    import numpy as np

    staging = folder.with_name(f".{folder.name}.{secrets.token_hex(6)}")
    staging.mkdir(parents=True)
    try:
        with tempfile.TemporaryFile() as raw:  # the npz's index is at its end: decompress once, then seek
            with lzma.open(model) as packed:
                shutil.copyfileobj(packed, raw, length=1 << 20)
            raw.seek(0)
            with np.load(raw, allow_pickle=False) as data:
                for name in MODEL_ARRAYS:
                    np.save(staging / f"{name}.npy", data[name], allow_pickle=False)
        (staging / "complete").touch()
        try:
            staging.rename(folder)
        except OSError:  # another process unpacked it first
            if not (folder / "complete").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def detect_language(text: str) -> TextLanguage | None:
    """The language ``text`` is written in, or None when too little of it is letters or the model is unsure."""
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return None
    label, confidence = _identifier().classify(text)
    if confidence < MIN_CONFIDENCE:
        return None
    return TextLanguage(normalize_language(_FROM_LANGID.get(label, label)), round(float(confidence), 3))
