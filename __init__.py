"""CineReel: one sentence in, a 30-second cinematic reel out, as a ComfyUI node pack.

ComfyUI imports this folder under whatever name it was cloned as. Everything
inside is imported relatively, and nothing heavy (torch, diffusers,
transformers, kokoro) is imported here: models load when a stage first needs
them.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
