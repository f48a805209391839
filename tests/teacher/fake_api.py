"""A loopback chat-completions server with injectable faults, for tests and benchmarks.

It runs aiohttp on its own event loop in a background thread, so it serves both in-process async
clients and a ``gad teacher`` subprocess. Every request is logged (prompt key, fault served), which
is how the tests prove exactly-once delivery and zero repeated requests after a resume.

The prompt key is the content of the last user message; the answer is ``"answer: <key>"``, so a
test can check that each response landed on the right row. A ``reply`` hook scripts other answers
(the eval judge's tests serve scores and garbage with it).

Faults (one per request at most):
    429          rate limited, no Retry-After
    429-ra       rate limited with ``Retry-After`` (seconds, ``retry_after``)
    500, 503     server errors
    hang         the server sits on the request for ``hang_s`` (longer than the client timeout)
    drop         the connection is closed without a response
    malformed    HTTP 200 with a truncated JSON body
    empty        a valid answer with empty content (a recorded outcome, not retried)
    length       a valid answer cut short, finish_reason "length" (a recorded outcome)

Refusals of one request (the client sets them aside and goes on):
    ``context_tokens``  a request whose messages plus its max tokens exceed it gets the HTTP 400 a
                        vLLM server sends (its body, word for word; a token here is a word)
    ``policy``          prompt keys refused with OpenAI's content-policy 400 (``invalid_prompt``)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

RETRIED_FAULTS = ("429", "429-ra", "500", "503", "hang", "drop", "malformed")
RECORDED_FAULTS = ("empty", "length")
ALL_FAULTS = RETRIED_FAULTS + RECORDED_FAULTS


@dataclass
class Hit:
    key: str
    fault: str | None
    time: float
    authorization: str | None


@dataclass
class FakeChatAPI:
    api_key: str | None = None
    """When set, requests without ``Authorization: Bearer <api_key>`` get a 401 that echoes the key
    they sent (real providers echo a masked key; echoing it whole tests gad's scrubbing)."""
    latency: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = ALL_FAULTS
    script: dict[str, list[str | None]] = field(default_factory=dict)
    """Per prompt key, the fault for attempt 0, 1, ...; wins over ``fault_rate``."""
    retry_after: str = "1"
    hang_s: float = 30.0
    seed: int = 0
    force_status: int | None = None
    """Answer every request with this HTTP status (e.g. 401, 400)."""
    force_code: str = "forced"
    """The error ``code`` sent with ``force_status`` (OpenAI: "insufficient_quota" for a spent quota)."""
    force_param: str | None = None
    """The error ``param`` sent with ``force_status`` (OpenAI names the parameter it rejects)."""
    context_tokens: int | None = None
    """The model's context length: longer requests get vLLM's 400 (see the module docstring)."""
    policy: set[str] = field(default_factory=set)
    """Prompt keys refused with a content-policy 400."""

    reject_max_tokens: bool = False
    """Answer 400 to bodies with ``max_tokens``, as OpenAI's reasoning models do."""
    reply: Callable[[dict], str | None] | None = None
    """Scripted content: called with the request body (in the server's thread); ``None`` falls back
    to ``"answer: <key>"``. Faults are served first, as for the default answer."""
    reasoning_field: str | None = None
    """When set (``reasoning_content`` as DeepSeek and vLLM's reasoning parsers, ``reasoning`` as
    OpenRouter), the message also carries ``"thinking about <key>"`` in that field."""

    hits: list[Hit] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _attempts: dict[str, int] = field(default_factory=dict)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeChatAPI:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake API did not start")
        return self

    def stop(self) -> None:
        if getattr(self, "_loop", None) is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeChatAPI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    # ---- bookkeeping -----------------------------------------------------------------------------
    def count(self, key: str) -> int:
        with self._lock:
            return sum(h.key == key for h in self.hits)

    def keys_since(self, n: int) -> list[str]:
        """Prompt keys of the requests received after the first ``n``."""
        with self._lock:
            return [h.key for h in self.hits[n:]]

    def _pick_fault(self, key: str) -> str | None:
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
        if key in self.script:
            plan = self.script[key]
            return plan[attempt] if attempt < len(plan) else None
        if self.fault_rate <= 0:
            return None
        # Deterministic per (seed, key, attempt): the same run replays the same faults.
        h = hashlib.sha256(f"{self.seed}|{key}|{attempt}".encode()).digest()
        if int.from_bytes(h[:4], "big") / 2**32 >= self.fault_rate:
            return None
        return self.faults[h[4] % len(self.faults)]

    # ---- the endpoint ----------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        body = await request.json()
        messages = body["messages"]
        key = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            sent = (auth or "").removeprefix("Bearer ")
            self._log(key, "401", auth)
            return _error(401, f"Incorrect API key provided: {sent}.", "invalid_api_key")
        if self.force_status is not None:
            self._log(key, str(self.force_status), auth)
            return _error(self.force_status, f"forced status {self.force_status}", self.force_code,
                          param=self.force_param)
        if self.reject_max_tokens and "max_tokens" in body:
            self._log(key, "400", auth)
            return web.Response(status=400, content_type="application/json", text=json.dumps({"error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                           "Use 'max_completion_tokens' instead.", "type": "invalid_request_error",
                "param": "max_tokens", "code": "unsupported_parameter"}}))
        refusal = self._refusal(key, body)
        if refusal is not None:
            self._log(key, "400", auth)
            return web.Response(status=400, text=json.dumps(refusal), content_type="application/json")
        fault = self._pick_fault(key)
        self._log(key, fault, auth)
        if self.latency:
            await asyncio.sleep(self.latency)

        if fault == "429":
            return _error(429, "Rate limit reached.", "rate_limit_exceeded")
        if fault == "429-ra":
            return _error(429, "Rate limit reached.", "rate_limit_exceeded", {"Retry-After": self.retry_after})
        if fault in ("500", "503"):
            return _error(int(fault), "The server had an error.", "server_error")
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
        if fault == "drop":
            request.transport.close()
            return web.Response(status=200)
        if fault == "malformed":
            return web.Response(status=200, text='{"id": "chatcmpl-x", "choices": [{"index": 0, "mess',
                                content_type="application/json")

        content = self.reply(body) if self.reply is not None else None
        content, finish = (f"answer: {key}" if content is None else content), "stop"
        if fault == "empty":
            content = ""
        elif fault == "length":
            content, finish = content[: max(1, len(content) // 2)], "length"
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        message = {"role": "assistant", "content": content}
        if self.reasoning_field:
            message[self.reasoning_field] = f"thinking about {key}"
        return web.json_response({
            "id": f"chatcmpl-{len(self.hits)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": message}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()),
                      "total_tokens": prompt_tokens + len(content.split())},
        })

    def _refusal(self, key: str, body: dict) -> dict | None:
        if key in self.policy:  # OpenAI's body for a flagged prompt
            return {"error": {"message": "Invalid prompt: your prompt was flagged as potentially violating our "
                              "usage policy. Please try again with a different prompt.",
                              "type": "invalid_request_error", "param": None, "code": "invalid_prompt"}}
        if self.context_tokens is None:
            return None
        prompt = sum(len(m["content"].split()) for m in body["messages"])
        completion = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        if prompt + completion <= self.context_tokens:
            return None
        # vLLM's OpenAI-compatible server, word for word (vllm/entrypoints/openai/serving_engine.py)
        return {"object": "error", "type": "BadRequestError", "param": None, "code": 400, "message": (
            f"This model's maximum context length is {self.context_tokens} tokens. However, you requested "
            f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the completion). "
            "Please reduce the length of the messages or completion.")}

    def _log(self, key: str, fault: str | None, auth: str | None) -> None:
        with self._lock:
            self.hits.append(Hit(key, fault, time.monotonic(), auth))


def _error(status: int, message: str, code: str, headers: dict | None = None,
           param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "error", "param": param, "code": code}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


def main() -> None:
    """``python -m tests.teacher.fake_api --latency 0.2``: serve in the foreground (benchmarks run
    it in its own process so the server does not share the client's GIL); prints the URL."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    args = p.parse_args()
    server = FakeChatAPI(latency=args.latency, fault_rate=args.fault_rate).start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
