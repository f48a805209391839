"""The teacher contract: chat requests in, chat responses out, whatever answers them.

A backend is anything with ``respond(requests) -> responses`` (an OpenAI-compatible API, a local
transformers model, a judge). The collection loop (:mod:`gad.teacher.collect`) owns concurrency,
the store and resume; a backend only answers what it is handed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]


@dataclass(frozen=True)
class GenerationSettings:
    """What the teacher is asked for. Part of the store's fingerprint: a resumed run must ask the
    same question, or the teacher set would mix two teachers."""

    model: str
    max_tokens: int | None = 1024
    temperature: float | None = None
    """None leaves the provider's default (some reasoning models reject any other value)."""
    top_p: float | None = None
    seed: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Provider-specific request fields (e.g. ``{"reasoning_effort": "low"}``), sent as given."""

    def fingerprint(self) -> str:
        """A short hash of every field, stored with each row so resume can refuse a changed setup."""
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ChatRequest:
    id: str
    messages: list[Message]
    extra: dict[str, Any] = field(default_factory=dict)
    """Carried into the stored row untouched (e.g. a judge's pair ids)."""


@dataclass
class ChatResponse:
    id: str
    content: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refusal: str | None = None
    attempts: int = 1
    latency_s: float = 0.0
    error: str | None = None
    """Set when the request could not be answered after all retries: it is not stored, so the next
    run asks again. Already scrubbed of secrets."""
    rejected: str | None = None
    """Set when the server refused this request for reasons of its own (prompt over the context
    length, a content policy): why, already scrubbed. It is set aside in the ``.rejected.jsonl``
    sidecar and not asked again unless the caller says so (``gad teacher --retry-rejected``)."""
    reasoning: str | None = None
    """The model's thinking, apart from its answer: a server's ``reasoning_content`` /
    ``reasoning`` field, or (after :func:`separate_reasoning`) an inline ``<think>`` block."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.rejected is None

    @property
    def flag(self) -> str | None:
        """Why this answer is suspect as a training target: refused, empty (nothing to learn, also
        when the budget ran out before any answer, e.g. inside a ``<think>`` block) or truncated."""
        if self.refusal or self.finish_reason == "content_filter":
            return "refused"
        if not (self.content or "").strip():
            return "empty"
        if self.finish_reason == "length":
            return "truncated"
        return None


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_reasoning(text: str) -> tuple[str, str | None]:
    """``(answer, reasoning)`` of a reply that thinks inline; ``(text, None)`` when it does not.

    A reply that starts with ``<think>`` (Qwen3, DeepSeek-R1 served without a reasoning parser)
    thinks until ``</think>``; one cut while thinking has no ``</think>`` and no answer. A reply with
    a ``</think>`` and no ``<think>`` before it thinks from its first character (templates that open
    the block in the generation prompt, as DeepSeek-R1's). The answer loses the whitespace the block
    leaves before it; an empty reasoning (``<think>\n\n</think>``) is None.
    """
    head = text.lstrip()
    if head.startswith(THINK_OPEN):
        thought, closed, answer = head[len(THINK_OPEN):].partition(THINK_CLOSE)
        if not closed:
            return "", thought.strip() or None
    else:
        thought, closed, answer = text.partition(THINK_CLOSE)
        if not closed or THINK_OPEN in thought:
            return text, None
    return answer.lstrip(), thought.strip() or None


def separate_reasoning(response: ChatResponse) -> ChatResponse:
    """The response with its answer alone in ``content`` and all its thinking (returned apart by
    the server, inline, or both) in ``reasoning``."""
    if response.content is None and response.reasoning is None:
        return response
    answer, inline = split_reasoning(response.content or "")
    parts = [p.strip() for p in (response.reasoning, inline) if p and p.strip()]
    return dataclasses.replace(response, content=None if response.content is None else answer,
                               reasoning="\n\n".join(parts) or None)


def with_reasoning(answer: str, reasoning: str | None) -> str:
    """The answer with its thinking before it, as Qwen3's chat template writes a turn that thinks."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}" if reasoning else answer


class FatalBackendError(RuntimeError):
    """No further request can succeed (bad key, no quota, unsupported parameter, unknown model): the
    run stops at once, keeping everything answered so far. The message is already scrubbed."""


@runtime_checkable
class TeacherBackend(Protocol):
    """Contract for anything that answers chat requests.

    ``respond`` returns exactly one :class:`ChatResponse` per request, in order. A request that
    failed after the backend's own retries comes back with ``error`` set, one refused for reasons of
    its own (too long for the model, a content policy) with ``rejected`` set; anything that dooms the
    whole run raises :class:`FatalBackendError`. The collector keeps up to ``concurrency`` calls in
    flight, each with up to ``batch_size`` requests (API: many calls of one; local model: one call
    of a batch).
    """

    name: str
    concurrency: int
    batch_size: int
    settings: GenerationSettings

    async def respond(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]: ...

    async def aclose(self) -> None: ...
