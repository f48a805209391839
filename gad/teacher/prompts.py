"""Read prompts from JSONL / JSON / parquet into chat requests, whatever public format they use.

Rows are read and turned into chats by :mod:`gad.rows` (``messages``, the paper's ``content`` list,
``prompt``, Vicuna / MT-Bench ``turns`` (first turn), Self-Instruct, Dolly, Alpaca; see
:func:`gad.rows.row_to_messages`), as the teacher-set and evaluation-set readers do.

Ids: the row's ``id`` or ``question_id`` when present (a string or an integer, checked by
:func:`gad.rows.row_id` as every reader does), else a hash of the messages, so the same
prompt gets the same id on every run (that is what makes resume work).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gad import rows as _rows
from gad.errors import UserError
from gad.rows import iter_rows, row_id
from gad.rows import messages_id as message_hash  # the name this module gave it first
from gad.teacher.backend import ChatRequest, Message


class PromptFormatError(UserError, ValueError):
    """A bad prompt row; the message names the file, the line (or parquet row) and the field."""


@dataclass
class PromptSet:
    requests: list[ChatRequest]
    rows: int
    """Rows read from the file."""
    duplicates: int
    """Rows whose id (and messages) repeat an earlier row; asked once."""


def read_prompts(path: str | Path, system: str | None = None, limit: int | None = None) -> PromptSet:
    """All prompts in ``path`` as requests, duplicates removed, ``system`` prepended when given."""
    path = Path(path)
    requests: list[ChatRequest] = []
    seen: dict[str, tuple[str, list[Message]]] = {}
    rows = duplicates = 0
    for where, _, row in iter_rows(path, PromptFormatError):
        rows += 1
        messages = row_to_messages(row, where)
        if system is not None:
            if messages[0]["role"] == "system":
                raise PromptFormatError(f"{where}: field 'messages': the row has its own system message "
                                        "and --system was given too; drop one")
            messages = [{"role": "system", "content": system}, *messages]
        rid = row_id(row, where, PromptFormatError, "id" if "id" in row else "question_id")
        rid = message_hash(messages) if rid is None else rid
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


def row_to_messages(row: dict[str, Any], where: str) -> list[Message]:
    """The chat a row asks for (see :func:`gad.rows.row_to_messages`); errors as :class:`PromptFormatError`."""
    return _rows.row_to_messages(row, where, PromptFormatError)
