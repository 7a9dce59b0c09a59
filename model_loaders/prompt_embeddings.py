"""The text encoder's outputs kept for a phase, and the text encoder off the accelerator meanwhile.

A diffusion pipeline runs its text encoder (UMT5-XXL for Wan2.2, 11 GB in bf16;
Qwen3 for FLUX.2 klein) on every render. A stage knows every prompt of its phase
before the first render, so the backend encodes each distinct prompt once with
the pipeline's own ``encode_prompt``, keeps the embeddings here, and the renders
take them instead of the text. The encoder is then parked: when it sits whole
on an accelerator (no offload hooks, which place it themselves), it moves to CPU
memory and off the pipeline (diffusers takes a pipeline's device from its first
module, the text encoder) until a prompt nobody encoded comes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any


class PromptEmbeddings:
    def __init__(self) -> None:
        self._kept: dict[Hashable, Any] = {}
        self._parked: tuple[Any, Any] | None = None  # (text encoder, the device it came from)

    def get(self, key: Hashable) -> Any | None:
        return self._kept.get(key)

    def encode(self, pipe: Any, keys: Iterable[Hashable], encode: Callable[[Hashable], Any], offloaded: bool) -> int:
        """``encode(key)`` for each key not kept yet (the encoder brought back first), then park the encoder.
        Returns how many were encoded."""
        import torch

        wanted = sorted(set(keys) - set(self._kept), key=repr)
        if wanted:
            self.unpark(pipe)
            with torch.no_grad():
                for key in wanted:
                    self._kept[key] = encode(key)
        self.park(pipe, offloaded)
        return len(wanted)

    def park(self, pipe: Any, offloaded: bool) -> None:
        encoder = pipe.text_encoder
        if encoder is None or offloaded or next(encoder.parameters()).device.type == "cpu":
            return
        device = next(encoder.parameters()).device
        pipe.register_modules(text_encoder=None)
        self._parked = (encoder.to("cpu"), device)
        from .residency import release_freed_memory

        release_freed_memory()

    def unpark(self, pipe: Any) -> None:
        """The text encoder back on the pipeline, where it was (a prompt not encoded here is coming)."""
        if self._parked is not None:
            encoder, device = self._parked
            pipe.register_modules(text_encoder=encoder.to(device))
            self._parked = None

    def clear(self) -> None:
        self._kept.clear()
        self._parked = None
