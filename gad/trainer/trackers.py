"""Experiment trackers (``train.report_to``) through accelerate's tracker interface: TensorBoard,
Weights & Biases, MLflow, trackio. Rank 0's :class:`gad.trainer.tracking.MetricsLogger` opens them
after ``metrics.jsonl``; each gets the resolved config once, the same flat metric keys every step,
and the logged samples in the form it shows best.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from gad.errors import UserError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


class TrackerError(UserError):
    """A tracker asked for in ``train.report_to`` that cannot run here (its package is missing)."""


def check_installed(names: list[str]) -> None:
    """Stop before anything is trained when a tracker's package is missing, with the install command."""
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise TrackerError(f"train.report_to: {name} needs its package: pip install 'gad[trackers]' "
                               f"(or pip install {PACKAGES[name]})")


def open_trackers(names: list[str], run_dir: Path, run_name: str, config: dict[str, Any], start_step: int) -> list[Any]:
    """Started trackers, each with ``config`` (flat ``section.key`` values) stored once. A resumed run
    (``start_step`` > 0) continues its TensorBoard file past ``start_step`` and its W&B run."""
    if not names:
        return []
    from accelerate import PartialState
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

    PartialState()  # accelerate's trackers log through its process state
    run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]  # the same run when resumed
    trackers = []
    for name in names:
        if name == "tensorboard":
            t: Any = TensorBoardTracker("tensorboard", run_dir, purge_step=start_step + 1 if start_step else None)
        elif name == "wandb":
            t = WandBTracker(os.environ.get("WANDB_PROJECT", "gad"), name=run_name, dir=str(run_dir), id=run_id,
                             resume="allow")
        elif name == "mlflow":
            t = MLflowTracker(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", "gad"), run_name=run_name)
        else:
            t = TrackioTracker(os.environ.get("TRACKIO_PROJECT", "gad"), name=run_name, resume="allow", embed=False,
                               auto_log_cpu=False, auto_log_gpu=False)
        t.start()
        t.store_init_configuration(config)
        trackers.append(t)
    return trackers


def log_metrics(trackers: list[Any], step: int, metrics: dict[str, float]) -> None:
    """The step's finite scalars, under the keys ``metrics.jsonl`` uses."""
    values = {k: float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    for t in trackers:
        t.log(values, step=step)


def log_samples(trackers: list[Any], step: int, records: list[dict[str, Any]], markdown: str) -> None:
    """A step's sample records: TensorBoard text, a W&B table, an MLflow text artifact (trackio: none)."""
    for t in trackers:
        if t.name == "tensorboard":
            t.writer.add_text("samples", markdown, step)
            t.writer.flush()
        elif t.name == "wandb":
            import wandb

            rows = [[r.get("prompt", r["id"]), s["text"], s["reward"], s["advantage"], s["length"], r["teacher"],
                     r["teacher_score"]] for r in records for s in r["samples"]]
            t.log({"samples": wandb.Table(columns=["prompt", "sample", "reward", "advantage", "tokens", "teacher",
                                                   "teacher_score"], data=rows)}, step=step)
        elif t.name == "mlflow":
            import mlflow

            mlflow.log_text(markdown, f"samples/step-{step:06d}.md")


def flat_config(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` → ``{"train.lr": 1}``, lists and mappings as text (what trackers store)."""
    out: dict[str, Any] = {}
    for section, values in cfg_dict.items():
        if not isinstance(values, dict):
            out[section] = values
            continue
        for k, v in values.items():
            out[f"{section}.{k}"] = v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
    return out


def close(trackers: list[Any]) -> None:
    for t in trackers:
        t.finish()
