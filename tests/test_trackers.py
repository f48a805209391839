"""Trackers (``train.report_to``): a short run logs to TensorBoard, W&B (offline), MLflow (a local
file store) and trackio (local), each read back from what it wrote, with the values of metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gad import stages
from gad.trainer.trackers import TrackerError, check_installed
from gad.trainer.tracking import read_metrics
from tests.test_trainer import cfg_for

KEYS = ("reward/mean", "disc/accuracy", "disc/loss", "policy/kl", "gen/response_length_mean")


def wandb_history(run_dir: Path) -> tuple[dict[int, dict], dict]:
    """The history rows (by step) and the config W&B wrote in its offline record file: a LevelDB-style
    log (a 7-byte ``:W&B`` header, 32 KiB blocks of records with a 7-byte header each) of protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, pending, chunks = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if room < 7 or (length == 0 and kind == 0):  # the rest of the block is padding
            pos += room
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    history, config = {}, {}
    for chunk in chunks:
        record = pb.Record()
        record.ParseFromString(chunk)
        if record.WhichOneof("record_type") == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            history[row["_step"]] = row
        elif record.WhichOneof("record_type") == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
    return history, config


def test_a_short_run_logs_the_same_values_to_every_tracker(tiny_model, teacher_set, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 prefers a database; the file store still works
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    import trackio.sqlite_storage as trackio_storage
    import trackio.utils

    monkeypatch.setattr(trackio.utils, "TRACKIO_DIR", tmp_path / "trackio")  # read at import
    monkeypatch.setattr(trackio_storage, "TRACKIO_DIR", tmp_path / "trackio", raising=False)
    out = tmp_path / "run"
    stages.train(cfg_for("train", tiny_model, teacher_set, out, train__max_steps=3, train__log_samples_every=2,
                         train__report_to="[tensorboard, wandb, mlflow, trackio]", train__run_name="short"))
    rows = {r["step"]: r for r in read_metrics(out)}
    assert sorted(rows) == [1, 2, 3]

    def same(logged: dict[int, dict]) -> None:
        assert sorted(logged) == [1, 2, 3]
        for step, row in rows.items():
            for key in KEYS:
                assert logged[step][key] == pytest.approx(row[key], rel=1e-6, abs=1e-9), (step, key)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(out / "tensorboard")).Reload()
    same({s: {k: next(e.value for e in tb.Scalars(k) if e.step == s) for k in KEYS} for s in rows})
    assert "samples" in str(tb.Tags())

    history, config = wandb_history(out)
    same(history)
    assert config["train.run_name"] == "short" and config["train.max_steps"] == 3
    assert history[2]["samples/_type"] == "table-file" and history[2]["samples/nrows"] == 2 * 4  # step 2: 2 prompts x 4

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    [run] = client.search_runs([client.get_experiment_by_name("gad").experiment_id])
    assert run.info.run_name == "short" and run.data.params["train.max_steps"] == "3"
    same({s: {k: next(m.value for m in client.get_metric_history(run.info.run_id, k) if m.step == s) for k in KEYS}
          for s in rows})
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == ["samples/step-000002.md"]

    logs = trackio_storage.SQLiteStorage.get_logs("gad", "short")
    same({entry["step"]: entry for entry in logs})


def test_a_missing_tracker_package_stops_with_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(TrackerError, match=r"wandb needs its package: pip install 'gad\[trackers\]'"):
        check_installed(["tensorboard", "wandb"])
