"""Read prompts from JSONL / JSON / parquet into chat requests, whatever public format they use.

Accepted row shapes (first match wins):

- ``messages``: a chat ending with a user turn (also what a teacher set holds, so one can be re-asked)
- ``content`` as a list of messages (the GAD paper's data release)
- ``prompt``: a string (one user turn) or a list of messages
- ``turns``: Vicuna / MT-Bench; the first turn only (later turns need the teacher's own earlier
  answers, which a one-shot collection does not have)
- ``instruction`` + ``instances``: Self-Instruct; the first instance's ``input`` follows the instruction
- ``instruction`` + ``context``: Dolly; a non-empty context follows the instruction
- ``instruction`` (+ ``input``): Alpaca / AlpacaEval

Ids: the row's ``id`` or ``question_id`` when present, else a hash of the messages, so the same
prompt gets the same id on every run (that is what makes resume work).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gad.teacher.backend import ChatRequest, Message

ROLES = ("system", "user", "assistant")


class PromptFormatError(ValueError):
    """A bad prompt row; the message names the file, the line (or parquet row) and the field."""


@dataclass
class PromptSet:
    requests: list[ChatRequest]
    rows: int
    """Rows read from the file."""
    duplicates: int
    """Rows whose id (and messages) repeat an earlier row; asked once."""


def message_hash(messages: list[Message]) -> str:
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "h" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_prompts(path: str | Path, system: str | None = None, limit: int | None = None) -> PromptSet:
    """All prompts in ``path`` as requests, duplicates removed, ``system`` prepended when given."""
    path = Path(path)
    requests: list[ChatRequest] = []
    seen: dict[str, tuple[str, list[Message]]] = {}
    rows = duplicates = 0
    for where, row in _iter_rows(path):
        rows += 1
        messages = row_to_messages(row, where)
        if system is not None:
            if messages[0]["role"] == "system":
                raise PromptFormatError(f"{where}: field 'messages': the row has its own system message "
                                        "and --system was given too; drop one")
            messages = [{"role": "system", "content": system}, *messages]
        rid = row.get("id", row.get("question_id"))
        rid = message_hash(messages) if rid is None else str(rid)
        if rid in seen:
            first_where, first_messages = seen[rid]
            if first_messages != messages:
                raise PromptFormatError(f"{where}: field 'id': {rid!r} was already used by {first_where} "
                                        "for a different prompt; ids must be unique")
            duplicates += 1
            continue
        seen[rid] = (where, messages)
        requests.append(ChatRequest(id=rid, messages=messages))
        if limit is not None and len(requests) >= limit:
            break
    if not requests:
        raise PromptFormatError(f"{path}: no prompts found")
    return PromptSet(requests=requests, rows=rows, duplicates=duplicates)


def _iter_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if not path.exists():
        raise PromptFormatError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # lazy: only parquet users pay for the import

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield f"{path}:row {n}", row
        return
    with open(path, encoding="utf-8") as f:
        if suffix == ".json":
            # A JSON list (AlpacaEval) or, failing that, JSON lines under a .json name.
            text = f.read()
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = None
            if isinstance(data, list):
                for i, row in enumerate(data, 1):
                    if not isinstance(row, dict):
                        raise PromptFormatError(f"{path}:item {i}: expected a JSON object, got {type(row).__name__}")
                    yield f"{path}:item {i}", row
                return
            lines: Any = text.splitlines()
        else:
            lines = f
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise PromptFormatError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield f"{path}:{lineno}", row


def row_to_messages(row: dict[str, Any], where: str) -> list[Message]:
    """The chat a row asks for; see the module docstring for the accepted shapes."""
    if "messages" in row:
        return _check_messages(row["messages"], where, "messages")
    if isinstance(row.get("content"), list):  # the GAD paper's release: the chat under `content`
        return _check_messages(row["content"], where, "content")
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            return _check_messages(prompt, where, "prompt")
        return [{"role": "user", "content": _text(prompt, where, "prompt")}]
    if "turns" in row:
        turns = row["turns"]
        if not isinstance(turns, list) or not turns:
            raise PromptFormatError(f"{where}: field 'turns': expected a non-empty list of strings")
        return [{"role": "user", "content": _text(turns[0], where, "turns[0]")}]
    if "instruction" in row:
        content = _text(row["instruction"], where, "instruction")
        extra = ""
        if "instances" in row:
            instances = row["instances"]
            if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
                raise PromptFormatError(f"{where}: field 'instances': expected a non-empty list of objects")
            extra = _text(instances[0].get("input", ""), where, "instances[0].input", allow_empty=True)
        elif "context" in row:
            extra = _text(row["context"] or "", where, "context", allow_empty=True)
        elif "input" in row:
            extra = _text(row["input"] or "", where, "input", allow_empty=True)
        if extra.strip():
            content = f"{content}\n\n{extra}"
        return [{"role": "user", "content": content}]
    raise PromptFormatError(
        f"{where}: no prompt field: expected one of 'messages', 'prompt', 'turns', 'instruction' "
        f"(found {sorted(row)[:8]})"
    )


def _text(value: Any, where: str, name: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise PromptFormatError(f"{where}: field '{name}': expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise PromptFormatError(f"{where}: field '{name}': empty")
    return value


def _check_messages(messages: Any, where: str, name: str) -> list[Message]:
    if not isinstance(messages, list) or not messages:
        raise PromptFormatError(f"{where}: field '{name}': expected a non-empty list of messages")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise PromptFormatError(f"{where}: field '{name}[{i}]': expected an object with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise PromptFormatError(f"{where}: field '{name}[{i}].role': expected one of {ROLES}, got {role!r}")
        out.append({"role": role, "content": _text(m.get("content"), where, f"{name}[{i}].content",
                                                   allow_empty=role != "user")})
    if out[-1]["role"] != "user":
        raise PromptFormatError(f"{where}: field '{name}': the last message must be the user's turn "
                                f"the teacher answers, got {out[-1]['role']!r}")
    return out
