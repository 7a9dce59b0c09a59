"""A model family of small torch models (~200 MB of float32 weights), for residency tests.

Registered in-process by the tests, and in worker processes through
CINEREEL_WORKER_PLUGINS (which calls ``register``).
"""

from __future__ import annotations


class TinyTorchModel:
    def __init__(self, width: int, layers: int, seed: int):
        import torch

        torch.manual_seed(seed)
        self.width = width
        self.net = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).eval()

    def forward_sum(self, n: int = 2) -> float:
        import torch

        with torch.no_grad():
            return float(self.net(torch.ones(n, self.net[0].in_features)).sum())

    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.net.parameters())


def load(handle) -> TinyTorchModel:
    width = int(handle.option("width", 4096))
    return TinyTorchModel(width, int(handle.option("layers", 3)), int(handle.option("seed", 0)))


def register(register_family) -> None:
    register_family("test-tiny-torch", load)
