"""Data-file rows and the public prompt formats: one reader and one converter for every command.

Teacher sets (``gad.data``), prompts for the teacher (``gad.teacher.prompts``), evaluation sets
(``gad.eval.sets``) and cached generations (``gad.eval.generations``) come in the same files and the
same formats. Reading them here means a file one command accepts the others accept too, a row gets
the same messages and the same id everywhere, and every error names its place the same way:
``file:where: field 'name': problem``.

Each function raises ``error``, a ``ValueError`` subclass the caller passes, so each reader keeps
the exception type its callers catch. No torch here: the evaluation and teacher code import this.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gad.textfile import BOM, check_readable, read_lines, read_text

Message = dict[str, str]

ROLES = ("system", "user", "assistant")


# ---------------------------------------------------------------------------------------------------
# Rows of a file


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk`` (a dataset, or a dict of splits)."""
    path = Path(path)
    return path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists())


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?$")
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")


def is_hub_dataset(spec: str | Path) -> bool:
    """``org/name`` or ``org/name:split``, not a local path nor a file name: a Hugging Face Hub dataset."""
    spec = str(spec)
    return (bool(_HUB_ID.match(spec)) and not spec.lower().endswith(_FILE_SUFFIXES)
            and not Path(spec).exists() and not Path(spec.split(":")[0]).exists())


def iter_rows(path: str | Path, error: type[ValueError] = ValueError, *,
              keep_going: bool = False) -> Iterator[tuple[str, int, Any]]:
    """Yields ``(where, number, row)`` for each row of a JSONL, JSON-list or parquet file, a folder
    written by ``datasets``' ``save_to_disk``, or a Hugging Face Hub dataset id (``org/name`` or
    ``org/name:split``, read with ``datasets.load_dataset`` when online; split ``train`` by default).

    ``where`` is what an error should say: ``file:12`` (line 12 of JSON lines), ``file:item 3`` (the
    3rd element of a JSON list; its line would mislead in a pretty-printed file) or ``file:row 3``
    (parquet, a dataset); ``number`` is the 12 or the 3. A ``.json`` file is a JSON list, or JSON lines under
    that name. Text is UTF-8, a leading byte-order mark allowed (:mod:`gad.textfile`). Blank lines
    are skipped. A line that is not UTF-8 or not JSON, or a row that is not an object, raises
    ``error``; with ``keep_going`` that error is yielded in place of the row instead, so a reader can
    count bad rows and go on.
    """
    if is_hub_dataset(path) or is_saved_dataset(path):
        rows: Iterator[tuple[str, int, Any]] = _dataset_rows(str(path), error)
    else:
        path = Path(path)
        check_readable(path, error)
        rows = _decoded(path, error)
    for where, number, row in rows:
        if not isinstance(row, (dict, error)):
            row = error(f"{where}: expected a JSON object, got {type(row).__name__}")
        if isinstance(row, error) and not keep_going:
            raise row
        yield where, number, row


def _decoded(path: Path, error: type[ValueError]) -> Iterator[tuple[str, int, Any]]:
    """Rows as decoded, a line that is not UTF-8 or not JSON as an ``error``."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path, error)
        return
    if suffix == ".json" and (text := _json_text(path, error)) is not None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if text.lstrip().startswith("["):  # a broken list: say where in the document
                raise error(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
            data = None  # JSON lines under a .json name
        if isinstance(data, list):
            for i, row in enumerate(data, start=1):
                yield f"{path}:item {i}", i, row
            return
        if data is not None and "\n" in text.strip():  # one object over many lines
            raise error(f"{path}: expected a JSON list of objects (or JSON lines), got {type(data).__name__}")
    for i, line in read_lines(path, error):
        if isinstance(line, Exception):  # not UTF-8
            yield f"{path}:{i}", i, line
        elif line.strip():
            try:
                yield f"{path}:{i}", i, json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{path}:{i}", i, error(f"{path}:{i}: not valid JSON ({e.msg} at column {e.colno})")


def _json_text(path: Path, error: type[ValueError]) -> str | None:
    """A ``.json`` file's text; None for JSON lines under a ``.json`` name that are not all UTF-8,
    so they are read a line at a time and one bad line is one bad row (a list is one document, and
    a bad byte in it stops the read)."""
    try:
        return read_text(path, error)
    except error:
        with path.open("rb") as f:
            if f.read(1 << 16).removeprefix(BOM).lstrip().startswith(b"["):
                raise
        return None


def _dataset_rows(spec: str, error: type[ValueError]) -> Iterator[tuple[str, int, Any]]:
    """The rows of a ``save_to_disk`` folder or a Hub dataset, through the ``datasets`` library."""
    try:
        import datasets
    except ImportError:
        raise error(f"{spec}: a Hugging Face dataset (a save_to_disk folder or a Hub id) needs the datasets "
                    "package: pip install 'gad[datasets]'") from None
    name, _, split = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    try:
        ds = datasets.load_from_disk(spec) if Path(spec).exists() else datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # noqa: BLE001 - offline, unknown id, no such split, a broken folder: one message
        raise error(f"{spec}: cannot read it as a Hugging Face dataset ({type(e).__name__}: {e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise error(f"{spec}: holds the splits {', '.join(ds)}; name one: {spec}/<split> (a saved folder) or "
                        "org/name:<split> (a Hub id)")
        ds = next(iter(ds.values()))
    for n, row in enumerate(ds, start=1):
        yield f"{spec}:row {n}", n, row


def _parquet_rows(path: Path, error: type[ValueError]) -> Iterator[tuple[str, int, Any]]:
    import pyarrow as pa  # lazy: only parquet users pay for the import
    import pyarrow.parquet as pq

    n = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield f"{path}:row {n}", n, row
    except pa.ArrowException as e:
        raise error(f"{path}: not a parquet file ({e})" if n == 0 else f"{path}:row {n + 1}: cannot read ({e})") from None


# ---------------------------------------------------------------------------------------------------
# Rows to chat messages


def row_to_messages(row: dict[str, Any], where: str, error: type[ValueError] = ValueError) -> list[Message]:
    """The chat a row asks for, in any accepted public format (first match wins):

    - ``messages``: a chat ending with a user turn (also what a teacher set holds)
    - ``content`` as a list of messages (the GAD paper's data release)
    - ``prompt``: a string (one user turn) or a list of messages
    - ``turns``: Vicuna / MT-Bench (FastChat); the first turn only, since later turns need the
      answerer's own earlier replies
    - ``instruction`` + ``instances``: Self-Instruct; the first instance's ``input`` follows
    - ``instruction`` + ``context``: Dolly; ``instruction`` (+ ``input``): Alpaca / AlpacaEval
    """
    if "messages" in row:
        return check_messages(row["messages"], where, "messages", error)
    if isinstance(row.get("content"), list):
        return check_messages(row["content"], where, "content", error)
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            return check_messages(prompt, where, "prompt", error)
        return [{"role": "user", "content": text_field(prompt, where, "prompt", error)}]
    if "turns" in row:
        return turns_to_messages(row, where, error)
    if "instruction" in row:
        return instruction_to_messages(row, where, error)
    raise error(f"{where}: field 'messages': missing (or give 'prompt', 'turns', 'instruction' or the "
                f"paper's 'content'; found {sorted(row)[:8]})")


def turns_to_messages(row: dict[str, Any], where: str, error: type[ValueError] = ValueError) -> list[Message]:
    """FastChat's ``turns`` (Vicuna, MT-Bench): the first turn as the user's message."""
    turns = row["turns"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise error(f"{where}: field 'turns': expected a non-empty list of strings")
    return [{"role": "user", "content": text_field(turns[0], where, "turns[0]", error)}]


def instruction_to_messages(row: dict[str, Any], where: str, error: type[ValueError] = ValueError) -> list[Message]:
    """``instruction``, followed after a blank line by the Self-Instruct first instance's ``input``,
    Dolly's ``context`` or Alpaca's ``input`` when that is not empty (these sets' usual rendering)."""
    content = text_field(row.get("instruction"), where, "instruction", error)
    extra, name = None, None
    if "instances" in row:
        instances = row["instances"]
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise error(f"{where}: field 'instances': expected a non-empty list of {{input, output}} objects")
        extra, name = instances[0].get("input"), "instances[0].input"
    elif "context" in row:
        extra, name = row["context"], "context"
    elif "input" in row:
        extra, name = row["input"], "input"
    if extra is not None and text_field(extra, where, name, error, allow_empty=True).strip():
        content = f"{content}\n\n{extra}"
    return [{"role": "user", "content": content}]


def text_field(value: Any, where: str, name: str, error: type[ValueError] = ValueError, *,
               allow_empty: bool = False) -> str:
    """``value`` if it is a string (with text, unless ``allow_empty``); else ``error`` naming the field
    (``None`` reads as missing)."""
    if value is None:
        raise error(f"{where}: field '{name}': missing")
    if not isinstance(value, str):
        raise error(f"{where}: field '{name}': expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise error(f"{where}: field '{name}': empty")
    return value


def check_messages(messages: Any, where: str, name: str, error: type[ValueError] = ValueError) -> list[Message]:
    """A copy (role and content only) of a valid chat: known roles, string contents, user turns with
    text, the last turn the user's (the one to be answered)."""
    if not isinstance(messages, list) or not messages:
        raise error(f"{where}: field '{name}': must be a non-empty list of chat messages")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise error(f"{where}: field '{name}[{i}]': must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise error(f"{where}: field '{name}[{i}].role': must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise error(f"{where}: field '{name}[{i}].content': must be a string, got {type(content).__name__}")
        if role == "user" and not content.strip():
            raise error(f"{where}: field '{name}[{i}].content': empty")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise error(f"{where}: field '{name}': the last message must be the user's turn, got {out[-1]['role']!r}")
    return out


def row_id(row: dict[str, Any], where: str, error: type[ValueError] = ValueError, name: str = "id") -> str | None:
    """The row's ``name`` field as an id string, ``None`` when it is absent (or null).

    An id is a string or an integer (upstream sets use both; ``7`` and ``"7"`` are the same id);
    anything else (a bool, float, list or object, whose text would differ between writers) is an
    ``error`` naming the field. Every reader checks ids here.
    """
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise error(f"{where}: field '{name}': expected a string or an integer, got {type(value).__name__}")
    return str(value)


def messages_id(messages: list[Message]) -> str:
    """The id of a row that carries none: ``h`` + 16 hex digits of SHA-256 of the chat.

    The same chat gets the same id on every run and machine (sorted keys, fixed separators), which is
    what lets a teacher collection resume; the ``h`` keeps it apart from upstream numeric ids.
    """
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "h" + hashlib.sha256(blob.encode()).hexdigest()[:16]
