"""Every phase of a step timed by name, so per-phase cost and tokens/s come for free."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Accumulates wall time and token counts per named phase within one step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():  # kernels run asynchronously; time what they did
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - start

    def count(self, name: str, tokens: int) -> None:
        self.tokens[name] += tokens

    def metrics(self) -> dict[str, float]:
        out = {f"time/{k}": v for k, v in self.seconds.items()}
        for k, n in self.tokens.items():
            if self.seconds.get(k):
                out[f"throughput/{k}_tokens_per_s"] = n / self.seconds[k]
        return out
