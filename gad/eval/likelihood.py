"""Precision and coverage: log-likelihoods of answers, per token, for a local teacher and the students.

Two sides of the KL between student and teacher, both estimable when the teacher is a local model:

- **precision** (the reverse-KL side, ``E_student[log p_teacher]``): the teacher's log-likelihood of
  each *student* answer, under the teacher's full context (its hidden messages, then the prompt's
  messages, its own chat template with the generation prompt);
- **coverage** (the forward-KL side, ``E_teacher[log p_student]``): the student's log-likelihood of
  each *teacher* answer (a teacher set's ``teacher_response``), under the student's chat template.

What counts as a token: the answer's text is tokenized by the scoring model's own tokenizer
(``add_special_tokens=False``, as :func:`gad.data.encode_response` tokenizes a teacher answer for
training) and, when the answer *ended* (it was not cut at the token budget), the scoring model's EOS
token is appended: a finished answer ends there, so ending is part of what is scored. An answer cut
at ``max_new_tokens`` (a student's ``truncated``, a teacher row's ``finish_reason: "length"``) is
scored without EOS. The prompt's tokens are conditioned on, never counted. Each answer's score is its
mean log-probability per token (nats); a set's score is the mean over answers, with a 95% bootstrap
interval over answers (:func:`gad.eval.metrics.bootstrap_ci`), and two models are compared by the
mean of their per-answer differences on the same prompts, with a paired bootstrap interval.

Functions here take a model and tokenizer or plain numbers; the per-model cache
(``OUT/<model>/likelihoods.jsonl``) is read and appended by :func:`read_cache` / :func:`append_cache`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gad.eval.metrics import bootstrap_ci
from gad.rows import Message

CACHE_FILE = "likelihoods.jsonl"


@dataclass(frozen=True)
class Scoring:
    """One answer to score: the chat it answers (context included), the answer, whether it ended."""

    messages: list[Message]
    answer: str
    ended: bool = True
    template_kwargs: dict[str, Any] | None = None
    """Extra variables for the scoring model's chat template (the student's
    ``data.chat_template_kwargs`` for coverage); None = none."""


def answer_ids(tokenizer: Any, messages: list[Message], answer: str, ended: bool = True,
               template_kwargs: dict[str, Any] | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the chat with the tokenizer's template (given ``template_kwargs``)
    and generation prompt (:func:`gad.data.template_prompt`), and the answer's tokens, plus EOS when
    it ``ended``."""
    from gad.data import template_prompt

    prompt = template_prompt(tokenizer, messages, template_kwargs)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    return prompt, list(ids) + ([tokenizer.eos_token_id] if ended else [])


def score_answers(model: Any, tokenizer: Any, items: Sequence[Scoring], *, batch_size: int = 8,
                  max_length: int | None = None) -> list[list[float] | None]:
    """Per-token log-probabilities of each answer given its chat, teacher-forced, in batches.

    One forward pass per batch (right-padded, so positions count from 0 as for a single sequence);
    item ``i`` gets ``log p(a_t | chat, a_<t)`` for each answer token ``a_t`` (see the module
    docstring for which tokens). ``None`` for an answer with no token (an empty, unfinished one) or
    a sequence longer than ``max_length`` (default: the model's context length), which the model
    was never built to read.
    """
    import torch

    from gad.teacher.local import context_length

    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    limit = max_length or context_length(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [answer_ids(tokenizer, it.messages, it.answer, it.ended, it.template_kwargs) for it in items]
    out: list[list[float] | None] = [None] * len(items)
    todo = [i for i, (p, a) in enumerate(encoded) if a and (limit is None or len(p) + len(a) <= limit)]
    todo.sort(key=lambda i: -sum(map(len, encoded[i])))  # similar lengths together: little padding
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            seqs = [encoded[i][0] + encoded[i][1] for i in batch]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, s in enumerate(seqs):
                ids[row, : len(s)] = torch.tensor(s)
                mask[row, : len(s)] = 1
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            for row, i in enumerate(batch):  # (B, T, V) logits: normalise only the answer's rows
                p, a = encoded[i]
                rows = logits[row, len(p) - 1 : len(p) + len(a) - 1].float()  # (len(a), V): predict a_t
                logp = torch.log_softmax(rows, dim=-1)
                targets = torch.tensor(a, device=logp.device)
                out[i] = logp[torch.arange(len(a), device=logp.device), targets].tolist()
            del logits
    finally:
        model.train(was_training)
    return out


def answer_logprobs(model: Any, tokenizer: Any, messages: list[Message], answer: str, ended: bool = True) -> list[float] | None:
    """:func:`score_answers` for one answer: its per-token log-probabilities (None: see there)."""
    return score_answers(model, tokenizer, [Scoring(messages, answer, ended)], batch_size=1)[0]


# ---------------------------------------------------------------------------------------------------
# Aggregation


def per_token_mean(logprobs: Sequence[float] | None) -> float | None:
    """An answer's mean log-probability per token (None for an unscored answer)."""
    return None if not logprobs else sum(logprobs) / len(logprobs)


def likelihood_estimate(per_item: Sequence[float | None], n_tokens: Sequence[int | None], *,
                        seed: int = 0) -> dict[str, Any]:
    """The set's score: the mean over scored answers of their per-token means, a 95% bootstrap
    interval over answers, how many answers (``n``) and tokens were scored and how many were
    skipped (``n_skipped``: too long for the model, or an empty answer cut at the token budget, e.g.
    a model that only produced special tokens, which decode to nothing). With nothing scored,
    ``value``, ``low`` and ``high`` are None."""
    scored = [x for x in per_item if x is not None]
    if not scored:
        return {"value": None, "low": None, "high": None, "n": 0, "n_tokens": 0, "n_skipped": len(per_item)}
    est = bootstrap_ci(scored, seed=seed).to_dict()
    est["n_tokens"] = sum(t for t in n_tokens if t)
    est["n_skipped"] = len(per_item) - len(scored)
    return est


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], *, seed: int = 0) -> dict[str, Any] | None:
    """Mean of ``a[i] - b[i]`` over the items both scored, with a 95% paired bootstrap interval
    (the items are resampled, each keeping its pair). None when no item has both."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} items: a paired difference needs the same items")
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    return bootstrap_ci(diffs, seed=seed).to_dict() if diffs else None


# ---------------------------------------------------------------------------------------------------
# The cache: OUT/<model>/likelihoods.jsonl


def cache_key(scorer: str, item: Scoring) -> str:
    """What a cached score depends on: the scoring model, the chat (context included), the answer and
    whether it ended, and the template's extra variables when there are any. A changed answer or
    another teacher is scored again."""
    key: list[Any] = [scorer, item.messages, item.answer, item.ended]
    if item.template_kwargs:  # keys made without them stay valid
        key.append(item.template_kwargs)
    blob = json.dumps(key, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_cache(folder: str | os.PathLike) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``{(kind, set, id): row}`` of ``folder/likelihoods.jsonl`` (last row wins; none: empty). Rows:
    ``{"kind": "precision"|"coverage", "set", "id", "key", "sum", "n_tokens"}``; ``sum`` and
    ``n_tokens`` are null for an answer that could not be scored. An unreadable line (a run killed
    mid-write) is ignored: that answer is scored again."""
    path = Path(folder) / CACHE_FILE
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            out[(row["kind"], row["set"], row["id"])] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def append_cache(folder: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Appends rows (see :func:`read_cache`) to ``folder/likelihoods.jsonl``."""
    path = Path(folder) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
