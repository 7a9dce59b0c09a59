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
from dataclasses import dataclass
from typing import Any

from .vocabulary.languages import LANGUAGES, normalize_language

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
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # lazy: 0.8 s and numpy, only when a sentence is read

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    wanted = {_TO_LANGID.get(code, code) for code in LANGUAGES}
    identifier.set_languages(sorted(wanted & set(identifier.labels)))
    return identifier


def detect_language(text: str) -> TextLanguage | None:
    """The language ``text`` is written in, or None when too little of it is letters or the model is unsure."""
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return None
    label, confidence = _identifier().classify(text)
    if confidence < MIN_CONFIDENCE:
        return None
    return TextLanguage(normalize_language(_FROM_LANGID.get(label, label)), round(float(confidence), 3))
