"""What every real model family shares: where a checkpoint is and which device it runs on.

Imported by the family modules when a model loads; nothing heavy at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
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


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def local_or_cached(checkpoint: str, validate: Callable[[Path], Path], what: str, hint: str) -> Path:
    """A validated folder: ``checkpoint`` itself, or a hub id's snapshot in the local hub cache."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return validate(path)
    if HUB_ID.match(checkpoint) and not checkpoint.startswith("."):
        return validate(from_hub_cache(checkpoint))
    raise FileNotFoundError(f"no {what} checkpoint at {path.absolute()}: the folder does not exist ({hint})")


def from_hub_cache(repo_id: str) -> Path:
    """The local snapshot of ``repo_id`` in the Hugging Face cache; never a download at run time."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as err:  # noqa: BLE001 - every hub-cache miss becomes the same clear message
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder ({Path(repo_id).absolute()}) and is not in the Hugging Face hub "
            f"cache; CineReel never downloads weights while it runs. Download it first "
            f"(hf download {repo_id}) or give the path of a local folder. Cause: {type(err).__name__}: {err}"
        ) from err
