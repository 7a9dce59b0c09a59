"""How a setting looks in ComfyUI: socket type names and widget declarations (type, tooltip, default, bounds).

Plain data: the loader nodes build their inputs from it, and the headless command reads the same
declarations, so a setting has one name, one default and one range wherever it is set.
"""

from __future__ import annotations

from typing import Any

REEL = "CINEREEL_REEL"
LLM = "CINEREEL_LLM"
KEYFRAME_MODEL = "CINEREEL_KEYFRAME_MODEL"
MOTION_MODEL = "CINEREEL_MOTION_MODEL"
VOICE_MODEL = "CINEREEL_VOICE_MODEL"
MUSIC_MODEL = "CINEREEL_MUSIC_MODEL"


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
