"""Conventions shared by CineReel's ComfyUI node classes.

Nodes use ComfyUI's classic API (INPUT_TYPES / RETURN_TYPES / FUNCTION), which
every ComfyUI since 2023 runs. Node ids are frozen once released; new inputs
are appended as optional with defaults, because saved workflows store widget
values by position.
"""

from __future__ import annotations

from .pipeline.widgets import (  # noqa: F401
    KEYFRAME_MODEL,
    LLM,
    MOTION_MODEL,
    MUSIC_MODEL,
    REEL,
    VOICE_MODEL,
    choice,
    integer,
    number,
    text,
    toggle,
    widget,
)

CATEGORY = "CineReel"


class AnyType(str):
    """ComfyUI's wildcard socket type: compares equal to every type (for pass-through nodes)."""

    def __ne__(self, other: object) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


ANY = AnyType("*")


def reel_input(tooltip: str = "The REEL from the previous CineReel stage.") -> tuple:
    return (REEL, {"tooltip": tooltip})


def seed_input(tooltip: str = "Seed; the same seed and inputs make the same artifacts.") -> tuple:
    return integer(tooltip, 0, 0, 0xFFFFFFFFFFFFFFFF, control_after_generate=True)


class ReelNode:
    """Base of the stage nodes: a REEL in, a new REEL out, under the CineReel category."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (REEL,)
    RETURN_NAMES = ("reel",)


def stage_done(reel, stage: str, before) -> tuple | dict:
    """A stage node's result; the browser extension hears which stage of which run finished, and the
    warnings this stage added to the REEL (a language fallback...) are shown on the node."""
    from .pipeline.comfy import send_ui_event

    send_ui_event("cinereel.stage", {"run_id": reel.run_id, "stage": stage})
    earlier = set(before.notes.get("warnings", []))
    new = [w for w in reel.notes.get("warnings", []) if w not in earlier]
    return {"ui": {"text": [f"⚠ {w}" for w in new]}, "result": (reel,)} if new else (reel,)
