"""Encoding, decoding and assembling clips with the ffmpeg binary that imageio-ffmpeg ships.

Plain functions that run without ComfyUI; the motion, critic and assemble
stages use them.

Every video written here is H.264 yuv420p tagged BT.709, the HD colour matrix
(players read an untagged HD file as BT.601 or BT.709 depending on who wrote
them, and the colours shift). Raw frames travel through pipes; ffmpeg's stderr
goes to a temporary file, so a chatty ffmpeg can never fill a pipe and
deadlock, and its last lines are quoted in the error when it fails.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ...model_loaders.children import die_with_parent

AUDIO_RATE = 48_000
AUDIO_BITRATE = "192k"
# x264 presets at CRF 18, measured on 2 cores with six 81-frame 1280×720 preview clips:
# - clips are intermediates: ultrafast is as faithful as veryfast (PSNR 41.0 vs 39.9 dB against the
#   rendered frames) for about half the CPU, at four times the size (2.3 MB per 5 s clip);
# - the reel is the delivery: veryfast comes within 2 % of medium's file size for half its CPU,
#   while superfast doubles the file and ultrafast quadruples it.
CLIP_PRESET = "ultrafast"
REEL_PRESET = "veryfast"
TAG_BT709 = "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
TO_BT709 = "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p"
RGB_TO_BT709 = f"{TO_BT709},{TAG_BT709}"
SRT_MAX_CHARS = 42
SRT_MAX_LINES = 2


class FFmpegError(RuntimeError):
    """ffmpeg failed; the message ends with the last lines it wrote to stderr."""


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _last_lines(log: bytes, count: int = 12) -> str:
    lines = [line for line in log.decode("utf-8", "replace").replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def _failure(what: str, returncode: int, log: bytes) -> FFmpegError:
    return FFmpegError(f"ffmpeg could not {what} (exit code {returncode}):\n{_last_lines(log)}")


def _run(args: Sequence[str], what: str) -> str:
    """Run ffmpeg to completion; return its stderr, where it reports what it read and did."""
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
                          **die_with_parent())
    if done.returncode != 0:
        raise _failure(what, done.returncode, done.stderr)
    return done.stderr.decode("utf-8", "replace")


def _read_log(log: IO[bytes]) -> bytes:
    log.seek(0)
    return log.read()


# -- writing clips --------------------------------------------------------------

def _as_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    if np.issubdtype(frame.dtype, np.floating):  # ComfyUI's IMAGE convention: float in [0, 1]
        return (np.clip(np.nan_to_num(frame), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"frames must be uint8 or float, got {frame.dtype}")


def write_clip(frames: np.ndarray | Iterable[np.ndarray], fps: int, path: Path, crf: int = 18,
               preset: str = CLIP_PRESET) -> None:
    """Encode RGB frames (H×W×3, uint8, or float in [0, 1]) to an H.264 yuv420p MP4 at ``path``.

    ``frames`` is an array (T, H, W, 3) or any iterable of frames; an iterable is streamed, so a
    generator never holds the clip in memory. If iterating raises (a cancelled render), ffmpeg is
    stopped and the exception propagates.
    """
    path = Path(path)
    stream = iter(frames)
    try:
        first = _as_uint8(np.asarray(next(stream)))
    except StopIteration:
        raise ValueError("write_clip needs at least one frame") from None
    if first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"frames must be H×W×3 RGB, got shape {first.shape}")
    height, width = first.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs an even width and height, got {width}×{height}")
    args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
            "-an", "-vf", RGB_TO_BT709, "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
            # No B-frames: every frame decodes from earlier ones only, so assembly can drop a clip's
            # spare last frame and join clips without re-encoding ("copy").
            "-bf", "0", "-movflags", "+faststart", "-f", "mp4", str(path)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, **die_with_parent())
        assert proc.stdin is not None
        try:
            for index, frame in enumerate(_prepend(first, stream)):
                frame = _as_uint8(np.asarray(frame))
                if frame.shape != first.shape:
                    raise ValueError(f"frame {index} has shape {frame.shape}, unlike the first frame's {first.shape}")
                proc.stdin.write(np.ascontiguousarray(frame).data)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its exit code and log say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            raise _failure(f"encode {path.name}", proc.returncode, _read_log(log))


def _prepend(first: np.ndarray, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def encode_still(image: Path, camera_filter: str, num_frames: int, fps: int, path: Path, crf: int = 18,
                 preset: str = CLIP_PRESET, on_frame: Callable[[int, int], None] | None = None,
                 threads: int = 0) -> None:
    """Encode a clip made from one still picture by an ffmpeg filter chain (a camera move over a keyframe),
    in one ffmpeg process: the frames are drawn where they are encoded and never cross a pipe.

    The picture is converted to BT.709 4:2:0 once, before ``camera_filter`` turns it into ``num_frames``
    frames; the settings are ``write_clip``'s, so both make clips the assembly can join. ``on_frame(done,
    total)`` follows the encoder's progress; if it raises (a cancel), ffmpeg is stopped and it propagates.
    ``threads`` is x264's thread count (0: x264 picks, about one and a half per core).
    """
    from PIL import Image

    path = Path(path)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    with Image.open(image) as still:  # reads the header only
        width, height = still.size
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs an even width and height, got {width}×{height}")
    if threads < 0:
        raise ValueError(f"threads must be 0 (x264 picks) or more, got {threads}")
    middle = _middle_index(num_frames)
    # The frame the middle of the clip is made from comes out of the same process beside the clip, as raw RGB:
    # the contact sheet shows it without decoding the clip again (``middle_frame``).
    graph = (f"[0:v]{TO_BT709},{camera_filter},settb=1/{fps},setpts=N,{TAG_BT709},split=2[clip][tap];"
             f"[tap]select='eq(n\\,{middle})',scale=out_color_matrix=bt709:in_range=tv:out_range=pc,"
             f"format=rgb24[middle]")
    tap = path.parent / f".{path.stem}.{secrets.token_hex(6)}.partial.middle.rgb"
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1",
            "-y", "-i", str(image), "-an", "-filter_complex", graph,
            "-map", "[clip]", "-r", str(fps), "-frames:v", str(num_frames),
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-bf", "0", "-threads", str(threads),
            "-movflags", "+faststart", "-f", "mp4", str(path),
            "-map", "[middle]", "-frames:v", "1", "-f", "rawvideo", str(tap)]
    try:
        _encode_still(args, path, num_frames, on_frame)
        _remember_middle(path, middle, np.fromfile(tap, dtype=np.uint8).reshape(height, width, 3))
    finally:
        tap.unlink(missing_ok=True)


def _encode_still(args: list[str], path: Path, num_frames: int, on_frame: Callable[[int, int], None] | None) -> None:
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                **die_with_parent())
        assert proc.stdout is not None
        try:
            for line in proc.stdout:  # -progress: key=value lines, a block per update
                if on_frame is not None and line.startswith(b"frame="):
                    on_frame(min(num_frames, int(line[6:])), num_frames)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if proc.wait() != 0:
            raise _failure(f"encode {path.name}", proc.returncode, _read_log(log))
    if on_frame is not None:
        on_frame(num_frames, num_frames)


# -- probing --------------------------------------------------------------------

_CHANNEL_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7,
                    "7.1": 8}


def _split_top_level(text: str) -> list[str]:
    """Split ffmpeg's stream description at commas outside parentheses: 'yuv420p(tv, bt709)' stays whole."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


_STREAM_LINE = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$")


_REFERENCE_FRAMES = re.compile(r"^\d+ reference frames?\b")


def _parse_stream(kind: str, description: str) -> dict[str, Any]:
    """Facts from one stream description: 'h264 (High) (avc1 / ...), yuv420p(tv, bt709), 1280x720, 16 fps, ...'."""
    # ffmpeg's verbose log adds "1 reference frame (avc1 / ...)" after the codec: not one of the facts
    parts = [part for part in _split_top_level(description) if not _REFERENCE_FRAMES.match(part)]
    facts: dict[str, Any] = {"codec": parts[0].split()[0] if parts[0] else None}
    if kind == "Video":
        facts["pix_fmt"] = re.match(r"[\w]+", parts[1]).group(0) if len(parts) > 1 else None
        for part in parts:
            size = re.match(r"(\d+)x(\d+)", part)
            if size and "width" not in facts:
                facts["width"], facts["height"] = int(size.group(1)), int(size.group(2))
            rate = re.match(r"([\d.]+)(k?) (fps|tbr)$", part)
            if rate and (rate.group(3) == "fps" or "fps" not in facts):
                facts["fps"] = float(rate.group(1)) * (1000 if rate.group(2) else 1)
    elif kind == "Audio":
        for part in parts:
            if m := re.match(r"(\d+) Hz$", part):
                facts["sample_rate"] = int(m.group(1))
            layout = part.split("(")[0]
            if layout in _CHANNEL_LAYOUTS:
                facts["channels"] = _CHANNEL_LAYOUTS[layout]
            elif m := re.match(r"(\d+) channels", part):
                facts["channels"] = int(m.group(1))
    return facts


def _input_streams(log: str) -> dict[str, dict[str, Any]]:
    """The first video and first audio stream of ``Input #0`` in an ffmpeg log."""
    section = log.split("Output #0", 1)[0]
    streams: dict[str, dict[str, Any]] = {}
    for line in section.splitlines():
        if match := _STREAM_LINE.match(line):
            streams.setdefault(match.group(1).lower(), _parse_stream(match.group(1), match.group(2)))
    return streams


def probe(path: Path) -> dict[str, Any]:
    """What a media file holds, parsed from ffmpeg's own report (imageio-ffmpeg ships no ffprobe).

    Keys: width, height, fps, frames (counted exactly, by demuxing without decoding), duration
    (the container's, seconds), video_duration (frames / fps), video_codec, pix_fmt, audio_codec,
    sample_rate, channels. Keys for a missing stream are None.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such media file: {path}")
    log = _run(["-i", str(path), "-map", "0", "-c", "copy", "-f", "null", "-"], f"read {Path(path).name}")
    streams = _input_streams(log)
    video, audio = streams.get("video", {}), streams.get("audio", {})
    hms = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", log)
    frames = re.findall(r"frame=\s*(\d+)", log)
    info: dict[str, Any] = {
        **_video_facts(video, int(frames[-1]) if frames and video else None),
        "duration": int(hms.group(1)) * 3600 + int(hms.group(2)) * 60 + float(hms.group(3)) if hms else None,
        "audio_codec": audio.get("codec"), "sample_rate": audio.get("sample_rate"), "channels": audio.get("channels"),
    }
    info["video_duration"] = info["frames"] / info["fps"] if info["frames"] is not None and info["fps"] else None
    return info


_INPUT_HEADER = re.compile(r"^Input #(\d+),", re.MULTILINE)
_MUXED = re.compile(r"Output stream #0:(\d+) \(video\): (\d+) packets muxed")
VIDEO_FACTS = ("width", "height", "fps", "frames", "video_codec", "pix_fmt")


def _video_facts(video: dict[str, Any], frames: int | None) -> dict[str, Any]:
    """``VIDEO_FACTS`` from a parsed video stream description and a frame count."""
    return {"width": video.get("width"), "height": video.get("height"), "fps": video.get("fps"), "frames": frames,
            "video_codec": video.get("codec"), "pix_fmt": video.get("pix_fmt")}


# Video facts already read, by file (path, inode, modification time, size): the headless runner reads the
# clips' facts while the sound branch finishes, and the assembly then finds them here.
_videos_read: dict[tuple[str, int, int, int], dict[str, Any]] = {}
MAX_VIDEOS_READ = 1024


def _file_key(path: Path) -> tuple[str, int, int, int]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such media file: {path}")
    stat = path.stat()
    return str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size


def probe_videos(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """``probe``'s video facts (``VIDEO_FACTS``) of each file's first video stream, from one ffmpeg process
    that demuxes them all: a process each took 0.03 s of CPU and, started from threads, a third of a second
    of the assembly's wall time for six clips. Files read before and unchanged since are not read again.
    A file without video raises ``FFmpegError``."""
    keys = [_file_key(path) for path in paths]
    if all(key in _videos_read for key in keys):
        return [dict(_videos_read[key]) for key in keys]
    inputs = [arg for path in paths for arg in ("-i", str(path))]
    maps = [arg for index in range(len(paths)) for arg in ("-map", f"{index}:v:0")]
    log = _run(["-loglevel", "verbose", *inputs, *maps, "-c", "copy", "-f", "null", "-"],
               f"read the video of {len(paths)} files")
    described = log.split("Output #0", 1)[0]
    headers = list(_INPUT_HEADER.finditer(described))
    muxed = {int(index): int(count) for index, count in _MUXED.findall(log)}
    found = []
    for k, header in enumerate(headers):
        section = described[header.start():headers[k + 1].start() if k + 1 < len(headers) else len(described)]
        found.append(_video_facts(_input_streams(section).get("video", {}), muxed.get(k)))
    if len(found) != len(paths) or any(info["frames"] is None for info in found):
        raise FFmpegError(f"could not read the video of {len(paths)} files from ffmpeg's report")
    if len(_videos_read) + len(keys) > MAX_VIDEOS_READ:
        _videos_read.clear()
    _videos_read.update((key, dict(info)) for key, info in zip(keys, found))
    return found


# -- reading clips --------------------------------------------------------------

def _video_info(path: Path) -> dict[str, Any]:
    info = probe(path)
    if info["frames"] is None:
        raise ValueError(f"{Path(path).name} has no video stream")
    return info


def _decode(path: Path, info: dict[str, Any], select: str | None, expected: int) -> np.ndarray:
    """Decode the frames that pass the ``select`` filter expression (all when None), at most ``expected``,
    straight into one preallocated array."""
    frames = np.empty((expected, info["height"], info["width"], 3), dtype=np.uint8)
    vf = [f"select='{select}'"] if select else []
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
            "-vf", ",".join([*vf, "format=rgb24"]), "-fps_mode", "passthrough", "-frames:v", str(expected),
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    count = 0
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, **die_with_parent())
        assert proc.stdout is not None
        try:
            while count < expected and _read_exactly(proc.stdout, memoryview(frames[count]).cast("B")):
                count += 1
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        if returncode != 0:
            raise _failure(f"decode {Path(path).name}", returncode, _read_log(log))
    return frames[:count]


def _read_exactly(stream: IO[bytes], buffer: memoryview) -> bool:
    filled = 0
    while filled < len(buffer):
        got = stream.readinto(buffer[filled:])  # type: ignore[attr-defined]
        if not got:
            return False
        filled += got
    return True


def read_clip(path: Path, max_frames: int | None = None, every: int = 1) -> np.ndarray:
    """Decode a clip to uint8 RGB frames (T, H, W, 3): every ``every``-th frame, at most ``max_frames``."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    info = _video_info(path)
    expected = -(-info["frames"] // every)
    if max_frames is not None:
        expected = min(expected, max(0, max_frames))
    return _decode(path, info, f"not(mod(n\\,{every}))" if every > 1 else None, expected)


def sample_frames(path: Path, count: int) -> np.ndarray:
    """``count`` frames spread evenly from the first to the last (fewer if the clip is shorter)."""
    info = _video_info(path)
    indices = sorted({round(i) for i in np.linspace(0, info["frames"] - 1, max(1, count))}) if info["frames"] else []
    return _decode(path, info, "+".join(f"eq(n\\,{i})" for i in indices) or None, len(indices))


def frame_at(path: Path, index: int) -> np.ndarray | None:
    """Frame ``index`` of a clip (RGB uint8), decoding no further than it; None when the clip is shorter."""
    import io

    from PIL import Image

    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
            "-vf", f"select='eq(n\\,{index})',format=rgb24", "-frames:v", "1", "-f", "image2pipe", "-c:v", "ppm",
            "pipe:1"]
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False, **die_with_parent())
    if done.returncode != 0:
        raise _failure(f"decode frame {index} of {Path(path).name}", done.returncode, done.stderr)
    if not done.stdout:
        return None
    with Image.open(io.BytesIO(done.stdout)) as img:
        return np.asarray(img.convert("RGB"))


# The middle frame of each clip ``encode_still`` wrote in this process, by the file's identity (device, inode,
# size, modification time: a rename into place keeps them, any rewrite changes them), with its index.
_written_middles: dict[tuple[int, int, int, int], tuple[int, np.ndarray]] = {}
MAX_WRITTEN_MIDDLES = 64


def _identity(path: Path) -> tuple[int, int, int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _middle_index(count: int) -> int:
    return round((count - 1) / 2)


def _remember_middle(path: Path, index: int, frame: np.ndarray) -> None:
    if len(_written_middles) >= MAX_WRITTEN_MIDDLES:
        _written_middles.clear()
    _written_middles[_identity(path)] = (index, frame)


def middle_frame(path: Path, frames: int | None = None) -> np.ndarray:
    """The clip's middle frame (the middle one of ``sample_frames(path, 3)``); ``frames``, the clip's frame
    count when the caller knows it, spares reading the whole file to count them. For a clip ``encode_still``
    wrote in this process, the frame its encoder was given (nothing is decoded)."""
    count = frames if frames is not None else _video_info(path)["frames"]
    written = _written_middles.get(_identity(path))
    if written is not None and count and written[0] == _middle_index(count):
        return written[1].copy()
    frame = frame_at(path, _middle_index(count)) if count else None
    if frame is None:  # the clip is shorter than the caller said
        spread = sample_frames(path, 3)
        frame = spread[len(spread) // 2]
    return frame


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio track as float32 samples (N, channels) and its sample rate."""
    info = probe(path)
    if info["audio_codec"] is None:
        raise ValueError(f"{Path(path).name} has no audio track")
    channels, rate = info["channels"] or 2, info["sample_rate"]
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
            "-ac", str(channels), "-ar", str(rate), "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"]
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False, **die_with_parent())
    if done.returncode != 0:
        raise _failure(f"decode the audio of {Path(path).name}", done.returncode, done.stderr)
    samples = np.frombuffer(done.stdout, dtype="<f4").reshape(-1, channels)
    return samples.astype(np.float32), rate


# -- the reel -------------------------------------------------------------------

COPY = "copy"


def _audio_graph(audio_input: str | None, total_samples: int) -> str:
    source = f"[{audio_input}]aresample={AUDIO_RATE}" if audio_input else f"anullsrc=r={AUDIO_RATE}:cl=stereo"
    return (f"{source},aformat=sample_fmts=fltp:channel_layouts=stereo,"
            f"apad=whole_len={total_samples},atrim=end_sample={total_samples}[a]")


# ffmpeg's AAC encoder with its "fast" coder: 30 s of stereo at 192 kb/s in 0.9 s instead of 1.6 s with the default
# "twoloop" (two cores here); at this bit rate both are transparent for narration over a music bed.
_AAC = ["-c:a", "aac", "-aac_coder", "fast", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE), "-ac", "2"]
_MP4_OUT = ["-movflags", "+faststart", "-f", "mp4", "-y"]


def encode_delivery_audio(audio_wav: Path | None, out_path: Path, total_samples: int) -> None:
    """The reel's sound as the delivery file carries it: AAC 48 kHz stereo at exactly ``total_samples`` (padded
    with silence or cut; a silent track without ``audio_wav``), in an MP4 the assembly copies it from."""
    inputs, graph, out = _audio_args(0, audio_wav, None, total_samples)
    _run([*inputs, "-filter_complex", graph, *out, str(out_path)],
         f"encode the reel's sound into {Path(out_path).name}")


def can_copy(clips: Sequence[Path], frames_per_shot: Sequence[int], fps: int) -> bool:
    """Clips can be joined without re-encoding when they share one H.264 format and have the frames needed."""
    infos = probe_videos(clips)
    first = infos[0]
    same = all((i["width"], i["height"], i["pix_fmt"], i["video_codec"]) ==
               (first["width"], first["height"], first["pix_fmt"], "h264") for i in infos)
    return same and all(i["fps"] and abs(i["fps"] - fps) < 1e-3 and i["frames"] >= n
                        for i, n in zip(infos, frames_per_shot))


def _audio_args(input_index: int, audio_wav: Path | None, encoded_audio: Path | None,
                total_samples: int) -> tuple[list[str], str | None, list[str]]:
    """The audio's inputs, filter chain (None: nothing to filter) and output options: ``encoded_audio``
    (``encode_delivery_audio``'s file) copied as it is, else ``audio_wav`` (or silence) encoded here."""
    if encoded_audio is not None:
        return ["-i", str(encoded_audio)], None, ["-map", f"{input_index}:a", "-c:a", "copy", *_MP4_OUT]
    inputs = ["-i", str(audio_wav)] if audio_wav is not None else []
    graph = _audio_graph(f"{input_index}:a" if audio_wav is not None else None, total_samples)
    return inputs, graph, ["-map", "[a]", *_AAC, *_MP4_OUT]


def _concat_copy(clips: Sequence[Path], frames_per_shot: Sequence[int], fps: int, audio_wav: Path | None,
                 out_path: Path, total_samples: int, encoded_audio: Path | None = None) -> None:
    """Join the clips' packets as they are (concat demuxer, ``outpoint`` after each shot's frames)."""
    # Beside the output, named as a partial file: a killed run's leftover is cleaned when the run resumes.
    listing = Path(out_path).parent / f".{Path(out_path).stem}.{secrets.token_hex(6)}.partial.concat.txt"
    with open(listing, "x", encoding="utf-8") as text:
        for clip, count in zip(clips, frames_per_shot):
            escaped = str(Path(clip).resolve()).replace("'", "'\\''")
            text.write(f"file '{escaped}'\noutpoint {count / fps:.6f}\n")
    try:
        audio_inputs, graph, audio_out = _audio_args(1, audio_wav, encoded_audio, total_samples)
        _run(["-f", "concat", "-safe", "0", "-i", str(listing), *audio_inputs,
              *(["-filter_complex", graph] if graph else []), "-map", "0:v", "-c:v", "copy", *audio_out,
              str(out_path)], f"join the clips into {Path(out_path).name}")
    finally:
        listing.unlink(missing_ok=True)


def assemble_reel(clips: Sequence[Path], frames_per_shot: Sequence[int], fps: int, audio_wav: Path | None,
                  out_path: Path, crf: int = 18, preset: str = REEL_PRESET, encoded_audio: Path | None = None) -> str:
    """Cut the shots together and master the delivery file: H.264 yuv420p + AAC 48 kHz stereo MP4.

    Exactly ``frames_per_shot[i]`` frames come from clip ``i`` (clips carry one frame more than they
    show); a clip that is too short holds its last frame, so every shot starts on time and the reel
    lasts exactly ``sum(frames_per_shot) / fps`` seconds. The audio is padded with silence or cut to
    that length; without ``audio_wav`` the reel gets a silent stereo track (platforms and players
    expect one). A mono mix is spread to both sides at -3 dB each, which keeps its BS.1770 loudness.

    ``preset="copy"`` joins the clips' H.264 as it is (no generation loss, seconds instead of a full
    encode; the file is as large as the clips), falling back to an encode at ``REEL_PRESET`` when the
    clips cannot be joined so. Any x264 preset re-encodes at ``crf`` in one ffmpeg process. Returns how
    the video was made: "copy" or the preset used. ``encoded_audio``, the file ``encode_delivery_audio`` made
    from ``audio_wav`` for this length, is copied instead of encoding the sound again.
    """
    if not clips or len(clips) != len(frames_per_shot):
        raise ValueError(f"need one frame count per clip, got {len(clips)} clips and {len(frames_per_shot)} counts")
    if any(n < 1 for n in frames_per_shot):
        raise ValueError(f"frames_per_shot must all be >= 1, got {list(frames_per_shot)}")
    for clip in clips:
        if not Path(clip).is_file():
            raise FileNotFoundError(f"clip not found: {clip}")
    total_samples = round(sum(frames_per_shot) * AUDIO_RATE / fps)
    if preset == COPY:
        if can_copy(clips, frames_per_shot, fps):
            _concat_copy(clips, frames_per_shot, fps, audio_wav, out_path, total_samples, encoded_audio)
            return COPY
        preset = REEL_PRESET
    inputs: list[str] = []
    for clip in clips:
        inputs += ["-i", str(clip)]
    graph = [f"[{i}:v]tpad=stop_mode=clone:stop={n},trim=end_frame={n},setpts=N/({fps}*TB)[v{i}]"
             for i, n in enumerate(frames_per_shot)]
    segments = "".join(f"[v{i}]" for i in range(len(clips)))
    graph.append(f"{segments}concat=n={len(clips)}:v=1:a=0,format=yuv420p,{TAG_BT709}[v]")
    audio_inputs, audio_graph, audio_out = _audio_args(len(clips), audio_wav, encoded_audio, total_samples)
    if audio_graph:
        graph.append(audio_graph)
    _run([*inputs, *audio_inputs, "-filter_complex", ";".join(graph), "-map", "[v]",
          "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-r", str(fps), *audio_out, str(out_path)],
         f"assemble {Path(out_path).name}")
    return preset


# -- subtitles ------------------------------------------------------------------

def srt_timestamp(seconds: float) -> str:
    """``HH:MM:SS,mmm`` (SubRip), rounded to the millisecond."""
    hours, ms = divmod(max(0, round(seconds * 1000)), 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def split_cue(start: float, end: float, text: str, max_chars: int = SRT_MAX_CHARS,
              max_lines: int = SRT_MAX_LINES) -> list[tuple[float, float, list[str]]]:
    """Wrap ``text`` to ``max_chars`` a line; past ``max_lines`` lines, split the cue into several,
    sharing its time in proportion to each part's length so reading speed stays even."""
    lines = textwrap.wrap(" ".join(text.split()), width=max_chars)
    parts = [lines[i:i + max_lines] for i in range(0, len(lines), max_lines)]
    weights = np.cumsum([0] + [sum(len(line) for line in part) for part in parts])
    bounds = [start + (end - start) * w / weights[-1] for w in weights] if parts else []
    return [(bounds[i], bounds[i + 1], part) for i, part in enumerate(parts)]


def write_srt(cues: Sequence[tuple[float, float, str]], path: Path) -> None:
    """Write SubRip subtitles (UTF-8): 1-based indices, ``HH:MM:SS,mmm`` times, blank-line separated."""
    blocks = []
    for number, (start, end, text) in enumerate(cues, start=1):
        if start < 0 or end <= start:
            raise ValueError(f"cue {number} must have 0 <= start < end, got {start:g} to {end:g} s")
        for part_start, part_end, lines in split_cue(start, end, text):
            timing = f"{srt_timestamp(part_start)} --> {srt_timestamp(part_end)}"
            blocks.append(f"{len(blocks) + 1}\n{timing}\n" + "\n".join(lines) + "\n")
    Path(path).write_text("\n".join(blocks), encoding="utf-8")
