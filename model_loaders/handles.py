"""Model handles: what a loader node returns instead of weights.

A handle names a checkpoint and how to run it. It is small, hashable and
JSON-serialisable, so ComfyUI's output cache holds nothing heavy. The
residency manager turns a handle into a live model when a stage needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Residency = Literal["in_process", "subprocess"]
DTYPES = ("bfloat16", "float16", "float32")
# Options every real loader has; read by the residency manager and the checkpoint resolver, not the model.
LOADER_SETTINGS = frozenset({"unload_comfy_models", "allow_download"})


def _freeze(options: dict[str, Any] | tuple[tuple[str, Any], ...] | None) -> tuple[tuple[str, Any], ...]:
    if not options:
        return ()
    items = options.items() if isinstance(options, dict) else options
    frozen = []
    for key, value in sorted(items):
        json.dumps(value)  # options must be plain JSON values: they are part of the key
        frozen.append((str(key), tuple(value) if isinstance(value, list) else value))
    return tuple(frozen)


@dataclass(frozen=True)
class ModelHandle:
    """Checkpoint, dtype, device and options of one model; never the weights.

    ``role`` says what a stage uses the model for (``director``, ``critic``...).
    It is not part of ``key``: two roles on one checkpoint share one residency.
    """

    family: str
    checkpoint: str
    dtype: str = "bfloat16"
    device: str = "auto"
    options: tuple[tuple[str, Any], ...] = field(default=())
    residency: Residency = "in_process"
    role: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _freeze(self.options))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.residency not in ("in_process", "subprocess"):
            raise ValueError(f"residency {self.residency!r} must be 'in_process' or 'subprocess'")

    @property
    def key(self) -> str:
        """Identity of the loaded model: everything but the role."""
        return json.dumps(
            [self.family, self.checkpoint, self.dtype, self.device, list(self.options), self.residency],
            separators=(",", ":"),
        )

    @property
    def label(self) -> str:
        return f"{self.family}:{self.checkpoint}"

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def as_role(self, role: str) -> "ModelHandle":
        return replace(self, role=role)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "checkpoint": self.checkpoint,
            "dtype": self.dtype,
            "device": self.device,
            "options": dict(self.options),
            "residency": self.residency,
            "role": self.role,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelHandle":
        return cls(**{**data, "options": _freeze(data.get("options"))})
