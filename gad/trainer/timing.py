"""Every phase of a step timed by name, so per-phase cost and tokens/s come for free."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from gad.trainer.parallel import World


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

    def metrics(self, world: World | None = None) -> dict[str, float]:
        """Seconds per phase and tokens/s. With ``world`` (a collective): the slowest process's
        seconds, since the step waits for it, and every process's tokens."""
        seconds, tokens = dict(self.seconds), dict(self.tokens)
        if world is not None and world.size > 1:
            names = sorted(seconds)
            slowest = world.max(torch.tensor([seconds[k] for k in names], dtype=torch.float64))
            seconds = {k: float(v) for k, v in zip(names, slowest)}
            names = sorted(tokens)
            summed = world.sum(torch.tensor([tokens[k] for k in names], dtype=torch.float64))
            tokens = {k: int(v) for k, v in zip(names, summed)}
        out = {f"time/{k}": v for k, v in seconds.items()}
        for k, n in tokens.items():
            if seconds.get(k):
                out[f"throughput/{k}_tokens_per_s"] = n / seconds[k]
        return out
