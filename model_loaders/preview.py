"""The weights-free preview backends, registered as model families.

They implement the same interfaces as the real models, so a stage does not
know which one it runs, and the whole graph runs on any CPU:

- ``preview-llm``: rule-based director + technical critic (one "checkpoint", two roles)
- ``preview-keyframes``: procedural storyboard frames
- ``preview-motion``: Ken Burns camera moves
- ``preview-voice``: eSpeak NG
- ``preview-music``: procedural synth bed

Backend methods take and return plain data (dicts, numpy arrays, PIL images),
so any of them can also run in a worker process.
"""

from __future__ import annotations

from typing import Any

from .handles import ModelHandle
from .residency import register_family

PREVIEW_CHECKPOINT = "preview"


class PreviewLLM:
    """Director and critic roles without a language model."""

    engine = "rules"

    def plan(self, request: dict[str, Any]) -> dict[str, Any]:
        from .rules import DirectorRequest, RuleDirector

        plan, warnings = RuleDirector().plan(DirectorRequest(**request))
        return {"plan": plan.model_dump(mode="json"), "warnings": list(warnings), "engine": self.engine}

    def critique(self, frames: Any, portraits: list[Any], prompt: str) -> dict[str, Any]:
        from .technical import technical_check

        return technical_check(frames)


class StoryboardKeyframes:
    engine = "storyboard"

    def render_portrait(self, character: dict[str, Any], plan: dict[str, Any], seed: int, callback: Any = None) -> Any:
        from .storyboard import render_portrait
        from .vocabulary.plan import Character, validate_plan

        return render_portrait(Character.model_validate(character), validate_plan(plan), seed)

    def render_keyframe(self, shot: dict[str, Any], plan: dict[str, Any], portraits: dict[str, Any], seed: int,
                        callback: Any = None) -> Any:
        from .storyboard import render_keyframe
        from .vocabulary.plan import Shot, validate_plan

        return render_keyframe(Shot.model_validate(shot), validate_plan(plan), portraits, seed)


class KenBurnsMotion:
    engine = "kenburns"

    @property
    def parallel_jobs(self) -> int:
        """Clips rendered by ``camera_filter`` are ffmpeg processes whose filters run on one core each: two at
        a time keep two cores busy. Frames drawn in Python (a subclass without the filter) go one at a time."""
        return 2 if getattr(self, "camera_filter", None) is not None else 1

    def camera_filter(self, size: tuple[int, int], shot: dict[str, Any], plan: dict[str, Any], num_frames: int,
                      seed: int) -> str:
        """The clip as an ffmpeg filter over the keyframe: the motion stage encodes it in one ffmpeg process
        (``render_clip`` draws the same frames in Python)."""
        from .kenburns import camera_filter

        return camera_filter(size, shot["camera"], float(shot["flow_shift"]), num_frames, seed)

    def render_clip(self, keyframe: Any, shot: dict[str, Any], plan: dict[str, Any], num_frames: int,
                    seed: int, callback: Any = None) -> Any:
        """Frames as a generator: the encoder compresses frame k while frame k+1 is drawn."""
        from .kenburns import iter_clip

        for index, frame in enumerate(iter_clip(keyframe, shot["camera"], float(shot["flow_shift"]), num_frames,
                                                seed)):
            if callback is not None:
                callback(index + 1, num_frames)
            yield frame


class EspeakVoiceBackend:
    engine = "espeak-ng"

    def __init__(self) -> None:
        from .espeak import EspeakVoice

        self._voice = EspeakVoice()

    def default_voice(self, language: str) -> str:
        from .vocabulary.languages import LANGUAGES

        return LANGUAGES[language].espeak

    def synthesize(self, text: str, language: str, voice: str | None = None, speed: float = 1.0) -> tuple[Any, int]:
        return self._voice.synthesize(text, language, speed=speed)


class SynthMusic:
    engine = "synth"

    def compose(self, plan: dict[str, Any], duration_s: float, tempo_bpm: float | None, seed: int,
                sample_rate: int = 48000, callback: Any = None) -> Any:
        from .synth import render_music_bed

        return render_music_bed(duration_s, plan["mood"], seed, tempo_bpm=tempo_bpm, sample_rate=sample_rate)


def _factory(cls: type) -> Any:
    def load(handle: ModelHandle) -> Any:
        return cls()

    return load


register_family("preview-llm", _factory(PreviewLLM), weightless=True)
register_family("preview-keyframes", _factory(StoryboardKeyframes), weightless=True)
register_family("preview-motion", _factory(KenBurnsMotion), weightless=True)
register_family("preview-voice", _factory(EspeakVoiceBackend), weightless=True)
register_family("preview-music", _factory(SynthMusic), weightless=True)
