"""One logging path: ``metrics.jsonl`` (flat keys, one object per step), ``samples.jsonl`` (a few
prompts' samples with D's scores, every ``train.log_samples_every`` steps), the trackers of
``train.report_to`` (:mod:`gad.trainer.trackers`), and the console."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gad.trainer import trackers

SAMPLES = "samples.jsonl"

# What the progress bar shows, if the step produced it.
BAR_KEYS = {
    "reward/mean": "r", "disc/accuracy": "d_acc", "disc/loss": "d_loss", "policy/kl": "kl",
    "sft/nll": "nll", "gen/response_length_mean": "len", "time/step": "s/step",
}


class MetricsLogger:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int, desc: str, report_to: tuple[str, ...] = (),
                 run_name: str = "", config: dict[str, Any] | None = None):
        self.path = run_dir / "metrics.jsonl"
        self.samples_path = run_dir / SAMPLES
        for path in (self.path, self.samples_path):
            if start_step > 0 and path.exists():  # drop rows of steps lost since the checkpoint
                rows = [line for line in path.read_text().splitlines() if line.strip()]
                kept = [r for r in rows if json.loads(r).get("step", 0) <= start_step]
                path.write_text("".join(r + "\n" for r in kept))
            elif start_step == 0:
                path.write_text("")
        self.file = self.path.open("a")
        self.trackers = trackers.open_trackers(list(report_to), run_dir, run_name or run_dir.name, config or {}, start_step)
        self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}, **(extra or {})}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        trackers.log_metrics(self.trackers, step, metrics)
        self.bar.set_postfix({short: f"{metrics[k]:.3g}" for k, short in BAR_KEYS.items() if k in metrics}, refresh=False)
        self.bar.update(1)

    def log_samples(self, step: int, records: list[dict[str, Any]]) -> None:
        """Append a step's sample records to ``samples.jsonl`` (one object per prompt) and the trackers."""
        with self.samples_path.open("a") as f:
            for r in records:
                f.write(json.dumps({"step": step, **r}) + "\n")
        trackers.log_samples(self.trackers, step, records, samples_markdown(records))

    def write(self, message: str) -> None:
        """A line above the progress bar, on stderr with the run's other messages."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        trackers.close(self.trackers)


class NullLogger:
    """What every process but rank 0 logs through: nothing (rank 0 writes the run's one record)."""

    def log(self, step: int, metrics: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        pass

    def log_samples(self, step: int, records: list[dict[str, Any]]) -> None:
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


def samples_markdown(records: list[dict[str, Any]]) -> str:
    """A step's sample records as markdown: per prompt, the teacher's response and the samples, best
    reward first."""
    out = []
    for r in records:
        out.append(f"**prompt** {r.get('prompt', r['id'])}\n\n**teacher** (D {r['teacher_score']:.3g}, "
                   f"rank {r['teacher_rank']} of {len(r['samples']) + 1}): {r['teacher']}\n")
        out.append("| reward | advantage | tokens | sample |\n|---:|---:|---:|---|")
        for smp in sorted(r["samples"], key=lambda x: -x["reward"]):
            adv = "" if smp["advantage"] is None else f"{smp['advantage']:.3g}"
            text = smp["text"].replace("|", "\\|").replace("\n", " ")
            out.append(f"| {smp['reward']:.3g} | {adv} | {smp['length']}{'' if smp['ended'] else ' (cut)'} | {text} |")
        out.append("")
    return "\n".join(out)


def read_samples(run_dir: str | Path) -> list[dict[str, Any]]:
    """``samples.jsonl``'s records (empty when the run logged none)."""
    path = Path(run_dir) / SAMPLES
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
