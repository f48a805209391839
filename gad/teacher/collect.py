"""Send chat requests to a backend, resumably, into a store: the loop behind ``gad teacher``.

Exactly-once comes from three rules: ids already in the store are never sent; each pending id is
handed to exactly one worker; a response is written (one flushed line) the moment it arrives.
So a kill at any point loses only the requests in flight, and the next run asks for just those.

A reply that thinks (a server's ``reasoning_content`` / ``reasoning`` field, an inline ``<think>``
block) is stored with its answer alone as the response and its thinking in ``meta.reasoning``, so
the student is never trained, nor the discriminator shown, thinking it does not see; with
``keep_reasoning`` (``gad teacher --keep-reasoning``) the response is ``<think>\n...\n</think>\n\n``
then the answer, to distil the thinking too. A reply with no answer (cut while thinking) is empty.

A request the server refuses for reasons of its own (too long, a content policy) is set aside in
the store's rejected sidecar and the run goes on. Only when the same refusal hits
:data:`REFUSAL_STREAK` different prompts in a row, with no answer in between, is it the setup and
not the prompts (e.g. a max-tokens larger than the model's context): the run stops, quoting it, and
those refusals stay pending (not set aside), so a rerun with the setup fixed sends them again. A
prompt too long by itself (:func:`gad.teacher.api.prompt_too_long`) is that prompt's problem and
never counts: a file sorted by length may hold many over-long prompts in a row.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gad.errors import UserError
from gad.teacher.api import prompt_too_long
from gad.teacher.backend import (
    ChatRequest,
    ChatResponse,
    FatalBackendError,
    TeacherBackend,
    separate_reasoning,
    with_reasoning,
)
from gad.teacher.redact import scrub
from gad.teacher.store import ResponseStore, StoreError, sidecar

FLAGS = ("empty", "truncated", "refused")
REFUSAL_STREAK = 3
"""The same refusal on this many different prompts in a row stops the run."""
MAX_LISTED = 50
"""Ids listed in the summary's ``rejections`` and ``failed_ids`` (the sidecars hold them all)."""


class SettingsChanged(UserError, RuntimeError):
    pass


@dataclass
class Summary:
    """What a collection run did. Printed at the end and written beside the output as JSON."""

    out: str
    backend: str
    model: str
    settings: str
    prompts: int = 0
    duplicates: int = 0
    skipped: int = 0
    """Prompts already answered in the store by an earlier run; not sent again."""
    to_send: int = 0
    done: int = 0
    """Responses written to the output this run."""
    dropped: int = 0
    """Responses written to the .dropped.jsonl sidecar instead: empty ones always, truncated and
    refused ones with ``drop_flagged`` (--drop-truncated). Done all the same: never asked again."""
    failed: int = 0
    """Requests that failed after all retries, or were refused while the run stopped for a setup
    error; not written, asked again by the next run."""
    rejected: int = 0
    """Requests the server refused this run for reasons of their own (too long, a content policy):
    logged with the reason in the .rejected.jsonl sidecar, not asked again unless --retry-rejected."""
    rejected_before: int = 0
    """Prompts refused by an earlier run and not sent this time (part of ``skipped``)."""
    rejections: dict[str, str] = field(default_factory=dict)
    """Id -> reason for this run's rejections (the first :data:`MAX_LISTED`)."""
    not_sent: int = 0
    """Requests left unsent because the run stopped early."""
    retried: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLAGS, 0))
    reasoning: int = 0
    """Answers that came with thinking (kept in ``meta.reasoning``, or in the response with
    ``keep_reasoning``)."""
    tokens_in: int = 0
    tokens_out: int = 0
    elapsed_s: float = 0.0
    requests_per_s: float = 0.0
    stored_total: int = 0
    repaired_bytes: int = 0
    stopped: str | None = None
    """None when the run finished; else why it stopped (fatal API error, interrupt, store error)."""
    failed_ids: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.failed == 0

    def to_json(self) -> str:
        return scrub(json.dumps(asdict(self), indent=2, ensure_ascii=False))

    def format(self) -> str:
        lines = [
            f"prompts {self.prompts} (duplicates {self.duplicates}), skipped (already answered) {self.skipped}, "
            f"sent {self.to_send - self.not_sent}",
            f"done {self.done}, dropped {self.dropped}, rejected {self.rejected}, failed {self.failed}, "
            f"retried {self.retried}"
            + (f" {self.retry_reasons}" if self.retry_reasons else ""),
            "flagged: " + ", ".join(f"{k} {v}" for k, v in self.flagged.items())
            + (f"; with reasoning {self.reasoning}" if self.reasoning else ""),
            f"tokens in {self.tokens_in}, out {self.tokens_out}; {self.elapsed_s:.1f}s, "
            f"{self.requests_per_s:.2f} req/s",
        ]
        if self.repaired_bytes:
            lines.append(f"repaired a torn last line ({self.repaired_bytes} bytes cut; that prompt was re-asked)")
        rejected_file = sidecar(self.out, ".rejected.jsonl").name
        if self.rejected:
            lines.append(f"rejected {self.rejected} (refused by the server for reasons of their own; set aside in "
                         f"{rejected_file}, not sent again unless you pass --retry-rejected):")
            lines += [f"  {rid}: {reason}" for rid, reason in list(self.rejections.items())[:5]]
            if self.rejected > 5:
                lines.append(f"  ... {self.rejected - 5} more in {rejected_file}")
        if self.rejected_before:
            lines.append(f"{self.rejected_before} prompts refused by an earlier run were not sent again "
                         f"(reasons in {rejected_file}; --retry-rejected sends them)")
        if self.failed:
            lines.append(f"{self.failed} failed (e.g. {', '.join(self.failed_ids[:5])}); rerun the same "
                         "command to retry just those")
        if self.stopped:
            lines.append(f"STOPPED: {self.stopped.rstrip('.')}; fix the cause if any, then rerun the same command to resume")
        return scrub("\n".join(lines))


def refusal_key(reason: str) -> str:
    """What makes two refusals "the same": their text with the numbers taken out (two prompts over
    the context differ in their token counts, not in the refusal)."""
    return re.sub(r"\d+", "#", reason)


class RefusalStreak:
    """The stop rule for refusals: the same refusal on ``limit`` different prompts in a row, with no
    answer in between, is about the setup (a setting, the model), not about the prompts.

    A context-length refusal that the prompt's own length explains (:func:`prompt_too_long`, given
    the run's ``max_tokens``) never counts. The refusals of a streak are *held*: an answer or another
    refusal shows them to be about their prompts and releases them (to be set aside); when the
    streak trips they stay in :attr:`held`, for the caller to leave pending.
    """

    def __init__(self, limit: int = REFUSAL_STREAK, max_tokens: int | None = None):
        self.limit = limit
        self.max_tokens = max_tokens
        self.key: str | None = None
        self.prompts: set[str] = set()
        self.held: list[Any] = []

    @property
    def tripped(self) -> bool:
        return len(self.prompts) >= self.limit

    def answered(self) -> list[Any]:
        """An answer arrived: the streak ends; returns the refusals it held."""
        released, self.key, self.prompts, self.held = self.held, None, set(), []
        return released

    def refused(self, prompt: str, reason: str, item: Any) -> list[Any]:
        """Count ``item``, a refusal of ``prompt`` (what tells prompts apart: an id, an eval item).
        Returns what to set aside now: ``item`` itself when its prompt is too long by itself, else
        the refusals of a streak this one ends. Check :attr:`tripped` after."""
        if prompt_too_long(reason, self.max_tokens):
            return [item]
        key = refusal_key(reason)
        released = self.answered() if key != self.key else []
        self.key = key
        self.prompts.add(prompt)
        self.held.append(item)
        return released


def run_fingerprint(backend: TeacherBackend, extra: dict[str, Any] | None = None) -> str:
    """What a store's rows must share to be resumed together: the generation settings, the caller's
    ``extra`` (e.g. a system prompt) and whatever the backend itself adds (``fingerprint_extra()``,
    e.g. a wrapper's hidden context), so no caller can forget it."""
    own = backend.fingerprint_extra() if hasattr(backend, "fingerprint_extra") else {}
    blob = json.dumps({"settings": backend.settings.fingerprint(), **(extra or {}), **own}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_row(request: ChatRequest, response: ChatResponse, response_field: str,
              backend: TeacherBackend, fingerprint: str, keep_reasoning: bool = False) -> dict[str, Any]:
    """The stored row: the answer (:func:`separate_reasoning` done) as ``response_field``, its
    thinking in ``meta.reasoning``, or before the answer with ``keep_reasoning``."""
    meta: dict[str, Any] = {
        "model": response.model or backend.settings.model,
        "finish_reason": response.finish_reason,
        "usage": {"prompt_tokens": response.prompt_tokens, "completion_tokens": response.completion_tokens},
        "flag": response.flag,
        "backend": backend.name,
        "settings": fingerprint,
        "attempts": response.attempts,
        "latency_s": round(response.latency_s, 3),
    }
    if response.refusal:
        meta["refusal"] = response.refusal
    text = response.content or ""
    if keep_reasoning:
        text = with_reasoning(text, response.reasoning)
    elif response.reasoning:
        meta["reasoning"] = response.reasoning
    return {"id": request.id, "messages": request.messages, response_field: text, "meta": meta, **request.extra}


def build_rejected_row(request: ChatRequest, response: ChatResponse, backend: TeacherBackend,
                       fingerprint: str) -> dict[str, Any]:
    meta = {"model": backend.settings.model, "backend": backend.name, "settings": fingerprint,
            "attempts": response.attempts, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return {"id": request.id, "messages": request.messages, "reason": response.rejected, "meta": meta,
            **request.extra}


async def collect_async(
    requests: Sequence[ChatRequest],
    backend: TeacherBackend,
    store: ResponseStore,
    *,
    drop_flagged: bool = False,
    progress: bool = True,
    fingerprint_extra: dict[str, Any] | None = None,
    allow_settings_change: bool = False,
    summary: Summary | None = None,
    desc: str = "teacher",
    prompt_of: Callable[[ChatRequest], str] | None = None,
    keep_reasoning: bool = False,
) -> Summary:
    """Answer every request whose id is not in ``store`` yet; see the module docstring.

    ``store`` must be open. ``summary`` may be passed in so a caller still holds the partial counts
    if the run is cancelled (Ctrl-C). Raises :class:`SettingsChanged` before sending anything when
    the store was filled with other generation settings. ``desc`` labels the progress bar.
    ``prompt_of`` tells the stop rule which requests are the same prompt (default: the id; the
    judge asks two orders and re-asks of one item, which are one prompt). ``keep_reasoning``: the
    teacher's thinking stays in the response (see the module docstring); part of the fingerprint.
    """
    t0 = time.monotonic()
    extra = {**(fingerprint_extra or {}), **({"keep_reasoning": True} if keep_reasoning else {})}
    fp = run_fingerprint(backend, extra)
    if store.fingerprints - {fp} and not allow_settings_change:
        raise SettingsChanged(
            f"{store.path} was collected with other generation settings (model, temperature, max tokens, "
            "system prompt, ...). Resume with the same settings, write to a new --out, or pass "
            "--allow-settings-change to mix them knowingly")
    s = summary or Summary(out=str(store.path), backend=backend.name, model=backend.settings.model, settings=fp)
    s.settings = fp
    done, refused_before = store.done_ids, store.rejected_ids
    pending = deque(r for r in requests if r.id not in done)
    s.prompts += len(requests)
    s.skipped = len(requests) - len(pending)
    s.rejected_before = sum(r.id in done and r.id in refused_before for r in requests)
    s.to_send = len(pending)
    s.repaired_bytes = store.repaired_bytes
    stats = getattr(backend, "stats", None)
    retries_before = getattr(stats, "retries", 0)
    reasons_before = dict(getattr(stats, "retry_reasons", None) or {})  # a backend may serve many runs

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), unit="req", dynamic_ncols=True, smoothing=0.05, desc=desc)
    stop = asyncio.Event()
    streak = RefusalStreak(max_tokens=backend.settings.max_tokens)
    prompt_of = prompt_of or (lambda request: request.id)

    def set_aside(request: ChatRequest, response: ChatResponse) -> None:
        store.reject(build_rejected_row(request, response, backend, fp))
        s.rejected += 1
        if len(s.rejections) < MAX_LISTED:
            s.rejections[request.id] = response.rejected or ""

    def leave_pending(request: ChatRequest) -> None:
        s.failed += 1
        if len(s.failed_ids) < MAX_LISTED:
            s.failed_ids.append(request.id)

    def record(request: ChatRequest, response: ChatResponse) -> None:
        if response.rejected is not None:
            if stop.is_set():  # the run is stopping, maybe for a setup error: not the prompt's fault
                leave_pending(request)
                return
            for item in streak.refused(prompt_of(request), response.rejected, (request, response)):
                set_aside(*item)
            if streak.tripped:
                s.stopped = scrub(
                    f"{streak.limit} different prompts in a row were refused with the same error, so it is "
                    f"the setup, not the prompts (a setting such as the max tokens, the model, the server); "
                    f"those prompts were not set aside and a rerun sends them again. The error: "
                    f"{response.rejected}")
                stop.set()
            return
        if not response.ok:
            leave_pending(request)
            return
        for item in streak.answered():  # an answer: the refusals held were about their prompts
            set_aside(*item)
        response = separate_reasoning(response)
        s.reasoning += response.reasoning is not None
        flag = response.flag
        if flag:
            s.flagged[flag] += 1
        # An empty answer teaches nothing and the teacher-set reader rejects it: always set aside.
        dropped = flag == "empty" or (drop_flagged and flag is not None)
        store.append(build_row(request, response, store.response_field, backend, fp, keep_reasoning), dropped=dropped)
        s.dropped += dropped
        s.done += not dropped
        s.tokens_in += response.prompt_tokens
        s.tokens_out += response.completion_tokens

    async def worker() -> None:
        while pending and not stop.is_set():
            batch = [pending.popleft() for _ in range(min(backend.batch_size, len(pending)))]
            try:
                responses = await backend.respond(batch)
                for request, response in zip(batch, responses, strict=True):
                    record(request, response)
            except (FatalBackendError, StoreError) as exc:
                if not stop.is_set():
                    s.stopped = scrub(str(exc))
                stop.set()  # the others finish what they hold, then stop; nothing answered is lost
            finally:
                if bar is not None:
                    bar.update(len(batch))
                    bar.set_postfix(tok_in=s.tokens_in, tok_out=s.tokens_out, failed=s.failed,
                                    retries=getattr(stats, "retries", 0) - retries_before, refresh=False)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(backend.concurrency, len(pending))))))
        while streak.held and not stop.is_set():  # the run went through: a streak still held was
            try:                                   # about its prompts
                set_aside(*streak.held[0])
            except StoreError as exc:
                s.stopped = scrub(str(exc))
                stop.set()
            else:
                streak.held.pop(0)
    except asyncio.CancelledError:
        s.stopped = s.stopped or "interrupted"
        raise
    finally:
        for request, _ in streak.answered():  # a streak that tripped, or an interrupted run: pending
            leave_pending(request)
        if bar is not None:
            bar.close()
        s.not_sent = len(pending)
        s.elapsed_s = round(time.monotonic() - t0, 3)
        sent = s.done + s.dropped
        s.requests_per_s = round(sent / s.elapsed_s, 3) if s.elapsed_s > 0 else 0.0
        s.stored_total = len(store.main.ids)
        if stats is not None:
            s.retried = stats.retries - retries_before
            s.retry_reasons = {k: v - reasons_before.get(k, 0) for k, v in (stats.retry_reasons or {}).items()
                               if v > reasons_before.get(k, 0)}
    return s


def collect(requests: Sequence[ChatRequest], backend: TeacherBackend, store: ResponseStore | str | Path,
            *, summary_path: str | Path | None = None, **kwargs: Any) -> Summary:
    """Synchronous entry point: open the store, run :func:`collect_async`, close everything.

    Ctrl-C stops the run cleanly (``summary.stopped == "interrupted"``): what was answered is on
    disk and the next call resumes. The summary is written to ``summary_path`` (default: beside
    the store, ``<out>.summary.json``); pass ``summary_path=False`` to skip.
    """
    if not isinstance(store, ResponseStore):
        store = ResponseStore(store)
    s = Summary(out=str(store.path), backend=backend.name, model=backend.settings.model, settings="")

    async def main() -> Summary:
        try:
            return await collect_async(requests, backend, store, summary=s, **kwargs)
        finally:
            await backend.aclose()

    store.open()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        s.stopped = "interrupted"
    finally:
        store.close()
        if summary_path is not False:
            path = Path(summary_path) if summary_path else sidecar(store.path, ".summary.json")
            if s.settings:  # the run got as far as starting
                path.write_text(s.to_json() + "\n", encoding="utf-8")
    return s
