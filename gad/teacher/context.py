"""A teacher that is another teacher plus a context the student never sees (context distillation).

Baking a long system prompt and a few examples into a model's weights is a real use of black-box
distillation: the teacher answers *with* the hidden messages, the stored teacher set holds only the
visible prompt, so the student has to learn the behaviour itself. The demo's default teacher is
this wrapper around the local student model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from gad.teacher.backend import ChatRequest, ChatResponse, Message, TeacherBackend


class HiddenContextBackend:
    """Forwards each request to ``inner`` with ``context`` prepended; the collector stores the
    request as it was given, so the context never reaches the teacher set."""

    def __init__(self, inner: TeacherBackend, context: Sequence[Message]):
        if not context:
            raise ValueError("a hidden context needs at least one message")
        self.inner = inner
        self.context = [dict(m) for m in context]
        self.name = f"{inner.name}+hidden-context"
        self.concurrency = inner.concurrency
        self.batch_size = inner.batch_size
        self.settings = inner.settings
        self.stats = getattr(inner, "stats", None)

    def fingerprint_extra(self) -> dict[str, Any]:
        """Added to the store fingerprint by the collector: resuming with another hidden context would
        mix two teachers."""
        blob = json.dumps(self.context, sort_keys=True).encode()
        inner = self.inner.fingerprint_extra() if hasattr(self.inner, "fingerprint_extra") else {}
        return {**inner, "hidden_context": hashlib.sha256(blob).hexdigest()[:12]}

    async def respond(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return await self.inner.respond(
            [ChatRequest(r.id, self.context + list(r.messages), r.extra) for r in requests])

    async def aclose(self) -> None:
        await self.inner.aclose()
