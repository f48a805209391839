"""Evaluation sets: one item type, loaders for the paper's public sets and for teacher sets.

Every loader returns a list of :class:`EvalItem`. The format of a file is detected from its fields
(and, for the one ambiguous case, nothing else is needed: Vicuna and MT-Bench share FastChat's
question format and are read the same way). Errors name the file, the line (``item N`` of a JSON
list, ``row N`` of parquet) and the field.

Formats (all read from their upstream files as-is; see ``shared/data/SOURCES.md``):

==============  ===========================================  =====================================
format          fields                                       prompt / reference
==============  ===========================================  =====================================
``teacher``     id, messages, teacher_response[, meta]        messages / teacher_response
                (rows checked by ``gad.data.parse_row``)
``fastchat``    question_id, category, turns[, reference]     first turn / none (Vicuna 80,
                                                             MT-Bench 80; MT-Bench's judge hints
                                                             go to ``meta["judge_reference"]``)
``selfinst``    id, instruction, instances[{input, output}]   instruction + first input / output
``dolly``       instruction, context, response, category      instruction + context / response
``alpaca``      instruction, output[, dataset, generator]     instruction / output (AlpacaEval;
                (a JSON list, or JSONL)                      ``dataset`` becomes the category)
==============  ===========================================  =====================================

Rows are read, and prompts turned into chats, by :mod:`gad.rows`, as for teacher sets and the
teacher's prompts: an instruction and its input are joined as ``instruction + "\\n\\n" + input``
(input omitted when empty), the usual single-turn rendering of these sets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gad.errors import InputNotFound, UserError
from gad.rows import (
    Message,
    instruction_to_messages,
    is_hub_dataset,
    is_saved_dataset,
    iter_rows,
    row_id,
    text_field,
    turns_to_messages,
)

FORMATS = ("teacher", "fastchat", "selfinst", "dolly", "alpaca")

# Short names for the public sets in shared/data, so that `gad eval --data vicuna` works.
KNOWN_SETS: dict[str, str] = {
    "vicuna": "vicuna80.jsonl",
    "mtbench": "mtbench80.jsonl",
    "selfinst": "selfinst252.jsonl",
    "dolly": "dolly500.jsonl",
    "alpacaeval": "alpacaeval805.json",
}


class EvalDataError(UserError, ValueError):
    """A data file that cannot be read as an evaluation set; the message names file, line, field."""


@dataclass(frozen=True)
class EvalItem:
    """One evaluation prompt.

    Attributes:
        id: unique within its set (the upstream id, or the 0-based row number when there is none).
        messages: the chat to answer, ``[{"role": ..., "content": ...}, ...]``; the last message is
            the user's turn.
        reference: the reference response (teacher / human / reference model), or ``None``.
        category: the upstream category, if any.
        meta: anything else worth keeping (upstream fields not used above).
    """

    id: str
    messages: list[Message]
    reference: str | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The text of the last user turn."""
        return self.messages[-1]["content"]


@dataclass
class EvalSet:
    """A loaded evaluation set: its name (the file's stem), its format and its items."""

    name: str
    format: str
    path: Path
    items: list[EvalItem]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[EvalItem]:
        return iter(self.items)


# ---------------------------------------------------------------------------------------------------
# Reading rows


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a row's fields belong to, or ``None`` (see the module docstring)."""
    keys = set(row)
    if "teacher_response" in keys:
        return "teacher"
    if {"question_id", "turns"} <= keys:
        return "fastchat"
    if {"instruction", "instances"} <= keys:
        return "selfinst"
    if {"instruction", "response"} <= keys:
        return "dolly"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    return None


class _Row:
    """Field access that raises :class:`EvalDataError` naming file, line and field (``prefix`` + name)."""

    def __init__(self, where: str, row: dict[str, Any], prefix: str = ""):
        self.where, self.row, self.prefix = where, row, prefix

    def error(self, field_name: str, problem: str) -> EvalDataError:
        return EvalDataError(f"{self.where}: field '{self.prefix}{field_name}': {problem}")

    def text(self, name: str, *, required: bool = True, allow_empty: bool = False) -> str | None:
        if self.row.get(name) is None and not required:
            return None
        return text_field(self.row.get(name), self.where, self.prefix + name, EvalDataError, allow_empty=allow_empty)

    def ident(self, name: str) -> str:
        value = row_id(self.row, self.where, EvalDataError, name)  # ids are top-level fields
        if value is None:
            raise self.error(name, "missing")
        return value


def _teacher(r: _Row, index: int) -> EvalItem:
    # The teacher-set schema has one home, gad.data (which also accepts the "prompt" and the paper's
    # "content" variants); imported here because it brings torch along.
    from gad.data import TeacherSetError, parse_row

    try:
        row = parse_row(r.row, r.where)
    except TeacherSetError as e:
        raise EvalDataError(str(e)) from None
    meta = r.row.get("meta") or {}
    if not isinstance(meta, dict):
        raise r.error("meta", f"expected an object, got {type(meta).__name__}")
    return EvalItem(
        id=row.id,
        messages=row.messages,
        reference=row.teacher_response,
        category=meta.get("category") if isinstance(meta.get("category"), str) else None,
        meta=dict(meta),
    )


def _fastchat(r: _Row, index: int) -> EvalItem:
    messages = turns_to_messages(r.row, r.where, EvalDataError)
    meta: dict[str, Any] = {"n_turns": len(r.row["turns"])}
    if "reference" in r.row:  # MT-Bench's answers for math/reasoning/coding: hints for a judge, per turn
        meta["judge_reference"] = r.row["reference"]
    return EvalItem(
        id=r.ident("question_id"),
        messages=messages,
        category=r.text("category", required=False),
        meta=meta,
    )


def _selfinst(r: _Row, index: int) -> EvalItem:
    messages = instruction_to_messages(r.row, r.where, EvalDataError)  # checks instances[0] too
    text_out = _Row(r.where, r.row["instances"][0], "instances[0].").text("output", required=False, allow_empty=True)
    meta = {k: v for k, v in r.row.items() if k not in ("id", "instruction", "instances")}
    return EvalItem(
        id=r.ident("id"),
        messages=messages,
        reference=text_out or None,
        category=meta.get("motivation_app"),
        meta=meta,
    )


def _dolly(r: _Row, index: int) -> EvalItem:
    messages = instruction_to_messages(r.row, r.where, EvalDataError)
    context = r.text("context", required=False, allow_empty=True)
    return EvalItem(
        id=r.ident("id") if "id" in r.row else str(index),
        messages=messages,
        reference=r.text("response", allow_empty=True),
        category=r.text("category", required=False),
        meta={"has_context": bool(context and context.strip())},
    )


def _alpaca(r: _Row, index: int) -> EvalItem:
    messages = instruction_to_messages(r.row, r.where, EvalDataError)  # + Alpaca's input; AlpacaEval has none
    meta = {k: v for k, v in r.row.items() if k not in ("instruction", "input", "output", "dataset")}
    return EvalItem(
        id=r.ident("id") if "id" in r.row else str(index),
        messages=messages,
        reference=r.text("output", allow_empty=True),
        category=r.text("dataset", required=False),
        meta=meta,
    )


_PARSERS = {
    "teacher": _teacher,
    "fastchat": _fastchat,
    "selfinst": _selfinst,
    "dolly": _dolly,
    "alpaca": _alpaca,
}


def load_eval_set(path: str | os.PathLike, *, format: str | None = None, name: str | None = None) -> EvalSet:
    """Reads an evaluation set from ``path`` (JSONL, a JSON list, or parquet for teacher sets; a
    ``datasets`` ``save_to_disk`` folder or a Hub dataset id ``org/name[:split]``).

    Args:
        path: the file.
        format: one of :data:`FORMATS`; detected from the first row's fields when ``None``.
        name: the set's name in reports; the file's stem by default (``vicuna80``).

    Raises:
        InputNotFound: no such file.
        EvalDataError: unknown format, a malformed row, or a duplicate id (file, line and field named).
    """
    path = Path(path)
    if not (path.is_file() or is_saved_dataset(path) or is_hub_dataset(path)):
        raise InputNotFound(f"{path}: evaluation set not found")
    if format is not None and format not in FORMATS:
        raise EvalDataError(f"{path}: unknown format {format!r}; use one of {', '.join(FORMATS)}")
    items: list[EvalItem] = []
    seen: dict[str, str] = {}
    for index, (where, _, row) in enumerate(iter_rows(path, EvalDataError)):
        if format is None:
            format = detect_format(row)
            if format is None:
                raise EvalDataError(
                    f"{where}: cannot tell the format from the fields {sorted(row)}; expected one of: "
                    "teacher (id, messages, teacher_response), fastchat (question_id, turns), "
                    "selfinst (instruction, instances), dolly (instruction, context, response), "
                    "alpaca (instruction, output)"
                )
        r = _Row(where, row)
        for required in _REQUIRED[format]:
            if required not in row:
                raise r.error(required, f"missing (required by the {format} format)")
        item = _PARSERS[format](r, index)
        if item.id in seen:
            raise r.error("id", f"duplicate id {item.id!r} (first on {seen[item.id]})")
        place = where.rsplit(":", 1)[-1]  # "12", "item 12" or "row 12"
        seen[item.id] = f"line {place}" if place.isdigit() else place
        items.append(item)
    if not items:
        raise EvalDataError(f"{path}: no rows")
    return EvalSet(name=name or path.name.split(".")[0], format=format, path=path, items=items)


_REQUIRED = {
    "teacher": ("teacher_response",),  # gad.data.parse_row checks the rest
    "fastchat": ("question_id", "turns"),
    "selfinst": ("id", "instruction", "instances"),
    "dolly": ("instruction", "response"),
    "alpaca": ("instruction", "output"),
}


def default_data_dirs() -> list[Path]:
    """Where short set names are looked up: ``$GAD_EVAL_DATA``, then ``./shared/data``, ``../shared/data``."""
    dirs = [Path(p) for p in os.environ.get("GAD_EVAL_DATA", "").split(os.pathsep) if p]
    return dirs + [Path("shared/data"), Path("../shared/data")]


def resolve_eval_set(spec: str, data_dirs: Iterable[str | os.PathLike] | None = None) -> Path:
    """A path for ``spec``: an existing file, or a short name from :data:`KNOWN_SETS` / a file stem
    found in one of ``data_dirs`` (default :func:`default_data_dirs`)."""
    if Path(spec).is_file() or is_saved_dataset(spec) or is_hub_dataset(spec):
        return Path(spec)
    dirs = [Path(d) for d in data_dirs] if data_dirs is not None else default_data_dirs()
    filename = KNOWN_SETS.get(spec.lower())
    for d in dirs:
        candidates = [d / filename] if filename else []
        candidates += [d / f"{spec}{ext}" for ext in (".jsonl", ".json", ".parquet")]
        for c in candidates:
            if c.is_file():
                return c
    known = ", ".join(KNOWN_SETS)
    raise InputNotFound(
        f"evaluation set {spec!r} is neither a file nor a known set ({known}) in {', '.join(map(str, dirs))}; "
        "pass a path, or set GAD_EVAL_DATA to the folder holding the sets"
    )
