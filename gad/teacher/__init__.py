"""Black-box teacher collection: prompts -> teacher (API or local model) -> resumable teacher set.

Cheap to import: openai and torch load only when a backend is built. Typical library use, e.g. by the
eval judge::

    from gad.teacher import (ChatRequest, GenerationSettings, OpenAIBackend, ResponseStore,
                             api_key_from_env, collect, read_rows)

    backend = OpenAIBackend(GenerationSettings(model="gpt-4o-mini", max_tokens=512),
                            api_key=api_key_from_env("OPENAI_API_KEY"), concurrency=32)
    summary = collect(requests, backend, ResponseStore("judge.jsonl", response_field="judgment"))
    judgments = {row["id"]: row["judgment"] for row in read_rows("judge.jsonl")}
"""

from gad.teacher.api import OpenAIBackend, RateLimiter, RetryPolicy
from gad.teacher.backend import (
    ChatRequest,
    ChatResponse,
    FatalBackendError,
    GenerationSettings,
    TeacherBackend,
)
from gad.teacher.collect import SettingsChanged, Summary, collect, collect_async
from gad.teacher.local import LocalBackend
from gad.teacher.prompts import PromptFormatError, PromptSet, read_prompts
from gad.teacher.redact import api_key_from_env, register_secret, scrub
from gad.teacher.store import ResponseStore, StoreError, read_rows

__all__ = [
    "ChatRequest", "ChatResponse", "FatalBackendError", "GenerationSettings", "TeacherBackend",
    "SettingsChanged", "Summary", "collect", "collect_async", "PromptFormatError", "PromptSet",
    "read_prompts", "api_key_from_env", "register_secret", "scrub", "ResponseStore", "StoreError", "read_rows",
    "OpenAIBackend", "RetryPolicy", "RateLimiter", "LocalBackend",
]
