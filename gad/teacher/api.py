"""The OpenAI-compatible chat-completions backend: OpenAI, vLLM, SGLang, any proxy that speaks it.

Retries are ours, not the client's (``max_retries=0``): one policy for every provider, every retry
counted in the summary. :func:`classify_status` sorts an HTTP error into one of three:

- worth retrying (429, 408/409, 5xx; also timeouts, dropped connections, garbled bodies);
- refused for reasons of this one request (a prompt over the context length, a content policy,
  another 400): it comes back ``rejected`` and the run goes on (the collector stops the run when
  the same refusal hits several different prompts in a row: then it is the setup, not the prompts;
  a prompt too long by itself, :func:`prompt_too_long`, never counts there);
- what would hit every request (401, 403, 404, an unsupported parameter, an exhausted quota): the
  run stops at once instead of burning through the prompt list.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gad.teacher.backend import ChatRequest, ChatResponse, FatalBackendError, GenerationSettings
from gad.teacher.redact import scrub

RETRY, REJECT, FATAL = "retry", "reject", "fatal"
STOP_STATUS = {401: "authentication failed", 403: "permission denied", 404: "not found (check --model and --base-url)"}
REQUEST_STATUS = (400, 413, 422)
"""Statuses that may be about one request only: what the body says decides."""
_CONTEXT = re.compile(r"context length|context window|maximum context|too many tokens|prompt is too long|"
                      r"input is too long|too long for|tokens \+ `max_new_tokens` must be", re.IGNORECASE)
_POLICY = re.compile(r"content.{0,20}polic|usage polic|safety system|flagged", re.IGNORECASE)
_UNSUPPORTED = re.compile(r"unsupported (parameter|value)|unrecognized (request )?argument|unknown parameter|"
                          r"extra inputs are not permitted", re.IGNORECASE)
_REQUEST_PARAMS = ("messages", "prompt", "input")
"""A ``param`` starting with these (``messages``, ``messages.[1].content``, ``input_tokens``) is about
the request's content, not a setting."""
# The numbers of a context-length refusal: the context, and the completion budget when said.
_CONTEXT_SIZE = re.compile(r"maximum context length is (\d+)|must be <= (\d+)", re.IGNORECASE)
_COMPLETION_SIZE = re.compile(r"(\d+) in the completion|is too large: (\d+)|(\d+) `max_new_tokens`", re.IGNORECASE)


def classify_status(status: int, code: str | None, param: str | None, message: str) -> tuple[str, str]:
    """``(action, reason)`` for an HTTP error: action ``"retry"``, ``"reject"`` (this request only)
    or ``"fatal"`` (every request would fail); the reason names the status and the server's words."""
    said = " ".join(message.split())[:400]
    code, param = str(code or "").lower(), param or None  # vLLM sends the status as an int code
    if status == 429 and code == "insufficient_quota":
        return FATAL, f"quota exhausted (HTTP 429 insufficient_quota): {said}"
    if status == 429 or status in (408, 409) or status >= 500:
        return RETRY, f"HTTP {status}"
    if status in STOP_STATUS:
        return FATAL, f"HTTP {status} {STOP_STATUS[status]}: {said}"
    if status not in REQUEST_STATUS:
        return FATAL, f"HTTP {status}: {said}"
    if code in ("context_length_exceeded", "string_above_max_length") or _CONTEXT.search(message):
        return REJECT, f"HTTP {status} context length exceeded: {said}"
    if code in ("content_policy_violation", "invalid_prompt", "content_filter") or _POLICY.search(message):
        return REJECT, f"HTTP {status} content policy: {said}"
    if (code in ("unsupported_parameter", "unsupported_value", "unknown_parameter")
            or (param is not None and not param.startswith(_REQUEST_PARAMS)) or _UNSUPPORTED.search(message)):
        return FATAL, f"HTTP {status} unsupported parameter{f' {param!r}' if param else ''}: {said}"
    return REJECT, f"HTTP {status} bad request: {said}"


def prompt_too_long(reason: str, max_tokens: int | None) -> bool:
    """True for a context-length refusal (a ``reason`` from :func:`classify_status`) that the
    prompt's own length explains: the completion budget alone (the one the server quotes, else
    ``max_tokens``) is less than the context, so shorter prompts fit. False when that budget fills
    the context (every prompt is refused: the setup), for other refusals, and when the numbers
    cannot be read."""
    if "context length exceeded" not in reason:
        return False
    context = _CONTEXT_SIZE.search(reason)
    completion = _COMPLETION_SIZE.search(reason)
    budget = int(next(g for g in completion.groups() if g)) if completion else max_tokens
    if context is None or budget is None:
        return False
    return budget < int(next(g for g in context.groups() if g))


@dataclass
class RetryPolicy:
    max_retries: int = 8
    """Attempts after the first; a request still failing is reported and left for the next run."""
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 300.0
    """A Retry-After longer than this is capped (a provider asking for an hour is a quota, not a blip)."""

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff (AWS architecture blog, "Exponential Backoff and Jitter"),
        never shorter than the server's Retry-After."""
        jittered = random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after_s), jittered)
        return jittered


class RateLimiter:
    """A token bucket over one minute: ``acquire(n)`` waits until ``n`` units fit under the limit.

    Used twice: requests per minute (n=1) and tokens per minute (n = prompt estimate + max_tokens,
    corrected with ``refund`` once the real usage is known). The bucket starts full, so short runs
    are not throttled for nothing.
    """

    def __init__(self, per_minute: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, n: float = 1.0) -> None:
        n = min(n, self.capacity)  # one request larger than the whole budget still goes, alone
        async with self._lock:  # FIFO: waiters queue here instead of stampeding
            self._refill()
            while self.level < n:
                await asyncio.sleep((n - self.level) / self.rate)
                self._refill()
            self.level -= n

    def refund(self, n: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + n)


@dataclass
class ApiStats:
    retries: int = 0
    retry_reasons: dict[str, int] | None = None

    def count(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons = self.retry_reasons or {}
        self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1


def estimate_tokens(text: str) -> int:
    """~4 characters per token for English: good enough for budgets and --dry-run, no tokenizer."""
    return max(1, len(text) // 4)


class OpenAIBackend:
    """Answers chat requests through ``openai.AsyncOpenAI`` with limits and retries.

    Reusable as is by any client that needs resumable, fault-tolerant chat calls (the eval judge):
    build one, hand it to :func:`gad.teacher.collect.collect` with a store.
    """

    name = "api"
    batch_size = 1

    def __init__(
        self,
        settings: GenerationSettings,
        *,
        api_key: str | None,
        base_url: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 600.0,
        rpm: float | None = None,
        tpm: float | None = None,
        retry: RetryPolicy | None = None,
    ):
        import openai  # lazy: `gad --help` should not pay for it

        self.settings = settings
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.stats = ApiStats()
        self.rpm = RateLimiter(rpm) if rpm else None
        self.tpm = RateLimiter(tpm) if tpm else None
        self._openai, self._httpx = openai, _httpx_module()
        self._client_args = {"api_key": api_key or "none", "base_url": base_url, "max_retries": 0,
                             "timeout": timeout_s}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_tokens_field = "max_tokens"  # what most compatible servers accept

    def _bind_loop(self) -> None:
        """The HTTP client, semaphore and limiters belong to one event loop; each ``collect`` call
        runs its own, so rebuild them when the loop changes (the backend stays reusable)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._loop = loop
        self._client = self._openai.AsyncOpenAI(**self._client_args, http_client=self._http_client())
        self._limit = asyncio.Semaphore(self.concurrency)  # also bounds direct callers of respond()
        for limiter in (self.rpm, self.tpm):
            if limiter is not None:
                limiter._lock = asyncio.Lock()

    def _http_client(self):
        """aiohttp under the openai client when installed: ~40% less CPU per request than the
        default httpx pool at 64 connections (measured with benchmarks/teacher_throughput.py),
        which is what lets one process keep hundreds of requests per second in flight."""
        limits = self._httpx.Limits(max_connections=max(100, self.concurrency),
                               max_keepalive_connections=self.concurrency)
        timeout = self._client_args["timeout"]
        try:
            import aiohttp  # noqa: F401

            return self._openai.DefaultAioHttpClient(timeout=timeout, limits=limits)
        except (ImportError, RuntimeError):
            return self._openai.DefaultAsyncHttpxClient(timeout=timeout, limits=limits)

    async def respond(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Answer ``requests`` concurrently (at most ``concurrency`` in flight). For resumable work
        hand the backend to :func:`gad.teacher.collect.collect` instead of calling this directly."""
        self._bind_loop()
        tasks = [asyncio.ensure_future(self._complete(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:  # a fatal error (or Ctrl-C) ends the siblings too, not orphans them
                task.cancel()
            raise

    async def aclose(self) -> None:
        if self._loop is not None:
            await self._client.close()
            self._loop = None

    # ------------------------------------------------------------------------------------------------
    async def _complete(self, request: ChatRequest) -> ChatResponse:
        s = self.settings
        budget = sum(estimate_tokens(m["content"]) for m in request.messages) + (s.max_tokens or 0)
        last_error = ""
        for attempt in range(self.retry.max_retries + 1):
            if self.rpm:
                await self.rpm.acquire(1)
            if self.tpm:
                await self.tpm.acquire(budget)
            try:
                async with self._limit:
                    start, sent_field = time.monotonic(), self._max_tokens_field
                    # The client's raw `post` (documented for custom endpoints): its auth, transport,
                    # timeouts and status errors, without typed (de)serialisation, which cost ~40%
                    # of the CPU per request and trips on providers' non-standard fields.
                    raw = await self._client.post("/chat/completions", cast_to=self._httpx.Response,
                                                  body={"model": s.model, "messages": request.messages,
                                                        **self._params()})
                response = _to_response(request.id, json.loads(raw.content))
                response.attempts, response.latency_s = attempt + 1, time.monotonic() - start
                if self.tpm:
                    self.tpm.refund(budget - response.prompt_tokens - response.completion_tokens)
                return response
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified right below; unknown ones are fatal
                action, reason, retry_after = self._classify(exc)
                said = action != RETRY and isinstance(exc, self._openai.APIStatusError)  # reason quotes the body
                last_error = scrub(reason if said else f"{reason}: {_describe(exc)}")
                if action == FATAL and sent_field == "max_tokens" and self._wants_max_completion_tokens(exc):
                    # OpenAI's reasoning models reject `max_tokens`; switch once for all requests.
                    self._max_tokens_field = "max_completion_tokens"
                    continue
                if action == FATAL:
                    raise FatalBackendError(f"request {request.id!r} failed with {last_error}") from None
                if action == REJECT:
                    if self.tpm:
                        self.tpm.refund(budget)  # nothing was generated
                    return ChatResponse(id=request.id, attempts=attempt + 1, rejected=last_error)
                if attempt == self.retry.max_retries:
                    break
                self.stats.count(reason)
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
        return ChatResponse(id=request.id, attempts=self.retry.max_retries + 1,
                            error=f"gave up after {self.retry.max_retries + 1} attempts; last: {last_error}")

    def _params(self) -> dict:
        s = self.settings
        params: dict = {}
        if s.max_tokens is not None:
            params[self._max_tokens_field] = s.max_tokens
        for name in ("temperature", "top_p", "seed"):
            if getattr(s, name) is not None:
                params[name] = getattr(s, name)
        params.update(s.extra_body)
        return params

    def _wants_max_completion_tokens(self, exc: Exception) -> bool:
        return (isinstance(exc, self._openai.BadRequestError)
                and (exc.param == "max_tokens" or "max_completion_tokens" in str(exc)))

    def _classify(self, exc: Exception) -> tuple[str, str, float | None]:
        """(action, reason, retry_after_s) for a failed attempt; see :func:`classify_status`."""
        o = self._openai
        if isinstance(exc, o.APIStatusError):
            action, reason = classify_status(exc.status_code, getattr(exc, "code", None),
                                             getattr(exc, "param", None), _server_message(exc))
            return action, reason, _retry_after(exc.response.headers) if action == RETRY else None
        if isinstance(exc, o.APITimeoutError) and not _connection_failure(exc):
            return RETRY, "timeout", None
        if isinstance(exc, o.APIConnectionError):
            return RETRY, "connection error", None
        if isinstance(exc, (o.APIResponseValidationError, json.JSONDecodeError, MalformedResponse)):
            return RETRY, "malformed response", None
        return FATAL, f"unexpected error {type(exc).__name__}", None


class MalformedResponse(ValueError):
    pass


def _to_response(rid: str, body: Any) -> ChatResponse:
    """The fields gad keeps from a chat-completions body; anything else shaped is malformed."""
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
        usage = body.get("usage") or {}
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("content is not a string")
        # DeepSeek and vLLM's reasoning parsers say `reasoning_content`, OpenRouter and others
        # `reasoning`; a provider's other shapes (lists of parts) are not kept.
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        return ChatResponse(
            id=rid,
            content=content,
            finish_reason=choice.get("finish_reason"),
            model=body.get("model"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            refusal=message.get("refusal"),
            reasoning=reasoning if isinstance(reasoning, str) and reasoning.strip() else None,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedResponse(f"unexpected response body ({type(exc).__name__}: {exc})") from None


def _retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds; an HTTP date is rare
    from these APIs and falls back to backoff)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def _httpx_module():
    """The HTTP library under the installed openai client (httpx2 in openai 3.x, httpx before)."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


def _connection_failure(exc: BaseException) -> str | None:
    """The aiohttp transport reports a dropped *or refused* connection as a (connect) timeout; find
    the real cause so the summary's retry reasons and the errors say what happened."""
    seen = 0
    cause = exc.__cause__ or exc.__context__
    while cause is not None and seen < 8:
        text = str(cause)
        if "Disconnected" in type(cause).__name__ or any(s in text.lower() for s in ("disconnected", "cannot connect")):
            return text
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None


def _server_message(exc: Exception) -> str:
    """The server's own words: ``message`` of the error body (OpenAI nests it under ``error``, vLLM
    puts it at the top; the client unwraps both), else the exception's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return str(exc)


def _describe(exc: Exception) -> str:
    text = (_connection_failure(exc) or str(exc)).strip() or type(exc).__name__
    return text[:300]
