"""Conventions shared by CineReel's ComfyUI node classes.

Nodes use ComfyUI's classic API (INPUT_TYPES / RETURN_TYPES / FUNCTION), which
every ComfyUI since 2023 runs. Node ids are frozen once released; new inputs
are appended as optional with defaults, because saved workflows store widget
values by position.
"""

from __future__ import annotations

from typing import Any

CATEGORY = "CineReel"
REEL = "CINEREEL_REEL"
LLM = "CINEREEL_LLM"
KEYFRAME_MODEL = "CINEREEL_KEYFRAME_MODEL"
MOTION_MODEL = "CINEREEL_MOTION_MODEL"
VOICE_MODEL = "CINEREEL_VOICE_MODEL"
MUSIC_MODEL = "CINEREEL_MUSIC_MODEL"


class AnyType(str):
    """ComfyUI's wildcard socket type: compares equal to every type (for pass-through nodes)."""

    def __ne__(self, other: object) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


ANY = AnyType("*")


def widget(kind: Any, tooltip: str, **options: Any) -> tuple:
    """One input declaration; every CineReel input has a tooltip."""
    return (kind, {"tooltip": tooltip, **options})


def integer(tooltip: str, default: int, min: int, max: int, step: int = 1, **extra: Any) -> tuple:  # noqa: A002
    return widget("INT", tooltip, default=default, min=min, max=max, step=step, **extra)


def number(tooltip: str, default: float, min: float, max: float, step: float = 0.1, **extra: Any) -> tuple:  # noqa: A002
    return widget("FLOAT", tooltip, default=default, min=min, max=max, step=step, **extra)


def text(tooltip: str, default: str = "", multiline: bool = False, **extra: Any) -> tuple:
    return widget("STRING", tooltip, default=default, multiline=multiline, **extra)


def choice(options: list[str] | tuple[str, ...], tooltip: str, default: str | None = None) -> tuple:
    return (list(options), {"tooltip": tooltip, "default": default or options[0]})


def toggle(tooltip: str, default: bool, on: str = "on", off: str = "off") -> tuple:
    return widget("BOOLEAN", tooltip, default=default, label_on=on, label_off=off)


def reel_input(tooltip: str = "The REEL from the previous CineReel stage.") -> tuple:
    return (REEL, {"tooltip": tooltip})


def seed_input(tooltip: str = "Seed; the same seed and inputs make the same artifacts.") -> tuple:
    return integer(tooltip, 0, 0, 0xFFFFFFFFFFFFFFFF, control_after_generate=True)


class ReelNode:
    """Base of the stage nodes: a REEL in, a new REEL out, under the CineReel category."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (REEL,)
    RETURN_NAMES = ("reel",)


def stage_done(reel, stage: str) -> tuple:
    """A stage node's result; the browser extension hears which stage of which run finished."""
    from .comfy import send_ui_event

    send_ui_event("cinereel.stage", {"run_id": reel.run_id, "stage": stage})
    return (reel,)


class NotImplementedYet(NotImplementedError):
    """A node or backend a later issue fills; raised before any work starts."""

    def __init__(self, what: str, issue: int, alternative: str):
        super().__init__(f"{what} is not implemented yet (CineReel issue #{issue}). {alternative}")
