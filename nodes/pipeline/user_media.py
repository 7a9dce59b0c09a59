"""The user's own media in a reel: a picture as a character's portrait or a shot's keyframe, a sound as the
music bed or a shot's voice-over (ComfyUI's Load Image / Load Audio, through the "... to REEL" adapter nodes).

Getting an item in (``add_portrait``, ``add_keyframe``, ``add_music``, ``add_voice_over``): the media is fitted
to the plan and written into the run folder as one artifact under ``user/``, keyed by a hash of its content
and of the fit, through ``run_jobs`` like every artifact: an unchanged item is not rewritten, a changed one
supersedes the old (kept under ``superseded/``). The fit:

- portrait: the picture as given (the keyframe model fits its references itself);
- keyframe: scaled to cover the plan's frame and cropped centred (``cover_fit``: Pillow's ``ImageOps.fit``,
  Lanczos), so nothing is stretched and the frame is filled;
- music: resampled to the mix rate (48 kHz, ``sampling.resample``), looped with a short equal-power crossfade
  when shorter than the reel, then cut to the reel's length with a 50 ms fade (``sampling.fit_length``);
- voice-over: mixed down to mono and resampled to the narration rate (48 kHz).

The REEL records the item under ``notes["user_media"][target]`` (``target`` is ``portrait:<character>``,
``keyframe:<shot>``, ``music`` or ``narration:<shot>``: the artifact name the item stands in for), lists it as
the artifact ``user:<target>`` and points ``target`` at it. The stages honour it (``user_job``): the keyframe
stage draws no portrait or keyframe the user gave, the music stage composes nothing, the narration stage
speaks nothing for that shot; each records where its media came from.

Caching downstream stays correct because the item's key is its content's hash: a keyframe's key changes with
its user portrait's, a clip's with its keyframe's (``artifact_key``), the mix's with the music's or a line's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .stage import Job, run_jobs, write_report

if TYPE_CHECKING:
    from ...model_loaders.vocabulary.plan import Character, Plan, Shot
    from .reel import Reel

MIX_RATE = 48000  # the music bed's rate (mix.MIX_SAMPLE_RATE, music.SAMPLE_RATE)
VOICE_RATE = 48000  # the narration track's rate (voice.SAMPLE_RATE)
LOOP_CROSSFADE_S = 0.05
MIN_MUSIC_S = 0.1
KEYFRAME_FIT = "cover-crop centred, Lanczos"
MUSIC_FIT = "resampled to 48 kHz; looped with a 50 ms equal-power crossfade or cut with a 50 ms fade"
NOTE = "user_media"
USER_FOLDER = "user/"  # where the items go in the run folder


class UserMediaError(ValueError):
    """The user's media, or where it was asked to go, does not fit the reel."""


# -- which character, which shot ------------------------------------------------------

def find_character(plan: Plan, character: str) -> Character:
    """The plan's character named by ``character``: its id (or, case-insensitively, its id or name); blank: the
    first character in the plan."""
    if not plan.characters:
        raise UserMediaError("this plan has no characters, so there is no portrait to replace")
    wanted = (character or "").strip()
    if not wanted:
        return plan.characters[0]
    for match in (lambda c: c.id == wanted, lambda c: wanted.casefold() in (c.id.casefold(), c.name.casefold())):
        found = [c for c in plan.characters if match(c)]
        if found:
            return found[0]
    ids = ", ".join(c.id for c in plan.characters)
    raise UserMediaError(f"character {wanted!r} is not in the plan; its characters are: {ids}")


def find_shot(plan: Plan, shot: str | int) -> Shot:
    """The plan's shot named by ``shot``: its id (``shot_02``) or its number from 1 (``2``)."""
    wanted = str(shot).strip()
    for s in plan.shots:
        if s.id == wanted:
            return s
    if wanted.isdigit() and 1 <= int(wanted) <= len(plan.shots):
        return plan.shots[int(wanted) - 1]
    ids = ", ".join(s.id for s in plan.shots)
    raise UserMediaError(f"shot {wanted!r} is not in the plan; its shots are {ids} (or their numbers 1 to "
                         f"{len(plan.shots)})")


# -- the media, checked ----------------------------------------------------------------

def image_pixels(image: Any) -> tuple[np.ndarray, int]:
    """The first image of a ComfyUI IMAGE (float (batch, height, width, channels) in [0, 1]) as uint8 RGB
    (height, width, 3), and the batch size. One channel is grey; a fourth (alpha) is dropped."""
    pixels = np.asarray(image)
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4:
        raise UserMediaError(f"an IMAGE is shaped (batch, height, width, channels); got shape {pixels.shape}")
    batch, height, width, channels = pixels.shape
    if batch == 0:
        raise UserMediaError("the IMAGE batch is empty: connect a node that outputs at least one image")
    if height == 0 or width == 0:
        raise UserMediaError(f"the image is empty ({width}x{height} pixels)")
    if channels not in (1, 3, 4):
        raise UserMediaError(f"an image needs 1 (grey), 3 (RGB) or 4 (RGBA) channels; got {channels}")
    first = pixels[0]
    if np.issubdtype(first.dtype, np.floating):
        if not np.isfinite(first).all():
            raise UserMediaError("the image contains NaN or infinite values")
        first = np.rint(np.clip(first, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif first.dtype != np.uint8:
        raise UserMediaError(f"an IMAGE holds floats in [0, 1] (or uint8); got {first.dtype}")
    if channels == 1:
        first = np.repeat(first, 3, axis=2)
    return np.ascontiguousarray(first[:, :, :3]), batch


def audio_samples(waveform: Any, sample_rate: int) -> tuple[np.ndarray, int]:
    """The first clip of a ComfyUI AUDIO waveform ((batch, channels, samples), any rate) as float32
    (samples, channels), and its checked rate."""
    from ...model_loaders.sampling import checked_sample_rate

    try:
        sample_rate = checked_sample_rate(sample_rate)
    except (TypeError, ValueError) as exc:
        raise UserMediaError(f"the AUDIO's {exc}") from None
    audio = np.asarray(waveform)
    if audio.ndim == 2:
        audio = audio[None]
    if audio.ndim != 3:
        raise UserMediaError(f"an AUDIO waveform is shaped (batch, channels, samples); got shape {audio.shape}")
    if audio.shape[0] == 0 or audio.shape[1] == 0 or audio.shape[2] == 0:
        raise UserMediaError(f"the AUDIO is empty (waveform shape {audio.shape})")
    if not np.issubdtype(audio.dtype, np.floating):
        raise UserMediaError(f"an AUDIO waveform holds floating-point samples; got {audio.dtype}")
    samples = np.ascontiguousarray(audio[0].T, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise UserMediaError("the AUDIO contains NaN or infinite samples")
    return samples, sample_rate


def digest(array: np.ndarray, *extra: Any) -> str:
    h = hashlib.sha256(np.ascontiguousarray(array).tobytes())
    h.update(repr((array.shape, str(array.dtype), *extra)).encode())
    return h.hexdigest()


# -- the fits ------------------------------------------------------------------------

def cover_fit(image: Any, size: tuple[int, int]) -> Any:
    """``image`` (PIL) scaled to cover ``size`` (width, height) and cropped centred: no stretch, no bars."""
    from PIL import Image, ImageOps

    return ImageOps.fit(image.convert("RGB"), size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def fit_music(audio: np.ndarray, sample_rate: int, duration_s: float, out_rate: int = MIX_RATE) -> np.ndarray:
    """A mono or stereo sound (samples, channels) at any rate made the reel's bed: resampled to ``out_rate``,
    looped with a short equal-power crossfade while shorter than ``duration_s``, cut with a 50 ms fade."""
    from ...model_loaders.sampling import fit_length, resample

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.shape[1] not in (1, 2):
        raise UserMediaError(f"music must be mono or stereo; this audio has {audio.shape[1]} channels")
    if audio.shape[0] < MIN_MUSIC_S * sample_rate:
        raise UserMediaError(f"the music is {audio.shape[0] / sample_rate:.3f} s long; at least {MIN_MUSIC_S:g} s "
                             "is needed to loop it into a bed")
    bed = resample(audio, sample_rate, out_rate)
    n = round(duration_s * out_rate)
    if len(bed) < n:
        bed = _loop(bed, n + round(0.05 * out_rate), round(LOOP_CROSSFADE_S * out_rate))
    return fit_length(bed, n, out_rate)


def _loop(audio: np.ndarray, n: int, crossfade: int) -> np.ndarray:
    """``audio`` repeated until at least ``n`` samples long, each seam an equal-power crossfade."""
    crossfade = min(crossfade, len(audio) // 2)
    angle = np.linspace(0.0, np.pi / 2, crossfade, dtype=np.float32)[:, None]
    head, body, tail = audio[:crossfade], audio[crossfade:len(audio) - crossfade], audio[len(audio) - crossfade:]
    seam = tail * np.cos(angle) + head * np.sin(angle)
    pieces, length = [head, body], crossfade + len(body)
    while length + crossfade < n:
        pieces += [seam, body]
        length += crossfade + len(body)
    pieces.append(tail)
    return np.concatenate(pieces)


def fit_voice(audio: np.ndarray, sample_rate: int, out_rate: int = VOICE_RATE) -> np.ndarray:
    """A voice-over (samples, channels) at any rate as the narration's mono float32 at ``out_rate``."""
    from ...model_loaders.sampling import resample

    audio = np.asarray(audio, dtype=np.float32)
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    return resample(mono, sample_rate, out_rate)


# -- putting an item in the REEL ------------------------------------------------------

def _png(pixels: np.ndarray) -> Callable[[Any, Path], None]:
    def make(_model: Any, tmp: Path) -> None:
        from PIL import Image

        Image.fromarray(pixels).save(tmp, format="PNG")

    return make


def _wav(audio: np.ndarray, sample_rate: int) -> Callable[[Any, Path], None]:
    def make(_model: Any, tmp: Path) -> None:
        import soundfile

        soundfile.write(tmp, audio, sample_rate, format="WAV", subtype="FLOAT")

    return make


def _add(reel: Reel, target: str, rel: str, inputs: dict[str, Any], make: Callable[[Any, Path], None],
         about: dict[str, Any], warning: str | None = None) -> Reel:
    from .stage import add_warning

    job = Job(f"user:{target}", rel, inputs, make)
    made, count = run_jobs(reel.run_dir, None, [job])
    items = dict(reel.notes.get(NOTE, {}))
    items[target] = {"rel": rel, "inputs": inputs, **about, "written": bool(count)}
    notes: dict[str, Any] = {NOTE: items, **_replaced(reel, target, items[target])}
    if warning:
        notes["warnings"] = add_warning(reel, warning)
    out = reel.evolve(artifacts={**made, target: rel}, notes=notes)
    write_report(out)
    return out


def _replaced(reel: Reel, target: str, item: dict[str, Any]) -> dict[str, Any]:
    """When the stage already ran (a keyframe before Animate, music before Mix), its report now names the user's
    item as the source."""
    kind, _, name = target.partition(":")
    if kind == "keyframe" and "keyframe_sources" in reel.notes:
        return {"keyframe_sources": {**reel.notes["keyframe_sources"], name: "user image"}}
    if kind == "music" and "music" in reel.notes:
        return {"music": {"engine": "user audio", "source": item["from"]}}
    return {}


def _too_late(reel: Reel, made: str, node: str, stage: str) -> None:
    if made in reel.artifacts and not reel.artifacts[made].startswith(USER_FOLDER):
        raise UserMediaError(f"this REEL already has its {made!r} from the {stage} stage: connect {node} before "
                             f"the {stage} node, so the {stage} stage uses it")


def _batch_warning(batch: int, what: str) -> str | None:
    return f"{what}: the IMAGE batch holds {batch} images; the first was used" if batch > 1 else None


def add_portrait(reel: Reel, image: Any, character: str = "") -> Reel:
    """The user's picture as ``character``'s master portrait (the keyframe stage references it)."""
    plan = reel.plan
    char = find_character(plan, character)
    for shot in plan.shots:
        if char.id in shot.characters:
            _too_late(reel, f"keyframe:{shot.id}", "CineReel Image to Portrait", "Keyframes")
    pixels, batch = image_pixels(image)
    height, width = pixels.shape[:2]
    inputs = {"user": "portrait", "character": char.id, "sha256": digest(pixels)}
    return _add(reel, f"portrait:{char.id}", f"user/portrait_{char.id}.png", inputs, _png(pixels),
                {"kind": "portrait", "from": f"user image {width}x{height}"},
                _batch_warning(batch, f"portrait of {char.id}"))


def add_keyframe(reel: Reel, image: Any, shot: str | int) -> Reel:
    """The user's picture as ``shot``'s keyframe, cover-cropped centred to the plan's frame size."""
    from PIL import Image

    plan = reel.plan
    target = find_shot(plan, shot)
    _too_late(reel, f"clip:{target.id}", "CineReel Image to Keyframe", "Animate")
    pixels, batch = image_pixels(image)
    height, width = pixels.shape[:2]
    size = (plan.width, plan.height)
    fitted = np.asarray(cover_fit(Image.fromarray(pixels), size))
    inputs = {"user": "keyframe", "shot": target.id, "sha256": digest(pixels), "size": list(size),
              "fit": KEYFRAME_FIT}
    return _add(reel, f"keyframe:{target.id}", f"user/keyframe_{target.id}.png", inputs, _png(fitted),
                {"kind": "keyframe", "from": f"user image {width}x{height}",
                 "fit": f"{KEYFRAME_FIT} to {size[0]}x{size[1]}"},
                _batch_warning(batch, f"keyframe of {target.id}"))


def add_music(reel: Reel, waveform: Any, sample_rate: int) -> Reel:
    """The user's sound as the music bed: at the mix rate, looped or cut to the reel's length."""
    _too_late(reel, "mix", "CineReel Audio to Music", "Mix")
    audio, sample_rate = audio_samples(waveform, sample_rate)
    duration_s = reel.plan.duration_s
    bed = fit_music(audio, sample_rate, duration_s)
    inputs = {"user": "music", "sha256": digest(audio, sample_rate), "duration_s": duration_s,
              "sample_rate": MIX_RATE, "fit": MUSIC_FIT}
    seconds = audio.shape[0] / sample_rate
    return _add(reel, "music", "user/music.wav", inputs, _wav(bed, MIX_RATE),
                {"kind": "music", "from": f"user audio {seconds:.2f} s, {audio.shape[1]} ch, {sample_rate} Hz",
                 "fit": ("looped" if seconds < duration_s else "cut") + f" to {duration_s:g} s at {MIX_RATE} Hz"})


def add_voice_over(reel: Reel, waveform: Any, sample_rate: int, shot: str | int) -> Reel:
    """The user's sound as ``shot``'s spoken line: the narration stage places it where it places lines."""
    plan = reel.plan
    target = find_shot(plan, shot)
    _too_late(reel, "narration", "CineReel Audio to Voice-over", "Narrate")
    audio, sample_rate = audio_samples(waveform, sample_rate)
    line = fit_voice(audio, sample_rate)
    seconds = len(line) / VOICE_RATE
    if seconds > plan.duration_s:
        raise UserMediaError(f"the voice-over for {target.id} is {seconds:.2f} s long, longer than the whole "
                             f"{plan.duration_s:g} s reel")
    inputs = {"user": "voice-over", "shot": target.id, "sha256": digest(audio, sample_rate),
              "sample_rate": VOICE_RATE}
    return _add(reel, f"narration:{target.id}", f"user/narration_{target.id}.wav", inputs,
                _wav(line, VOICE_RATE),
                {"kind": "voice-over", "from": f"user audio {seconds:.2f} s, {audio.shape[1]} ch, {sample_rate} Hz"})


# -- the stages' side ------------------------------------------------------------------

def user_items(reel: Reel) -> dict[str, dict[str, Any]]:
    """Every user item in the REEL: target artifact name -> its record."""
    return dict(reel.notes.get(NOTE, {}))


def user_job(reel: Reel, target: str) -> Job | None:
    """The artifact standing in for ``target`` when the user gave one, else None. Its key is the one it was
    written with, so ``run_jobs`` finds it current and makes nothing; if its file was deleted since, the job
    says which node to re-run."""
    item = reel.notes.get(NOTE, {}).get(target)
    if item is None:
        return None

    def missing(_model: Any, _tmp: Path) -> None:
        raise UserMediaError(f"the user's {item['kind']} for {target!r} ({item['rel']}) is missing from "
                             f"{reel.run_dir.root}: queue its CineReel adapter node again")

    return Job(target, item["rel"], item["inputs"], missing)


def check_duration(reel: Reel, job: Job) -> None:
    """A user bed fitted to another reel length (a REEL whose plan changed after the adapter) is refused."""
    fitted = job.inputs.get("duration_s")
    if fitted is not None and not math.isclose(fitted, reel.plan.duration_s, abs_tol=1e-6):
        raise UserMediaError(f"the user's music was fitted to {fitted:g} s but the reel is "
                             f"{reel.plan.duration_s:g} s: connect CineReel Audio to Music after the Director")
