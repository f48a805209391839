"""One logging path: ``metrics.jsonl`` (flat keys, one object per step), TensorBoard, and the console."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

# What the progress bar shows, if the step produced it.
BAR_KEYS = {
    "reward/mean": "r", "disc/accuracy": "d_acc", "disc/loss": "d_loss", "policy/kl": "kl",
    "sft/nll": "nll", "gen/response_length_mean": "len", "time/step": "s/step",
}


class MetricsLogger:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int, tensorboard: bool, desc: str):
        self.path = run_dir / "metrics.jsonl"
        if start_step > 0 and self.path.exists():  # drop rows of steps lost since the checkpoint
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if json.loads(r).get("step", 0) <= start_step]
            self.path.write_text("".join(r + "\n" for r in kept))
        elif start_step == 0:
            self.path.write_text("")
        self.file = self.path.open("a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}, **(extra or {})}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
        self.bar.set_postfix({short: f"{metrics[k]:.3g}" for k, short in BAR_KEYS.items() if k in metrics}, refresh=False)
        self.bar.update(1)

    def write(self, message: str) -> None:
        """A line above the progress bar, on stderr with the run's other messages."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        if self.tb is not None:
            self.tb.close()


class NullLogger:
    """What every process but rank 0 logs through: nothing (rank 0 writes the run's one record)."""

    def log(self, step: int, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        pass

    def write(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


def _clean(v: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays valid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
