"""Narration stage: each shot's line spoken in the plan's language, placed at its shot's start.

Lines are synthesised under one residency of the voice engine, then placed
sample-accurately at shot start + lead-in on one 48 kHz track. A line that
would overrun its shot is spoken faster (up to 1.25x), spilled into silence,
or pushes the next line; when the reel cannot hold it, it is spoken again with
fewer whole words and the run records a warning. Never cut mid-word, and never
an error: the pictures are done by now. The placement report says which.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.handles import ModelHandle
from .comfy import Progress
from .stage import Job, StageTimer, add_warning, run_jobs, write_report

if TYPE_CHECKING:
    from ...model_loaders.rules import DirectorRequest
    from ...model_loaders.vocabulary.plan import Shot
    from .reel import Reel

SAMPLE_RATE = 48000


def _read_wav(path: Path) -> tuple[Any, int]:
    import soundfile as sf

    audio, sr = sf.read(path, dtype="float32", always_2d=False)
    return audio, sr


def _write_wav(path: Path, audio: Any, sr: int) -> None:
    import soundfile as sf

    sf.write(path, audio, sr, format="WAV", subtype="FLOAT")


def line_job(shot: Shot, language: str, voice: str, handle: ModelHandle) -> Job:
    inputs = {"text": shot.narration, "language": language, "voice": voice, "model": handle.key}

    def make(model: Any, tmp: Path) -> None:
        audio, sr = model.synthesize(shot.narration, language, voice or None, 1.0)
        _write_wav(tmp, audio, sr)

    return Job(f"narration:{shot.id}", f"audio/narration_{shot.id}.wav", inputs, make)


def track_job(reel: Reel, lines: dict[str, Job], language: str, voice: str, lead_in_s: float,
              handle: ModelHandle, given: Collection[str] = ()) -> Job:
    from .audio import NarrationLine, place_narration

    plan, root = reel.plan, reel.run_dir.root
    inputs = {"lines": {k: j.key for k, j in lines.items()}, "lead_in_s": lead_in_s, "sr": SAMPLE_RATE,
              "spans": [[s.id, s.duration_s] for s in plan.shots]}

    def make(model: Any, tmp: Path) -> None:
        def resynthesize(line: NarrationLine, speed: float) -> NarrationLine:
            if line.shot_id in given:  # the user's own voice-over is placed as it is, never re-spoken
                return line
            audio, sr = model.synthesize(line.text, language, voice or None, speed)
            return NarrationLine(line.shot_id, line.start_s, line.end_s, audio, sr, line.text)

        narration = []
        for shot in plan.shots:
            if shot.id in lines:
                audio, sr = _read_wav(root / lines[shot.id].rel)
                start = plan.shot_start_s(shot.id)
                text = "" if shot.id in given else shot.narration  # a recording's words are unknown: no subtitle
                narration.append(NarrationLine(shot.id, start, start + shot.duration_s, audio, sr, text))
        track, placements = place_narration(narration, plan.duration_s, SAMPLE_RATE, lead_in_s, resynthesize)
        _write_wav(tmp, track, SAMPLE_RATE)
        (root / "audio" / "narration.json").write_text(json.dumps(placements, indent=2, ensure_ascii=False),
                                                       encoding="utf-8")

    return Job("narration", "audio/narration.wav", inputs, make)


def user_lines(reel: Reel) -> dict[str, Job]:
    """The shots whose line is the user's own recording (``user_media.py``), by shot id."""
    from .user_media import user_job

    return {s.id: job for s in reel.plan.shots if (job := user_job(reel, f"narration:{s.id}")) is not None}


ENGINES = {"preview-voice": "espeak-ng", "kokoro": "kokoro"}


def engine_of(handle: ModelHandle | None) -> str | None:
    """The speaking engine of a voice handle ("espeak-ng", "kokoro"); None for no handle or another family."""
    return ENGINES.get(handle.family) if handle is not None else None


def request_for_voice(request: DirectorRequest, handle: ModelHandle | None) -> DirectorRequest:
    """``request`` with the engine of ``handle`` as its voice, so the director sizes narration to that voice."""
    engine = engine_of(handle)
    if engine is None or request.voice_engine is not None:
        return request
    return dataclasses.replace(request, voice_engine=engine)


def trim_warnings(placements: list[dict[str, Any]]) -> list[str]:
    """One warning per line the reel could not hold whole (see ``place_narration``)."""
    return [f"the narration of {p['shot_id']} ran longer than the reel could hold"
            + (f", even spoken {p['speed']:g}x faster" if p["speed"] > 1 else "")
            + f"; it was cut at a word boundary to {p['text']!r} (left out: {p['left_out']!r})"
            for p in placements if p.get("action") == "trimmed"]


def voice_engine_for(handle: ModelHandle, language: str) -> tuple[ModelHandle, str | None]:
    """The handle that can speak ``language``: Kokoro's nine languages, else eSpeak NG with a warning."""
    from ...model_loaders.vocabulary.languages import LANGUAGES
    from .backends import PREVIEW_CHOICES, make_handle

    if handle.family == "kokoro" and LANGUAGES[language].kokoro is None:
        fallback = make_handle("voice", PREVIEW_CHOICES["voice"], device=handle.device)
        return fallback, (f"Kokoro does not speak {LANGUAGES[language].name}; the narration is spoken by "
                          f"eSpeak NG instead")
    return handle, None


def narrate(reel: Reel, handle: ModelHandle, voice: str = "", lead_in_s: float = 0.25,
            progress: Progress | None = None) -> Reel:
    timer = StageTimer("narration")
    plan = reel.plan
    handle, warning = voice_engine_for(handle, plan.language)
    if warning:
        voice = ""  # a voice name chosen for Kokoro means nothing to eSpeak
    lines = {s.id: line_job(s, plan.language, voice, handle) for s in plan.shots if s.narration.strip()}
    given = user_lines(reel)  # CineReel Audio to Voice-over: those shots are not synthesised
    lines = {s.id: given.get(s.id) or lines[s.id] for s in plan.shots if s.id in given or s.id in lines}
    jobs = [*lines.values(), track_job(reel, lines, plan.language, voice, lead_in_s, handle, set(given))]
    engine = handle.as_role("voice") if len(given) < len(lines) else None  # nothing to speak: no model
    made, count = run_jobs(reel.run_dir, engine, jobs, progress or Progress(len(jobs)))
    placements = json.loads((reel.run_dir.root / "audio" / "narration.json").read_text(encoding="utf-8"))
    out = reel.evolve(artifacts=made)
    notes = {"narration": {"language": plan.language, "engine": ENGINES.get(handle.family, handle.family),
                           "voice": voice or "default", "lines": placements,
                           "sources": {k: "user audio" if k in given else "synthesised" for k in lines}}}
    for problem in ([warning] if warning else []) + trim_warnings(placements):
        notes["warnings"] = add_warning(out, problem)
        out = out.evolve(notes={"warnings": notes["warnings"]})
    out = out.evolve(notes=timer.notes(out, **notes))
    write_report(out)
    return out
