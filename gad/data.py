"""Teacher sets: reading, validating, templating, length limits, and the order batches are drawn in.

A teacher-set row is ``{"id": str, "messages": [{"role", "content"}, ...], "teacher_response": str}``
(the last message is the user turn the teacher answered). The prompt may be in any format
``gad.rows.row_to_messages`` accepts (``prompt``, the paper's ``content`` list, ``turns``,
``instruction``...), and the file JSONL, a JSON list or parquet. A malformed row stops the run
before training with ``file:line: field: problem``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gad.errors import UserError
from gad.rows import iter_rows, messages_id, row_id, row_to_messages


class TeacherSetError(UserError, ValueError):
    """A malformed teacher set; the message names file, line and field."""


@dataclass
class TeacherRow:
    id: str
    messages: list[dict[str, str]]
    teacher_response: str


@dataclass
class Example:
    """One tokenised row: the templated prompt and the teacher response terminated like a student sample."""

    id: str
    prompt_ids: list[int]
    response_ids: list[int]  # ends with EOS unless truncated
    truncated: bool = False


@dataclass
class DataStats:
    rows: int = 0
    bad_rows: int = 0
    dropped_long_prompts: int = 0
    truncated_prompts: int = 0
    truncated_responses: int = 0
    examples: int = 0
    bad_row_messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{self.examples} examples from {self.rows} rows; {self.dropped_long_prompts} dropped (prompt too long), "
        if self.truncated_prompts:
            s += f"{self.truncated_prompts} prompts truncated (data.long_prompts), "
        s += f"{self.truncated_responses} teacher responses truncated"
        if self.bad_rows:
            s += f", {self.bad_rows} malformed rows skipped"
        return s


def parse_row(obj: Any, where: str) -> TeacherRow:
    """Validate one decoded row in any accepted format."""
    if not isinstance(obj, dict):
        raise TeacherSetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    messages = row_to_messages(obj, where, TeacherSetError)
    resp = obj.get("teacher_response")
    if resp is None:
        raise TeacherSetError(f"{where}: field 'teacher_response': missing")
    if not isinstance(resp, str):
        raise TeacherSetError(f"{where}: field 'teacher_response': must be a string, got {type(resp).__name__}")
    if not resp.strip():
        raise TeacherSetError(f"{where}: field 'teacher_response': empty")
    rid = row_id(obj, where, TeacherSetError)
    return TeacherRow(messages_id(messages) if rid is None else rid, messages, resp)


def read_teacher_set(path: str | Path, skip_bad_rows: bool = False) -> tuple[list[TeacherRow], DataStats]:
    """Read and validate every row. Stops at the first bad row unless ``skip_bad_rows``."""
    path = Path(path)
    rows: list[TeacherRow] = []
    stats = DataStats()
    seen: dict[str, str] = {}
    for where, _, obj in iter_rows(path, TeacherSetError, keep_going=True):
        stats.rows += 1
        try:
            if isinstance(obj, TeacherSetError):  # not JSON, or not an object
                raise obj
            row = parse_row(obj, where)
            if row.id in seen:
                raise TeacherSetError(f"{where}: field 'id': duplicate id {row.id!r} (first at {seen[row.id]})")
            seen[row.id] = where
        except TeacherSetError as e:
            if not skip_bad_rows:
                raise
            stats.bad_rows += 1
            stats.bad_row_messages.append(str(e))
            continue
        rows.append(row)
    if not rows:
        raise TeacherSetError(f"{path}: no usable rows")
    return rows, stats


def template_prompt(tokenizer: Any, messages: list[dict[str, str]],
                    chat_template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """The chat template with the generation prompt, as token ids. ``chat_template_kwargs`` are
    extra template variables (``data.chat_template_kwargs``, e.g. ``enable_thinking=False``)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **(chat_template_kwargs or {}))
    else:  # a base model without a template: a plain transcript
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_response(tokenizer: Any, text: str, eos_id: int, max_length: int) -> tuple[list[int], bool]:
    """Teacher text → ids ending with EOS exactly as the student's samples end.

    Too long: cut to ``max_length`` tokens *without* EOS, like a student sample that hit the token
    budget, so both kinds of truncation are scored at the same kind of token.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) + 1 > max_length:
        return ids[:max_length], True
    return ids + [eos_id], False


def encode_teacher_set(
    rows: list[TeacherRow], tokenizer: Any, eos_id: int, max_prompt_length: int, max_response_length: int,
    stats: DataStats | None = None, long_prompts: str = "drop", chat_template_kwargs: dict[str, Any] | None = None,
) -> tuple[list[Example], DataStats]:
    """Token ids of each row (the prompt with the student's chat template and its
    ``chat_template_kwargs``, ``data.chat_template_kwargs``). A prompt over
    ``max_prompt_length`` is dropped or, with ``long_prompts`` ``left``/``right``, cut on that side
    (``data.long_prompts``); responses over ``max_response_length`` are truncated."""
    stats = stats or DataStats(rows=len(rows))
    examples = []
    for row in rows:
        prompt_ids = template_prompt(tokenizer, row.messages, chat_template_kwargs)
        if len(prompt_ids) > max_prompt_length:
            if long_prompts == "drop":
                stats.dropped_long_prompts += 1
                continue
            cut = len(prompt_ids) - max_prompt_length
            prompt_ids = prompt_ids[cut:] if long_prompts == "left" else prompt_ids[:max_prompt_length]
            stats.truncated_prompts += 1
        response_ids, truncated = encode_response(tokenizer, row.teacher_response, eos_id, max_response_length)
        stats.truncated_responses += truncated
        examples.append(Example(row.id, prompt_ids, response_ids, truncated))
    stats.examples = len(examples)
    if not examples:
        raise TeacherSetError("no example fits data.max_prompt_length; raise it, shorten the prompts, "
                              "or truncate them (data.long_prompts=left)")
    return examples, stats


def hold_out(rows: list[TeacherRow], fraction: float, seed: int) -> tuple[list[TeacherRow], list[TeacherRow]]:
    """Split ``rows`` into (training, held-out): ``fraction`` of them (at least one when > 0) held out,
    picked by a hash of each row's id and ``seed``, so the same rows whatever the file's order. Both
    keep the file's order."""
    if fraction <= 0 or not rows:
        return rows, []
    k = max(1, round(fraction * len(rows)))
    rank = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest())
    held = {id(r) for r in rank[:k]}
    return [r for r in rows if id(r) not in held], [r for r in rows if id(r) in held]


def batch_indices(step: int, batch_size: int, dataset_size: int, seed: int) -> list[int]:
    """The example indices of ``step``: a pure function of the step, so resuming needs only the step.

    The stream is the concatenation of one seeded permutation per epoch; batch ``s`` is items
    ``[s*B, (s+1)*B)`` of it (a batch may straddle two epochs, so every step is full).
    """
    out = []
    start = step * batch_size
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, dataset_size)
        out.append(_permutation(epoch, dataset_size, seed)[offset])
    return out


_PERM_CACHE: dict[tuple[int, int, int], list[int]] = {}


def _permutation(epoch: int, n: int, seed: int) -> list[int]:
    key = (epoch, n, seed)
    if key not in _PERM_CACHE:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _PERM_CACHE[key] = torch.randperm(n, generator=g).tolist()
    return _PERM_CACHE[key]
