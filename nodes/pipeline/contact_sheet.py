"""``contact_sheet.png``: the run as pictures, refreshed as its stages finish.

Layout (``SheetLayout``): a header with the title and each character's portrait; one row per shot with
its keyframe, a frame of its kept attempt, small frames of its other attempts, and text (shot id, type,
camera, then per attempt what was measured or judged, its label and the remedy that made it); a footer
with loudness, duration, language and each stage's time. The sheet's height is the header, one fixed
row per shot and the footer, so its size says how many shots it shows.

It is a view of the run, not an artifact: rewritten atomically (temporary file, then rename) after the
keyframes, motion, gate and assemble stages, never keyed, never a reason to re-render anything.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rundir import atomic_write

if TYPE_CHECKING:
    from PIL import Image

    from ...model_loaders.vocabulary.plan import Plan
    from .reel import Reel

SHEET = "contact_sheet.png"
THUMB_H = 160  # keyframe and kept-frame height; widths follow the reel's aspect
SMALL_SCALE = 0.5  # other attempts' frames, relative to THUMB_H
MAX_SMALL = 4  # other attempts shown as frames per row (all are listed as text)
MARGIN = 16
GAP = 12
HEADER_H = 236
ROW_H = THUMB_H + 2 * GAP + 24
FOOTER_H = 84
TEXT_W = 640
BACKGROUND = (22, 23, 27)
PANEL = (34, 36, 42)
INK = (235, 235, 228)
DIM = (160, 162, 168)
KEPT = (112, 200, 120)
FAILED = (224, 120, 100)


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on the sheet of ``plan`` (a test finds the kept frame of a row with it)."""

    thumb_w: int
    shots: int

    @classmethod
    def of(cls, plan: Plan) -> SheetLayout:
        return cls(max(1, round(THUMB_H * plan.width / plan.height)), len(plan.shots))

    @property
    def small(self) -> tuple[int, int]:
        return max(1, round(self.thumb_w * SMALL_SCALE)), max(1, round(THUMB_H * SMALL_SCALE))

    @property
    def width(self) -> int:
        smalls = 2 * (self.small[0] + GAP)
        return MARGIN + 2 * (self.thumb_w + GAP) + smalls + TEXT_W + MARGIN

    @property
    def height(self) -> int:
        return HEADER_H + self.shots * ROW_H + FOOTER_H

    def row_top(self, index: int) -> int:
        return HEADER_H + index * ROW_H

    def keyframe_box(self, index: int) -> tuple[int, int, int, int]:
        top = self.row_top(index) + GAP + 24
        return MARGIN, top, MARGIN + self.thumb_w, top + THUMB_H

    def kept_box(self, index: int) -> tuple[int, int, int, int]:
        left, top, right, bottom = self.keyframe_box(index)
        return right + GAP, top, right + GAP + self.thumb_w, bottom

    def small_box(self, index: int, k: int) -> tuple[int, int, int, int]:
        """The k-th other attempt's frame: two columns, two rows beside the kept frame."""
        _, top, right, _ = self.kept_box(index)
        w, h = self.small
        left = right + GAP + (k % 2) * (w + GAP)
        top += (k // 2) * (h + 2)
        return left, top, left + w, top + h

    @property
    def text_left(self) -> int:
        return self.width - MARGIN - TEXT_W


# -- what goes on it ------------------------------------------------------------------

@dataclass
class ShotRow:
    shot_id: str
    heading: str
    keyframe: Path | None
    kept_clip: Path | None
    other_clips: list[Path]
    lines: list[tuple[str, tuple[int, int, int]]]
    clip_frames: int  # every attempt of the shot has as many


def middle_frame(clip: Path, frames: int | None = None) -> Any:
    """The frame the sheet shows for a clip: its middle one (an RGB uint8 array)."""
    from .video import middle_frame as decode_middle

    return decode_middle(clip, frames)


def shot_rows(reel: Reel) -> list[ShotRow]:
    from .board import remedy_text
    from .gate import chosen_of
    from .motion import clip_frames

    gate = {s["shot"]: s for s in reel.notes.get("gate", {}).get("shots", [])}
    rows = []
    for shot in reel.plan.shots:
        keyframe = _existing(reel, reel.artifacts.get(f"keyframe:{shot.id}"))
        kept_clip = _existing(reel, reel.artifacts.get(f"clip:{shot.id}"))
        heading = " · ".join([shot.id, shot.type, shot.camera.replace("_", " "), f"{shot.duration_s:g} s",
                              *(["locked"] if shot.locked else [])])
        lines, others = [], []
        if shot.id in gate:
            kept_number = chosen_of(gate[shot.id])["attempt"]
            for attempt in gate[shot.id]["attempts"]:
                kept = attempt["attempt"] == kept_number
                text = " | ".join(part for part in (
                    f"#{attempt['attempt']}{' kept' if kept else ''}", attempt.get("verdict", ""),
                    attempt.get("label") or "", remedy_text(attempt.get("fixes_label"), attempt.get("changes")))
                    if part)
                lines.append((text, KEPT if kept else (INK if attempt.get("passed") else FAILED)))
                if not kept and (path := _existing(reel, attempt.get("clip"))):
                    others.append(path)
        elif kept_clip is not None:
            lines.append(("not gated: the clip as rendered", DIM))
        lines.append((shot.prompt, DIM))
        rows.append(ShotRow(shot.id, heading, keyframe, kept_clip, others, lines, clip_frames(reel.plan, shot)))
    return rows


def _existing(reel: Reel, rel: str | None) -> Path | None:
    if not rel:
        return None
    path = reel.run_dir.path(rel)
    return path if path.is_file() else None


def footer_lines(reel: Reel) -> list[str]:
    notes = reel.notes
    mix = notes.get("mix") or {}
    loudness = (f"{mix['integrated_lufs']:.1f} LUFS integrated, true peak {mix['true_peak_dbtp']:.1f} dBTP"
                if "integrated_lufs" in mix else "not mixed yet")
    delivery = notes.get("delivery") or {}
    duration = f"{delivery['duration']:.2f} s" if "duration" in delivery else f"{reel.plan.duration_s:g} s planned"
    timings = notes.get("timings") or {}
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()) or "none yet"
    return [f"{reel.plan.title} · {reel.run_id}",
            f"loudness: {loudness} · duration: {duration} · language: {reel.plan.language}",
            f"stage times: {stages}"]


# -- drawing ----------------------------------------------------------------------------

# Pictures already drawn at a size, by (file, its mtime and size, thumbnail size): the sheet is redrawn after
# each stage and most pictures have not changed since (a clip would be decoded again each time).
_thumbnails: dict[tuple[str, int, int, tuple[int, int]], Image.Image] = {}
MAX_THUMBNAILS = 512


def _picture(path: Path | None, size: tuple[int, int], frames: int | None = None) -> Image.Image | None:
    from PIL import Image

    if path is None:
        return None
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, size)
    if key not in _thumbnails:
        if path.suffix == ".mp4":
            image = Image.fromarray(middle_frame(path, frames))
        else:
            with Image.open(path) as img:
                image = img.convert("RGB")
        if len(_thumbnails) >= MAX_THUMBNAILS:
            _thumbnails.clear()
        _thumbnails[key] = image.resize(size, Image.Resampling.BILINEAR)
    return _thumbnails[key]


def _text(draw: Any, xy: tuple[int, int], text: str, size: int, fill: tuple[int, int, int], width: int) -> None:
    from ...model_loaders.storyboard import drawable_text, font_for, wrap_to_width

    font = font_for(text, size)
    line = (wrap_to_width(drawable_text(text, size), font, width, 1) or [""])[0]
    draw.text(xy, line, font=font, fill=fill)


def _paste(sheet: Image.Image, draw: Any, image: Image.Image | None, box: tuple[int, int, int, int],
           empty: str) -> None:
    if image is not None:
        sheet.paste(image, box[:2])
        return
    draw.rectangle(box, fill=PANEL)
    _text(draw, (box[0] + 6, box[1] + 6), empty, 13, DIM, box[2] - box[0] - 12)


def draw_sheet(reel: Reel) -> Image.Image:
    from PIL import Image, ImageDraw

    layout = SheetLayout.of(reel.plan)
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _draw_header(reel, sheet, draw, layout)
    for index, row in enumerate(shot_rows(reel)):
        top = layout.row_top(index)
        draw.line((MARGIN, top, layout.width - MARGIN, top), fill=PANEL, width=1)
        _text(draw, (MARGIN, top + GAP - 4), row.heading, 16, INK, layout.width - 2 * MARGIN)
        _paste(sheet, draw, _picture(row.keyframe, (layout.thumb_w, THUMB_H)), layout.keyframe_box(index),
               "no keyframe yet")
        _paste(sheet, draw, _picture(row.kept_clip, (layout.thumb_w, THUMB_H), row.clip_frames),
               layout.kept_box(index), "no clip yet")
        for k, clip in enumerate(row.other_clips[:MAX_SMALL]):
            _paste(sheet, draw, _picture(clip, layout.small, row.clip_frames), layout.small_box(index, k), "")
        y = layout.keyframe_box(index)[1]
        for text, colour in row.lines[: THUMB_H // 18]:
            _text(draw, (layout.text_left, y), text, 14, colour, TEXT_W)
            y += 18
    top = layout.height - FOOTER_H + GAP
    for k, line in enumerate(footer_lines(reel)):
        _text(draw, (MARGIN, top + k * 22), line, 15, INK if k == 0 else DIM, layout.width - 2 * MARGIN)
    return sheet


def _draw_header(reel: Reel, sheet: Image.Image, draw: Any, layout: SheetLayout) -> None:
    _text(draw, (MARGIN, MARGIN), reel.plan.sentence, 20, INK, layout.width - 2 * MARGIN)
    x, top, size = MARGIN, MARGIN + 40, HEADER_H - MARGIN - 40 - 34
    for character in reel.plan.characters:
        path = _existing(reel, reel.artifacts.get(f"portrait:{character.id}"))
        if x + size > layout.width - MARGIN:
            break
        _paste(sheet, draw, _picture(path, (size, size)), (x, top, x + size, top + size), "no portrait yet")
        _text(draw, (x, top + size + 6), character.name, 14, DIM, size)
        x += size + GAP


def refresh_contact_sheet(reel: Reel) -> Path | None:
    """Redraw ``contact_sheet.png``; a failure is reported on standard error and never stops the reel."""
    path = reel.run_dir.path(SHEET)
    try:
        sheet = draw_sheet(reel)
        # zlib's fastest level: the sheet is rewritten after every stage (0.05 s instead of 0.08 s, 17 % larger)
        atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG", compress_level=1))
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"cinereel: warning: {SHEET} not refreshed: {exc}", file=sys.stderr)
        return None
    return path
