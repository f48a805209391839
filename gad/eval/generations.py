"""The generations cache: what a model answered to an evaluation set, kept in an output folder.

Format (one folder per model, e.g. ``runs/eval/gad/``):

``DIR/generations.jsonl`` — append-only, one JSON object per line::

    {"set": "vicuna80",                 # the evaluation set's name (EvalSet.name)
     "id": "1",                         # the item's id within that set (EvalItem.id)
     "messages": [{"role": "user", "content": "..."}],   # what the model was asked
     "response": "...",                 # what it answered
     "model": "runs/gad/checkpoints/step-000400/generator",  # optional: where it came from
     "sampling": {"temperature": 0.0, "max_new_tokens": 1536},  # optional: how
     "truncated": false,                # optional: it hit max_new_tokens before EOS
     "engine": "hf"}                    # optional: what generated it (hf | vllm); not part of the cache key

Rows are keyed by ``(set, id)``; a later row with the same key replaces an earlier one, so a writer
may simply append (an interrupted ``gad eval`` resumes by skipping the keys already present).
Extra fields are kept and ignored. ``gad humaneval`` pairs two such folders by key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gad.errors import InputNotFound
from gad.eval.sets import EvalDataError
from gad.rows import Message, iter_rows, row_id

GENERATIONS_FILE = "generations.jsonl"


@dataclass
class Generation:
    """One cached response (see the module docstring for the on-disk fields)."""

    set: str
    id: str
    messages: list[Message]
    response: str
    model: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    truncated: bool | None = None
    engine: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.set, self.id)

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "set": self.set,
            "id": self.id,
            "messages": self.messages,
            "response": self.response,
        }
        if self.model is not None:
            row["model"] = self.model
        if self.sampling:
            row["sampling"] = self.sampling
        if self.truncated is not None:
            row["truncated"] = self.truncated
        if self.engine is not None:
            row["engine"] = self.engine
        return row


def generations_path(path: str | os.PathLike) -> Path:
    """``DIR/generations.jsonl`` for a folder; a ``.jsonl`` file path is returned as it is."""
    path = Path(path)
    return path if path.suffix == ".jsonl" and not path.is_dir() else path / GENERATIONS_FILE


def read_generations(path: str | os.PathLike) -> dict[tuple[str, str], Generation]:
    """All cached generations of a folder (or a ``.jsonl`` file), keyed by ``(set, id)``, last row wins."""
    file = generations_path(path)
    if not file.is_file():
        raise InputNotFound(f"no generations at {file} (expected {GENERATIONS_FILE} in the folder)")
    out: dict[tuple[str, str], Generation] = {}
    for where, _, row in iter_rows(file, EvalDataError):
        g = _parse(row, where)
        out[g.key] = g
    return out


def _parse(row: dict[str, Any], where: str) -> Generation:
    def bad(name: str, problem: str) -> EvalDataError:
        return EvalDataError(f"{where}: field '{name}': {problem}")

    for name in ("set", "id", "response"):
        if name not in row:
            raise bad(name, "missing")
    if not isinstance(row["set"], str) or not isinstance(row["response"], str):
        raise bad("set" if not isinstance(row["set"], str) else "response", "expected a string")
    rid = row_id(row, where, EvalDataError)
    if rid is None:
        raise bad("id", "missing")
    messages = row.get("messages")
    if messages is None and isinstance(row.get("prompt"), str):  # tolerated shorthand
        messages = [{"role": "user", "content": row["prompt"]}]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise bad("messages", "expected a list of {role, content} objects (or a string 'prompt')")
    sampling = row.get("sampling") or {}
    return Generation(
        set=row["set"],
        id=rid,
        messages=messages,
        response=row["response"],
        model=row.get("model") if isinstance(row.get("model"), str) else None,
        sampling=sampling if isinstance(sampling, dict) else {},
        truncated=row["truncated"] if isinstance(row.get("truncated"), bool) else None,
        engine=row.get("engine") if isinstance(row.get("engine"), str) else None,
    )


def append_generations(path: str | os.PathLike, generations: Iterable[Generation]) -> Path:
    """Appends rows to ``DIR/generations.jsonl`` (creating the folder) and flushes; returns the file."""
    file = generations_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("a", encoding="utf-8") as f:
        for g in generations:
            f.write(json.dumps(g.to_json(), ensure_ascii=False) + "\n")
        f.flush()
    return file
