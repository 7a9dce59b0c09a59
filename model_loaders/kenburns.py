"""Ken Burns camera moves over a keyframe: the weights-free preview backend for motion.

Each frame is a sub-pixel crop box of the keyframe resized back to full size
(``Image.resize`` with a float ``box``, bilinear: about 10 ms a 1280×720 frame
on one core here, against 22 ms for an affine ``Image.transform``). The box
follows an eased path: smoothstep progress, so the move starts and ends at
rest. Pans and tilts resample one axis per frame (see ``_prepare``), and
``render_clip`` renders frames on a thread per core.

Directions follow the camera, as a director says them: ``pan_left`` turns the
camera left, so the scene slides right across the frame; ``tilt_up`` tilts it
up, so the scene slides down; ``push_in`` magnifies.

The move's size follows the shot's flow shift, the motion model's own knob:
travel = 2 % of the frame per unit, so 5.0 (hero) moves 10 % and 8.0 (b-roll,
establishing) moves 16 %. ``static`` breathes: a slow zoom in and back out by
a sixth of that, so the clip is never frozen. The seed picks where a push
lands and where a pan runs within the frame's slack, so a retry differs.

The motion stage does not draw these frames in Python: ``camera_filter`` says
the same move in ffmpeg's filter language (a window sliding over the
magnified keyframe for pans and tilts, ``zoompan`` plane by plane for pushes,
pulls and breaths, with per-frame expressions), so the pixels are resampled where they
are encoded, in one ffmpeg process per clip, and never cross a pipe. ``render_clip`` and
``iter_clip`` draw the frames themselves: the reference the filter is tested
against, and frames for whoever wants them as arrays.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from .vocabulary.plan import CAMERA_MOVES, MAX_FLOW_SHIFT, MIN_FLOW_SHIFT

TRAVEL_PER_FLOW_SHIFT = 0.02
BREATHING_SHARE = 1 / 6
FOCUS_SPREAD = 0.5  # how far off centre the seed may place a push or a breath, as a share of the slack

Box = tuple[float, float, float, float]
ZOOMS = ("static", "push_in", "pull_out")  # the moves whose box changes size


def frames_for_duration(duration_s: float, fps: int) -> int:
    """Frames to render for a shot: one more than it shows (81 for 5 s at 16 fps); assembly drops the last."""
    return round(duration_s * fps) + 1


def travel(flow_shift: float) -> float:
    """How far the camera moves over the clip, as a fraction of the frame."""
    return TRAVEL_PER_FLOW_SHIFT * min(MAX_FLOW_SHIFT, max(MIN_FLOW_SHIFT, flow_shift))


def smoothstep(t: float) -> float:
    t = min(1.0, max(0.0, t))
    return t * t * (3.0 - 2.0 * t)


def _move(camera: str, flow_shift: float, num_frames: int, seed: int) -> tuple[float, float, float]:
    """The move's travel, and where the seed places it in the frame's slack (the focus, off centre by u, v):
    where a push lands, which band a pan runs along."""
    if camera not in CAMERA_MOVES:
        raise ValueError(f"camera must be one of {', '.join(CAMERA_MOVES)}, got {camera!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    u, v = np.random.default_rng(seed % 2**64).uniform(-FOCUS_SPREAD, FOCUS_SPREAD, 2)
    return travel(flow_shift), float(u), float(v)


def camera_boxes(size: tuple[int, int], camera: str, flow_shift: float, num_frames: int, seed: int) -> list[Box]:
    """The crop box (left, top, right, bottom, in keyframe pixels) of each frame."""
    amount, u, v = _move(camera, flow_shift, num_frames, seed)
    boxes = []
    for i in range(num_frames):
        t = i / (num_frames - 1) if num_frames > 1 else 0.0
        p = smoothstep(t)
        fx, fy = 0.5 + u, 0.5 + v
        if camera == "static":
            zoom = 1.0 + amount * BREATHING_SHARE * (1.0 - math.cos(2.0 * math.pi * t)) / 2.0
        elif camera == "push_in":
            zoom = 1.0 + amount * p
        elif camera == "pull_out":
            zoom = 1.0 + amount * (1.0 - p)
        else:
            zoom = 1.0 + amount
            along = p if camera in ("pan_right", "tilt_down") else 1.0 - p
            if camera.startswith("pan"):
                fx = along
            else:
                fy = along
        boxes.append(_box(size, zoom, fx, fy))
    return boxes


def _path_exprs(camera: str, flow_shift: float, num_frames: int, seed: int,
                frame: str) -> tuple[str, str, str]:
    """``camera_boxes``'s zoom and box placement (fx, fy in [0, 1]) as ffmpeg expressions of the frame number
    (the filter's variable ``frame``); a zoom that does not change is a plain number."""
    amount, u, v = _move(camera, flow_shift, num_frames, seed)
    t = f"({frame}/{num_frames - 1})" if num_frames > 1 else "0"
    p = f"({t}*{t}*(3-2*{t}))"
    fx, fy = repr(0.5 + u), repr(0.5 + v)
    if camera == "static":
        zoom = f"(1+{amount * BREATHING_SHARE!r}*(1-cos(2*PI*{t}))/2)"
    elif camera == "push_in":
        zoom = f"(1+{amount!r}*{p})"
    elif camera == "pull_out":
        zoom = f"(1+{amount!r}*(1-{p}))"
    else:
        zoom = repr(1.0 + amount)
        along = p if camera in ("pan_right", "tilt_down") else f"(1-{p})"
        if camera.startswith("pan"):
            fx = along
        else:
            fy = along
    return zoom, fx, fy


def camera_filter(size: tuple[int, int], camera: str, flow_shift: float, num_frames: int, seed: int) -> str:
    """An ffmpeg filtergraph fragment (for ``-filter_complex``: it may hold labels) that turns the still
    keyframe (one 4:2:0 frame of ``size``) into the clip's ``num_frames`` frames along ``camera_boxes``'s path,
    to the nearest whole pixel.

    A pan or tilt keeps the box's size: the keyframe is magnified once and a frame-sized window slides
    over it (``crop`` with ``exact``), which costs nothing per frame. A push, pull or breath changes the
    box's size every frame: ``zoompan`` cuts it and resizes it to the frame, on each plane by itself (see
    ``_zoom_planes``).
    """
    width, height = size
    repeat = f"loop=loop={num_frames - 1}:size=1:start=0"
    if camera in ZOOMS:
        zoom, fx, fy = _path_exprs(camera, flow_shift, num_frames, seed, "on")
        return f"{repeat},{_zoom_planes(zoom, fx, fy, width, height)}"
    zoom, fx, fy = _path_exprs(camera, flow_shift, num_frames, seed, "n")
    return (f"scale=w='{width}*{zoom}':h='{height}*{zoom}':flags=bicubic,{repeat},"
            f"crop=w={width}:h={height}:x='(iw-{width})*{fx}':y='(ih-{height})*{fy}':exact=1")


def _zoom_planes(zoom: str, fx: str, fy: str, width: int, height: int) -> str:
    """``zoompan`` on the luma plane and on each half-size chroma plane, joined again into 4:2:0.

    On 4:2:0 frames zoompan moves its box in steps of two pixels (the chroma planes' one), which shows as
    judder in a slow push; on 4:4:4 it moves by one, but there the filters took 0.40 s of CPU for a 720p clip of
    81 frames, as much as the clip's x264. Plane by plane the luma box moves by one pixel (the same luma as on
    4:4:4) and the chroma, which the eye resolves at half the detail, by one chroma pixel: 0.22 s.
    """
    def zoompan(w: int, h: int) -> str:
        return f"zoompan=z='{zoom}':x='(iw-iw/zoom)*{fx}':y='(ih-ih/zoom)*{fy}':d=1:s={w}x{h}"

    return (f"extractplanes=y+u+v[kb_y][kb_u][kb_v];[kb_y]{zoompan(width, height)}[kb_zy];"
            f"[kb_u]{zoompan(width // 2, height // 2)}[kb_zu];[kb_v]{zoompan(width // 2, height // 2)}[kb_zv];"
            f"[kb_zy][kb_zu][kb_zv]mergeplanes=0x001020:yuv420p")


def _box(size: tuple[int, int], zoom: float, fx: float, fy: float) -> Box:
    """A box 1/zoom the size of the frame; (fx, fy) in [0, 1] place it from one edge of the slack to the other."""
    width, height = size
    w, h = width / zoom, height / zoom
    left, top = (width - w) * min(1.0, max(0.0, fx)), (height - h) * min(1.0, max(0.0, fy))
    return left, top, left + w, top + h


def _prepare(keyframe: Image.Image, camera: str, flow_shift: float, num_frames: int,
             seed: int) -> tuple[Image.Image, list[Box]]:
    """The image to crop each frame from, and the boxes to crop.

    Pillow resamples the two axes in separate passes and skips a pass whose box spans the whole axis.
    A pan keeps the same rows in every frame (a tilt the same columns), so that axis is resampled
    once here and each frame pays for one pass, not two: half the cost, the same pixels (±1).
    """
    source = keyframe if keyframe.mode == "RGB" else keyframe.convert("RGB")
    width, height = source.size
    boxes = camera_boxes(source.size, camera, flow_shift, num_frames, seed)
    rows, columns = {(b[1], b[3]) for b in boxes}, {(b[0], b[2]) for b in boxes}
    if len(rows) == 1 and len(columns) > 1:
        top, bottom = rows.pop()
        source = source.resize(source.size, Image.Resampling.BILINEAR, box=(0, top, width, bottom))
        boxes = [(left, 0, right, height) for left, _, right, _ in boxes]
    elif len(columns) == 1 and len(rows) > 1:
        left, right = columns.pop()
        source = source.resize(source.size, Image.Resampling.BILINEAR, box=(left, 0, right, height))
        boxes = [(0, top, width, bottom) for _, top, _, bottom in boxes]
    source.load()
    return source, boxes


def _frame(source: Image.Image, box: Box) -> np.ndarray:
    return np.asarray(source.resize(source.size, Image.Resampling.BILINEAR, box=box))


def iter_clip(keyframe: Image.Image, camera: str, flow_shift: float, num_frames: int,
              seed: int) -> Iterator[np.ndarray]:
    """The clip's frames in order (uint8 H×W×3), to stream into an encoder without holding the clip.

    A thread per core renders a few frames ahead (Pillow's resize releases the GIL), so streaming
    into ``write_clip`` overlaps rendering with encoding.
    """
    source, boxes = _prepare(keyframe, camera, flow_shift, num_frames, seed)
    workers = _workers()
    with ThreadPoolExecutor(workers) as pool:
        ahead: deque[Future[np.ndarray]] = deque()
        for box in boxes:
            ahead.append(pool.submit(_frame, source, box))
            if len(ahead) > 2 * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def render_clip(keyframe: Image.Image, camera: str, flow_shift: float, num_frames: int, seed: int,
                on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """A Ken Burns clip over ``keyframe``: uint8 array (num_frames, H, W, 3) at the keyframe's size.

    Frames render on a thread per core (Pillow's resize releases the GIL). ``on_progress(done, total)``
    is called as frames finish; it may raise to cancel.
    """
    source, boxes = _prepare(keyframe, camera, flow_shift, num_frames, seed)
    frames = np.empty((num_frames, source.height, source.width, 3), dtype=np.uint8)

    def render(index: int) -> None:
        frames[index] = _frame(source, boxes[index])

    workers = _workers()
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, num_frames, 4 * workers):
            indices = range(start, min(num_frames, start + 4 * workers))
            list(pool.map(render, indices))
            if on_progress is not None:
                on_progress(indices[-1] + 1, num_frames)
    return frames
