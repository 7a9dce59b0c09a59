"""Adapters from a REEL to ComfyUI's native types, so core nodes work on CineReel's output.

IMAGE is a float tensor (batch, height, width, channels) in [0, 1]; AUDIO is
``{"waveform": (batch, channels, samples), "sample_rate": int}``; VIDEO is
ComfyUI's video object (``comfy_api.input_impl.VideoFromFile``, which arrived in
ComfyUI 0.3.31).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import CATEGORY, choice, integer, reel_input

if TYPE_CHECKING:
    from .pipeline.reel import Reel

IMAGE_KINDS = ("keyframe", "portrait", "clip frames")
AUDIO_KINDS = ("mix", "music", "narration")


def _shot_id(reel: Reel, index: int) -> str:
    shots = reel.plan.shots
    if not 1 <= index <= len(shots):
        raise ValueError(f"shot {index} does not exist: this plan has shots 1 to {len(shots)}")
    return shots[index - 1].id


def latest_clip(reel: Reel, shot_id: str) -> Path:
    """The clip the REEL currently uses for ``shot_id`` (the critic gate may have picked a retry)."""
    return reel.artifact_path(f"clip:{shot_id}")


def image_arrays(reel: Reel, kind: str, index: int) -> Any:
    """uint8 array (N, H, W, 3) for the requested image(s)."""
    import numpy as np
    from PIL import Image

    shot_id = _shot_id(reel, index)
    if kind == "clip frames":
        from .pipeline.video import read_clip

        return read_clip(latest_clip(reel, shot_id))
    if kind == "portrait":
        shot = reel.plan.shot(shot_id)
        if not shot.characters:
            raise ValueError(f"shot {index} ({shot_id}) has no characters in frame, so no portrait")
        path = reel.artifact_path(f"portrait:{shot.characters[0]}")
    else:
        path = reel.artifact_path(f"keyframe:{shot_id}")
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))[None]  # a writable copy: torch.from_numpy shares memory


def audio_array(reel: Reel, kind: str) -> tuple[Any, int]:
    """float32 array (channels, samples) and its sample rate."""
    import soundfile as sf

    audio, sr = sf.read(reel.artifact_path(kind), dtype="float32", always_2d=True)
    return audio.T.copy(), sr


class ReelToImageNode:
    DESCRIPTION = "Takes a shot's keyframe, its first character's portrait, or its clip's frames out of a REEL as an IMAGE."
    CATEGORY = f"{CATEGORY}/adapters"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("One image (keyframe, portrait) or a batch of frames (clip frames).",)
    FUNCTION = "to_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input(),
            "kind": choice(IMAGE_KINDS, "keyframe: the shot's still; portrait: the master portrait of the first "
                           "character in the shot; clip frames: every frame of the shot's clip."),
            "shot": integer("Shot number, from 1.", 1, 1, 24),
        }}

    def to_image(self, reel: Reel, kind: str, shot: int) -> tuple[Any]:
        import torch

        pixels = image_arrays(reel, kind, int(shot))
        return (torch.from_numpy(pixels).float().div_(255.0),)


class ReelToAudioNode:
    DESCRIPTION = "Takes the mastered mix, the music bed or the narration track out of a REEL as AUDIO."
    CATEGORY = f"{CATEGORY}/adapters"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("ComfyUI AUDIO for Preview Audio, Save Audio and other audio nodes.",)
    FUNCTION = "to_audio"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input(),
            "kind": choice(AUDIO_KINDS, "mix: narration and music, mastered; music: the bed alone; narration: the "
                           "voice track alone."),
        }}

    def to_audio(self, reel: Reel, kind: str) -> tuple[dict[str, Any]]:
        import torch

        audio, sr = audio_array(reel, kind)
        return ({"waveform": torch.from_numpy(audio)[None], "sample_rate": int(sr)},)


class ReelToVideoNode:
    DESCRIPTION = "Takes the finished reel.mp4 out of a REEL as a VIDEO (for Save Video and other video nodes)."
    CATEGORY = f"{CATEGORY}/adapters"
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("ComfyUI VIDEO (needs ComfyUI 0.3.31 or newer).",)
    FUNCTION = "to_video"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"reel": reel_input("The REEL from the CineReel Assemble node.")}}

    def to_video(self, reel: Reel) -> tuple[Any]:
        return (video_file_class()(str(reel.artifact_path("reel"))),)


def video_file_class() -> type:
    """ComfyUI's ``VideoFromFile``: ``comfy_api.input_impl`` since 0.3.31 (where ComfyUI's own nodes import
    it), else ``comfy_api.latest.InputImpl`` (the versioned API since 0.3.48)."""
    try:
        from comfy_api.input_impl import VideoFromFile

        return VideoFromFile
    except ImportError:
        pass
    try:
        from comfy_api.latest import InputImpl

        return InputImpl.VideoFromFile
    except (ImportError, AttributeError):
        raise RuntimeError("this ComfyUI has no VIDEO type (comfy_api.input_impl arrived in ComfyUI 0.3.31); "
                           "update ComfyUI, or use the reel.mp4 path shown on the Assemble node") from None


NODES = {
    "CineReelToImage": (ReelToImageNode, "CineReel REEL to Image"),
    "CineReelToAudio": (ReelToAudioNode, "CineReel REEL to Audio"),
    "CineReelToVideo": (ReelToVideoNode, "CineReel REEL to Video"),
}
