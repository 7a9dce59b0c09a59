"""Forward passes of each transformer expert, counted at the model call.

The Wan backend registers a forward pre-hook on ``transformer`` (high-noise) and
``transformer_2`` (low-noise) when it loads, and reads the counts per render:
what the benchmark reports and the call record keeps is what the model ran, not
what the settings imply (an unconditional pass skipped, a cache that skipped
blocks but still entered the expert, a cancelled render all show as they ran).

torch hooks only; torch is never imported here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class ExpertPassCounter:
    """Counts ``forward`` calls of named modules until ``remove()``."""

    def __init__(self, experts: dict[str, Any]) -> None:
        self._counts: Counter[str] = Counter({name: 0 for name in experts})
        self._hooks = [module.register_forward_pre_hook(self._hook(name)) for name, module in experts.items()
                       if module is not None]

    def _hook(self, name: str):
        def count(module: Any, args: Any) -> None:
            self._counts[name] += 1

        return count

    def reset(self) -> None:
        for name in self._counts:
            self._counts[name] = 0

    def counts(self) -> dict[str, int]:
        """Passes of each expert since the last ``reset()`` (experts that never ran show 0)."""
        return dict(self._counts)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
