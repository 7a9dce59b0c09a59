"""Frame geometry every stage shares: the aspect ratios and resolutions a reel can have.

Kept apart from the director's rules (a large module) so the Director node can list the choices
without importing them when ComfyUI starts.
"""

from __future__ import annotations

ASPECTS = ("16:9", "9:16")
# Wan2.2 I2V was trained at 480p and 720p. The landscape frame of each, on the 16-pixel grid that the
# VAE (8x) and the transformer's 2x2 patches need; 9:16 swaps the sides. 480p renders about 2.3x fewer pixels.
RESOLUTIONS: dict[str, tuple[int, int]] = {"720p": (1280, 720), "480p": (832, 480)}


def frame_size(aspect: str, resolution: str = "720p") -> tuple[int, int]:
    """(width, height) of a frame for ``aspect`` (16:9 or 9:16) at ``resolution`` (720p or 480p)."""
    width, height = RESOLUTIONS[resolution]
    return (width, height) if aspect == "16:9" else (height, width)
