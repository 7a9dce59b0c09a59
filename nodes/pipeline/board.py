"""What the critic board, the keyframe strip and the contact sheet show: each attempt as it was judged.

A critique comes from one of two sources (``vocabulary/critique.py`` ``critique_source``): the technical
check, which measures (motion, brightness, flicker) and cannot judge taste, or a critic model, which gives
the four axis scores. The board shows each as what it is: "technical check passed" with its figures, the
scores only when a critic gave them. Media is referenced the way ComfyUI's ``/view`` serves it
(``type`` output, ``subfolder`` relative to the output folder) so the browser can show and play it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model_loaders.vocabulary.critique import CRITIC_SOURCE, TECHNICAL_SOURCE, critique_source
from .comfy import current_node_id, output_root, send_ui_event

if TYPE_CHECKING:
    from .reel import Reel

AXIS_NAMES = {"composition": "composition", "motion_coherence": "motion", "character_consistency": "character",
              "lighting_fidelity": "lighting"}
FIGURE_NAMES = (("motion", "motion {:.2f}"), ("brightness", "brightness {:.0f}"), ("flicker", "flicker {:.0%}"))


def view_ref(path: Path | str | None) -> dict[str, str] | None:
    """Where ComfyUI's ``/view`` serves ``path`` from; None when it is not under the output folder."""
    if not path:
        return None
    path = Path(path).resolve()
    try:
        sub = path.parent.relative_to(output_root().resolve())
    except ValueError:
        return None
    return {"filename": path.name, "subfolder": sub.as_posix(), "type": "output"}


def figures_text(measured: dict[str, Any] | None) -> str:
    measured = measured or {}
    return ", ".join(fmt.format(measured[name]) for name, fmt in FIGURE_NAMES if name in measured)


def scores_text(scores: dict[str, Any] | None) -> str:
    return ", ".join(f"{AXIS_NAMES[axis]} {value}" for axis, value in (scores or {}).items() if axis in AXIS_NAMES)


def verdict(critique: dict[str, Any] | None) -> str:
    """One line saying what was measured or judged: never four scores that no critic gave."""
    critique = critique or {}
    source = critique_source(critique)
    if source is None:
        return "critic unavailable" if critique.get("reason") else "not judged"
    if source == TECHNICAL_SOURCE:
        problems = critique.get("technical") or []
        head = "technical check passed" if not problems else "technical check failed: " + ", ".join(
            p.replace("_", " ") for p in problems)
        figures = figures_text(critique.get("measured"))
        return f"{head} ({figures})" if figures else head
    return scores_text(critique.get("scores"))


def remedy_text(fixes_label: str | None, changes: dict[str, Any] | None) -> str:
    """What was changed to make this attempt, and for which label (attempt 1: nothing)."""
    parts = []
    for name, change in (changes or {}).items():
        old, new = change
        if name in ("prompt", "negative_prompt", "camera_detail"):
            parts.append(f"{name} revised")
        else:
            parts.append(f"{name} {old} -> {new}")
    if not parts:
        return ""
    return (f"{fixes_label}: " if fixes_label else "retry: ") + ", ".join(parts)


def attempt_row(reel: Reel, shot_id: str, report_attempt: dict[str, Any], kept: bool) -> dict[str, Any]:
    """One attempt as the board shows it, from a ``report.json`` attempt entry (``gate.attempt_report``)."""
    run = reel.run_dir
    clip, keyframe = report_attempt.get("clip"), report_attempt.get("keyframe")
    return {"shot": shot_id, "attempt": report_attempt["attempt"], "source": report_attempt.get("source"),
            "scores": report_attempt.get("scores"), "measured": report_attempt.get("measured"),
            "verdict": report_attempt.get("verdict", ""), "label": report_attempt.get("label"),
            "technical": report_attempt.get("technical", []), "reason": report_attempt.get("reason"),
            "remedy": remedy_text(report_attempt.get("fixes_label"), report_attempt.get("changes")),
            "passed": report_attempt.get("passed", False), "kept": kept,
            "clip": view_ref(run.path(clip)) if clip else None,
            "keyframe": view_ref(run.path(keyframe)) if keyframe else None}


def attempt_rows(reel: Reel, gate: dict[str, Any]) -> list[dict[str, Any]]:
    """Every attempt of every shot, the kept one marked: the board's full data once the gate is done."""
    return [attempt_row(reel, shot["shot"], attempt, attempt["attempt"] == shot["chosen_attempt"])
            for shot in gate["shots"] for attempt in shot["attempts"]]


def attempt_figures(critique: dict[str, Any] | None) -> dict[str, Any]:
    """A critique's report fields: ``source``, the scores only when a critic judged, the measured figures only
    when the technical check measured, and the verdict line."""
    critique = critique or {}
    source = critique_source(critique)
    return {"source": source, "scores": critique.get("scores") if source == CRITIC_SOURCE else None,
            "measured": critique.get("measured") if source == TECHNICAL_SOURCE else None,
            "verdict": verdict(critique)}


def send_attempt(reel: Reel, row: dict[str, Any]) -> None:
    """A finished attempt, live to the browser's critic board (inside ComfyUI only)."""
    send_ui_event("cinereel.gate", {"run_id": reel.run_id, "node": current_node_id(), "attempt": row})


def send_picture(reel: Reel, kind: str, name: str, rel: str) -> None:
    """A finished portrait or keyframe, live to the browser's keyframe strip (inside ComfyUI only)."""
    send_ui_event("cinereel.keyframe", {"run_id": reel.run_id, "node": current_node_id(), "kind": kind,
                                        "name": name, "image": view_ref(reel.run_dir.path(rel))})
