"""Model families CineReel can load, one module per family, and the residency manager.

Importing this package only registers loaders; every family imports its heavy
libraries (torch, diffusers, transformers, kokoro) inside its load function.
"""

from . import preview  # noqa: F401  (registers the weights-free preview families)
from .handles import ModelHandle
from .residency import RESIDENCY, ResidencyManager, register_family

__all__ = ["ModelHandle", "RESIDENCY", "ResidencyManager", "register_family"]
