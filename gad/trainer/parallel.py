"""Processes: how many the launcher started, and what the trainer does about it.

The trainer runs in one process today. ``torchrun`` and ``accelerate launch`` start K processes and
tell each through ``WORLD_SIZE``; run as they are, all K would train on the same batches and write
into the same run folder. So a launch of more than one process stops before any file is touched or
any model loads. (Data-parallel and sharded training belong in this module when they come.)
"""

from __future__ import annotations

import os

from gad.errors import UserError


class LaunchError(UserError):
    """A launch the trainer cannot honour (several processes, while it trains in one)."""


def launched_world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``; 1 when not launched by one)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"WORLD_SIZE={value!r}: not a number of processes") from None


def require_one_process(stage: str) -> None:
    """Stop, in every process, when launched as several: nothing is read or written first."""
    world = launched_world_size()
    if world > 1:
        raise LaunchError(
            f"launched as {world} processes (WORLD_SIZE={world}), but `gad {stage}` trains in one process: "
            "each would train on the same batches and write into the same run folder. Run it without "
            "torchrun / accelerate launch, as one process (multi-process training is not built yet)"
        )
