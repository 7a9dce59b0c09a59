"""Adapters between a REEL and ComfyUI's native types, both ways.

Out of a REEL (so core nodes work on CineReel's output): REEL to Image / Audio / Video. Into a REEL (so a user
brings their own media from core Load Image / Load Audio): Image to Portrait / Keyframe, Audio to Music /
Voice-over. These take a REEL and return a REEL; the item is written into the run folder, keyed by its content,
and the stage that would have made it uses it instead (``pipeline/user_media.py``).

IMAGE is a float tensor (batch, height, width, channels) in [0, 1]; AUDIO is
``{"waveform": (batch, channels, samples), "sample_rate": int}``; VIDEO is
ComfyUI's video object (``comfy_api.input_impl.VideoFromFile``, which arrived in
ComfyUI 0.3.31).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import CATEGORY, REEL, choice, integer, reel_input, text

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


# -- into a REEL -----------------------------------------------------------------------

def _array(value: Any) -> Any:
    """A torch tensor (what ComfyUI passes) or any array-like, as numpy."""
    if hasattr(value, "detach"):
        return value.detach().cpu().float().numpy()
    return value


def _audio(audio: Any) -> tuple[Any, int]:
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("AUDIO must be {'waveform': (batch, channels, samples), 'sample_rate': int}, as Load "
                         "Audio gives it")
    return _array(audio["waveform"]), audio["sample_rate"]


def _done(out: Reel, before: Reel) -> tuple | dict:
    """The new REEL; a warning the adapter added (a batch of several images) is shown on the node."""
    earlier = set(before.notes.get("warnings", []))
    new = [w for w in out.notes.get("warnings", []) if w not in earlier]
    return {"ui": {"text": [f"⚠ {w}" for w in new]}, "result": (out,)} if new else (out,)


IMAGE_TOOLTIP = "The picture, from Load Image or any node that outputs an IMAGE (of a batch, the first image)."
AUDIO_TOOLTIP = "The sound, from Load Audio or any node that outputs AUDIO: mono or stereo, any sample rate."
SHOT_TOOLTIP = "The shot: its id from the Director's shot list (e.g. shot_02) or its number, from 1."


class _IntoReelNode:
    CATEGORY = f"{CATEGORY}/adapters"
    RETURN_TYPES = (REEL,)
    RETURN_NAMES = ("reel",)


class ImageToPortraitNode(_IntoReelNode):
    DESCRIPTION = ("Makes your own picture a character's master portrait. The Keyframes node then draws no "
                   "portrait for that character and uses yours as the reference in every shot they appear in. "
                   "Connect it between the Director and the Keyframes node.")
    OUTPUT_TOOLTIPS = ("The REEL with your portrait; connect it to the Keyframes node (or another adapter).",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the CineReel Director (or another adapter)."),
            "image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP + " Kept as it is: the keyframe model fits references "
                                "itself."}),
            "character": text("The character's id from the Director's plan (e.g. astronaut) or their name; blank: "
                              "the plan's first character. A name not in the plan is refused with the list."),
        }}

    def add(self, reel: Reel, image: Any, character: str = "") -> tuple | dict:
        from .pipeline.user_media import add_portrait

        return _done(add_portrait(reel, _array(image), character), reel)


class ImageToKeyframeNode(_IntoReelNode):
    DESCRIPTION = ("Makes your own picture a shot's keyframe, scaled to cover the reel's frame and cropped "
                   "centred (no stretching). The Keyframes node then draws nothing for that shot (the report "
                   "says the keyframe is yours), and the Animate node moves your picture.")
    OUTPUT_TOOLTIPS = ("The REEL with your keyframe; connect it to the Keyframes or Animate node.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the CineReel Director, another adapter or the Keyframes node "
                               "(before Animate)."),
            "image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP}),
            "shot": text(SHOT_TOOLTIP, "1"),
        }}

    def add(self, reel: Reel, image: Any, shot: str = "1") -> tuple | dict:
        from .pipeline.user_media import add_keyframe

        return _done(add_keyframe(reel, _array(image), shot), reel)


class AudioToMusicNode(_IntoReelNode):
    DESCRIPTION = ("Makes your own music the reel's bed: resampled to 48 kHz, looped (with a short crossfade) or "
                   "cut (with a short fade) to the reel's length. The Score Music node then composes nothing, "
                   "and the Mix node ducks your music under the narration.")
    OUTPUT_TOOLTIPS = ("The REEL with your music bed; connect it to the Score Music or Mix node.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the Director or any later stage before Mix & Master."),
            "audio": ("AUDIO", {"tooltip": AUDIO_TOOLTIP}),
        }}

    def add(self, reel: Reel, audio: Any) -> tuple | dict:
        from .pipeline.user_media import add_music

        return _done(add_music(reel, *_audio(audio)), reel)


class AudioToVoiceOverNode(_IntoReelNode):
    DESCRIPTION = ("Makes your own recording a shot's spoken line. The Narrate node then speaks nothing for that "
                   "shot and places your recording at the shot's start plus the lead-in, as it places its lines "
                   "(never sped up or cut; a long one spills into the next shot's silence or pushes its line). Its "
                   "words are not known, so reel.srt has no subtitle for it.")
    OUTPUT_TOOLTIPS = ("The REEL with your voice-over; connect it to the Narrate node.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "reel": reel_input("The REEL from the Director or any later stage before Narrate."),
            "audio": ("AUDIO", {"tooltip": AUDIO_TOOLTIP + " Mixed down to mono."}),
            "shot": text(SHOT_TOOLTIP, "1"),
        }}

    def add(self, reel: Reel, audio: Any, shot: str = "1") -> tuple | dict:
        from .pipeline.user_media import add_voice_over

        return _done(add_voice_over(reel, *_audio(audio), shot), reel)


NODES = {
    "CineReelToImage": (ReelToImageNode, "CineReel REEL to Image"),
    "CineReelToAudio": (ReelToAudioNode, "CineReel REEL to Audio"),
    "CineReelToVideo": (ReelToVideoNode, "CineReel REEL to Video"),
    "CineReelImageToPortrait": (ImageToPortraitNode, "CineReel Image to Portrait"),
    "CineReelImageToKeyframe": (ImageToKeyframeNode, "CineReel Image to Keyframe"),
    "CineReelAudioToMusic": (AudioToMusicNode, "CineReel Audio to Music"),
    "CineReelAudioToVoiceOver": (AudioToVoiceOverNode, "CineReel Audio to Voice-over"),
}
