"""What every real model family shares: which device it runs on (where a checkpoint is: model_layouts).

Imported by the family modules when a model loads; nothing heavy at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else the CPU; asking for CUDA without one is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but torch sees no CUDA GPU; use device 'auto' or 'cpu'")
    return device
