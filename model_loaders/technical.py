"""The cheap technical check: the preview critic, and the gate's first look at every clip.

``technical_check`` looks only for faults a machine sees for certain (black,
blank, frozen, flickering or non-finite frames). It cannot judge taste, so a
clean clip gets a neutral pass (8 on every axis) and a defect drives the
scores it ruins to 3 or below, enough to fail a 7.0 gate on its own. It returns
a critique (``vocabulary/critique.py``) like any critic, marked ``"source":
"technical"`` with what it measured (``measured``: motion, brightness, flicker),
so reports and boards show it as the check it is, never as four judged scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .vocabulary.critique import SCORE_AXES

TECHNICAL_PROBLEMS: tuple[str, ...] = ("nan_or_inf", "black_frames", "blank_frames", "frozen", "flicker")

CLEAN_SCORE = 8
# Scores a defect caps each axis at; the final score per axis is the lowest cap of the defects found.
DEFECT_SCORES: dict[str, dict[str, int]] = {
    "nan_or_inf": {"composition": 1, "motion_coherence": 1, "character_consistency": 1, "lighting_fidelity": 1},
    "black_frames": {"composition": 2, "motion_coherence": 4, "character_consistency": 3, "lighting_fidelity": 1},
    "blank_frames": {"composition": 1, "motion_coherence": 4, "character_consistency": 2, "lighting_fidelity": 3},
    "frozen": {"motion_coherence": 1},
    "flicker": {"lighting_fidelity": 2, "motion_coherence": 3},
}
# The label whose remedy fits each defect. Black, blank and non-finite frames are render failures
# that no label describes: label None, and the retry re-renders from a new seed.
DEFECT_LABELS: dict[str, str] = {"frozen": "CAMERA_IGNORED", "flicker": "OBJECT_MORPHING"}
NOTES: dict[str, str] = {
    "nan_or_inf": "frames hold NaN or infinite values (a numerical failure in the renderer)",
    "black_frames": "black frames",
    "blank_frames": "blank frames: one flat colour, no detail",
    "frozen": "the picture never moves",
    "flicker": "brightness jumps back and forth between frames",
}

TARGET_PIXELS = 160 * 90  # pixels per frame the check looks at
BLACK_LUMA = 0.06  # 99 % of a black frame's pixels are darker than this (about 15/255)
BLANK_STD = 0.012  # a blank frame varies less than this (about 3/255) in every channel
FROZEN_CHANGE = 0.002  # mean absolute change from the first frame that counts as motion (about 0.5/255)
FLICKER_JUMP = 0.02  # a frame's brightness off the line through its neighbours by this much is a jump
FLICKER_SHARE = 0.2  # flicker when at least this share of frames jump


def technical_check(frames: np.ndarray, known_problems: Sequence[str] = ()) -> dict[str, Any]:
    """Check a clip (T, H, W, 3; uint8, or float in [0, 1]) for technical defects; return a critique.

    ``known_problems`` are defects found earlier that the frames no longer show (the motion stage
    sees NaN frames before the encoder turns them black).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got shape {frames.shape}")
    unknown = set(known_problems) - set(TECHNICAL_PROBLEMS)
    if unknown:
        raise ValueError(f"unknown technical problem(s) {sorted(unknown)}; known: {', '.join(TECHNICAL_PROBLEMS)}")
    problems = list(dict.fromkeys(known_problems))
    if "nan_or_inf" not in problems and np.issubdtype(frames.dtype, np.floating) and not _all_finite(frames):
        problems.append("nan_or_inf")
    planes = _subsample(frames)
    luma = np.tensordot(np.array([0.2126, 0.7152, 0.0722], dtype=np.float32), planes, axes=(0, 1))  # Rec. 709
    black = np.quantile(luma.reshape(len(luma), -1), 0.99, axis=1) < BLACK_LUMA
    blank = ~black & (planes.std(axis=(2, 3)).max(axis=1) < BLANK_STD)
    found = {"black_frames": black.any(), "blank_frames": blank.any()}
    content = luma[~black & ~blank]
    found["frozen"] = len(content) >= 2 and _is_frozen(content)
    found["flicker"] = _flickers(luma.mean(axis=(1, 2)))
    problems += [name for name, present in found.items() if present and name not in problems]
    counts = {"black_frames": int(black.sum()), "blank_frames": int(blank.sum())}
    return {**_critique(problems, len(frames), counts), "source": "technical",
            "measured": _measured(luma, black | blank)}


def _measured(luma: np.ndarray, dark_or_blank: np.ndarray) -> dict[str, float]:
    """What a person can read off the check: mean frame-to-frame change and mean brightness (0-255 levels),
    and the share of frames whose brightness jumps off the line through its neighbours (0-1)."""
    brightness = luma.mean(axis=(1, 2))
    motion = float(np.abs(np.diff(luma, axis=0)).mean()) if len(luma) >= 2 else 0.0
    jumps = np.abs(brightness[1:-1] - (brightness[:-2] + brightness[2:]) / 2) > FLICKER_JUMP
    return {"motion": round(motion * 255, 2), "brightness": round(float(brightness.mean()) * 255, 1),
            "flicker": round(float(jumps.mean()) if len(jumps) else 0.0, 3)}


def _all_finite(frames: np.ndarray) -> bool:
    # One float64 sum per frame is NaN or inf exactly when the frame holds one: no full-size mask.
    return bool(np.isfinite(frames.sum(axis=(1, 2, 3), dtype=np.float64)).all())


def _subsample(frames: np.ndarray) -> np.ndarray:
    """About TARGET_PIXELS pixels per frame on a regular grid: float32 planes (T, 3, h, w) in [0, 1]."""
    height, width = frames.shape[1:3]
    step = max(1, int(np.sqrt(height * width / TARGET_PIXELS)))
    planes = np.ascontiguousarray(np.moveaxis(frames[:, ::step, ::step, :], -1, 1), dtype=np.float32)
    if frames.dtype == np.uint8:
        return planes / 255.0
    return np.clip(np.nan_to_num(planes, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _is_frozen(luma: np.ndarray) -> bool:
    change = np.abs(luma - luma[0]).mean(axis=(1, 2))
    return bool(change.max() < FROZEN_CHANGE)


def _flickers(brightness: np.ndarray) -> bool:
    """Brightness that keeps jumping off the smooth path through its neighbours (a fade or a single
    flash is not flicker)."""
    if len(brightness) < 3:
        return False
    off_line = np.abs(brightness[1:-1] - (brightness[:-2] + brightness[2:]) / 2)
    jumps = int((off_line > FLICKER_JUMP).sum())
    return jumps >= max(2, FLICKER_SHARE * len(off_line))


def _critique(problems: list[str], count: int, counts: dict[str, int]) -> dict[str, Any]:
    scores = dict.fromkeys(SCORE_AXES, CLEAN_SCORE)
    for problem in problems:
        for axis, cap in DEFECT_SCORES[problem].items():
            scores[axis] = min(scores[axis], cap)
    label = next((DEFECT_LABELS[p] for p in problems if p in DEFECT_LABELS), None)
    if not problems:
        notes = f"technical check: no problems in {count} frames"
    else:
        found = [NOTES[p] + (f" ({counts[p]} of {count})" if p in counts else "") for p in problems]
        notes = "technical check: " + "; ".join(found)
    return {"scores": scores, "label": label, "technical": problems, "notes": notes}
