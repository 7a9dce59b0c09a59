"""Worker plugin (CINEREEL_WORKER_PLUGINS) for tests/test_sound_branch.py: a voice that fails on purpose, known to
the sound branch's process as well as to the test's own process (which registers it too)."""

from __future__ import annotations

import importlib

FAMILY = "test-failing-voice"
FULL_DISK = "test-full-disk-voice"


def register(register_family) -> None:
    pack = register_family.__module__.rsplit(".model_loaders.", 1)[0]
    preview = importlib.import_module(f"{pack}.model_loaders.preview")

    class FailingVoice(preview.EspeakVoiceBackend):
        def synthesize(self, text, language, voice=None, speed=1.0):
            raise ValueError("the voice broke on purpose")

    register_family(FAMILY, lambda handle: FailingVoice(), weightless=True)

    class FullDiskVoice(preview.EspeakVoiceBackend):
        def synthesize(self, text, language, voice=None, speed=1.0):
            import errno

            raise OSError(errno.ENOSPC, "No space left on device", "audio/narration_shot-01.wav")

    register_family(FULL_DISK, lambda handle: FullDiskVoice(), weightless=True)
