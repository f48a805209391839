"""The API backend + collector against a real loopback chat-completions server with faults."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gad.teacher import (
    ChatRequest,
    GenerationSettings,
    OpenAIBackend,
    RateLimiter,
    RetryPolicy,
    collect,
)
from gad.teacher.api import classify_status, prompt_too_long
from gad.teacher.collect import RefusalStreak
from gad.teacher.redact import register_secret
from tests.teacher.fake_api import ALL_FAULTS
from tests.teacher.harness import API_KEY, run_cli, stored_ids, teacher_argv, write_prompts

FAST = RetryPolicy(max_retries=6, backoff_base_s=0.02, backoff_max_s=0.2)


def backend(api, concurrency=8, timeout_s=0.5, retry=FAST, **kw) -> OpenAIBackend:
    register_secret(API_KEY)
    return OpenAIBackend(GenerationSettings(model="fake-teacher", max_tokens=64), api_key=API_KEY,
                         base_url=api.url, concurrency=concurrency, timeout_s=timeout_s, retry=retry, **kw)


def requests(n: int) -> list[ChatRequest]:
    return [ChatRequest(id=f"p{i:05d}", messages=[{"role": "user", "content": f"prompt {i}"}]) for i in range(n)]


def rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_every_fault_kind_answered_exactly_once(fake_api, tmp_path):
    # Prompt i meets fault i (then a second fault on its next attempt for half of them).
    script = {f"prompt {i}": [f, ALL_FAULTS[(i + 3) % len(ALL_FAULTS)] if i % 2 else None]
              for i, f in enumerate(ALL_FAULTS)}
    api = fake_api(script=script)
    out = tmp_path / "t.jsonl"
    summary = collect(requests(30), backend(api), out)
    got = rows(out) + rows(tmp_path / "t.dropped.jsonl")  # empty answers are set aside, still done
    assert [r["meta"]["flag"] for r in rows(tmp_path / "t.dropped.jsonl")] == ["empty"] * summary.dropped
    assert sorted(r["id"] for r in got) == [f"p{i:05d}" for i in range(30)]
    for r in got:
        # each answer landed on its own row (empty/length faults give cut-down versions of it)
        assert f"answer: prompt {int(r['id'][1:])}".startswith(r["teacher_response"])
    by_id = {r["id"]: r for r in got}
    assert by_id[f"p{ALL_FAULTS.index('empty'):05d}"]["meta"]["flag"] == "empty"
    length = by_id[f"p{ALL_FAULTS.index('length'):05d}"]["meta"]
    assert (length["flag"], length["finish_reason"]) == ("truncated", "length")
    assert summary.complete and summary.done + summary.dropped == 30 and summary.retried >= 7
    assert summary.flagged["empty"] >= 1 and summary.flagged["truncated"] >= 1
    assert set(summary.retry_reasons) >= {"HTTP 429", "HTTP 500", "HTTP 503", "timeout",
                                          "connection error", "malformed response"}
    saved = json.loads((tmp_path / "t.summary.json").read_text())
    assert saved["done"] + saved["dropped"] == 30


def test_retry_after_is_honoured(fake_api, tmp_path):
    api = fake_api(script={"prompt 0": ["429-ra"]}, retry_after="0.6")
    collect(requests(1), backend(api), tmp_path / "t.jsonl")
    first, second = api.hits
    assert second.time - first.time >= 0.55  # jittered backoff alone would be <= 0.02 s


@pytest.mark.parametrize("status, param", [(401, None), (403, None), (404, None), (400, "temperature")])
def test_errors_that_hit_every_request_stop_at_once(fake_api, tmp_path, status, param, capsys):
    api = fake_api(force_status=status, force_param=param)
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 200)
    rc = run_cli(teacher_argv(api, prompts, out, "--concurrency", "4"))
    assert rc == 1
    assert len(api.hits) <= 4  # only what was already in flight; no retries, nothing new sent
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert f"HTTP {status}" in summary["stopped"] and summary["retried"] == 0
    assert "STOPPED" in capsys.readouterr().err


def test_api_key_never_printed_or_written(fake_api, tmp_path, capsys):
    # The server answers 401 and echoes the key it received, as providers do.
    api = fake_api(api_key="sk-the-server-wants-another-key")
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 20)
    assert run_cli(teacher_argv(api, prompts, out)) == 1
    assert api.hits[0].authorization == f"Bearer {API_KEY}"  # the key really was sent ...
    captured = capsys.readouterr()
    assert "authentication failed" in captured.err
    assert API_KEY not in captured.out + captured.err  # ... and never shown
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def test_insufficient_quota_is_fatal(fake_api, tmp_path):
    api = fake_api(force_status=429)
    # force_status answers with code "forced": that is an ordinary, retryable 429 ...
    s = collect(requests(1), backend(api, retry=RetryPolicy(max_retries=2, backoff_base_s=0.01)), tmp_path / "a.jsonl")
    assert s.failed == 1 and len(api.hits) == 3 and s.stopped is None
    assert stored_ids(tmp_path / "a.jsonl") == []  # failed requests are not stored; the next run asks again
    # ... while a spent quota will not come back by retrying: stop at once.
    api = fake_api(force_status=429, force_code="insufficient_quota")
    s = collect(requests(5), backend(api, concurrency=1), tmp_path / "b.jsonl")
    assert "quota" in s.stopped and len(api.hits) == 1 and s.not_sent == 4


def test_failed_requests_are_retried_by_the_next_run(fake_api, tmp_path):
    api = fake_api(script={"prompt 1": ["500", "500", "500"]})
    out = tmp_path / "t.jsonl"
    s = collect(requests(3), backend(api, retry=RetryPolicy(max_retries=2, backoff_base_s=0.01)), out)
    assert (s.done, s.failed, s.failed_ids) == (2, 1, ["p00001"])
    hits = len(api.hits)
    s = collect(requests(3), backend(api), out)
    assert (s.skipped, s.done, s.failed) == (2, 1, 0)
    assert api.keys_since(hits) == ["prompt 1"]
    assert sorted(stored_ids(out)) == ["p00000", "p00001", "p00002"]


def test_empty_answers_are_set_aside_truncated_kept_by_default(fake_api, tmp_path):
    api = fake_api(script={"prompt 0": ["length"], "prompt 1": ["empty"]})
    out = tmp_path / "t.jsonl"
    s = collect(requests(3), backend(api), out)
    assert (s.done, s.dropped, s.flagged["truncated"], s.flagged["empty"]) == (2, 1, 1, 1)
    assert sorted(stored_ids(out)) == ["p00000", "p00002"]
    assert stored_ids(tmp_path / "t.dropped.jsonl") == ["p00001"]


def test_drop_truncated_keeps_flagged_out_but_done(fake_api, tmp_path):
    api = fake_api(script={"prompt 0": ["length"], "prompt 1": ["empty"]})
    out = tmp_path / "t.jsonl"
    s = collect(requests(4), backend(api), out, drop_flagged=True)
    assert (s.done, s.dropped) == (2, 2)
    assert sorted(stored_ids(out)) == ["p00002", "p00003"]
    assert sorted(stored_ids(tmp_path / "t.dropped.jsonl")) == ["p00000", "p00001"]
    hits = len(api.hits)
    s = collect(requests(4), backend(api), out, drop_flagged=True)
    assert s.skipped == 4 and len(api.hits) == hits  # dropped ones are not paid for twice


def test_changed_settings_refuse_to_resume(fake_api, tmp_path):
    from gad.teacher import SettingsChanged

    api = fake_api()
    out = tmp_path / "t.jsonl"
    collect(requests(2), backend(api), out)
    other = OpenAIBackend(GenerationSettings(model="another-teacher"), api_key=API_KEY, base_url=api.url)
    with pytest.raises(SettingsChanged, match="t.jsonl was collected with other generation settings"):
        collect(requests(3), other, out)
    s = collect(requests(3), other, out, allow_settings_change=True)
    assert s.done == 1


def test_rate_limiter_paces_requests(monkeypatch):
    """On a clock that moves only when the limiter sleeps: from an empty bucket at 600/min (10/s),
    four requests wait 0.1 s each; a full bucket lets them through at once."""
    import types

    from gad.teacher import api as api_module

    clock, slept = [0.0], []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(api_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(api_module, "asyncio", types.SimpleNamespace(sleep=sleep, Lock=asyncio.Lock))

    async def four(level: float) -> None:
        limiter = RateLimiter(per_minute=600)
        limiter.level = level
        for _ in range(4):
            await limiter.acquire(1)

    asyncio.run(four(level=600.0))
    assert slept == []
    asyncio.run(four(level=0.0))
    assert slept == pytest.approx([0.1] * 4)


def test_rpm_limit_end_to_end(fake_api, tmp_path):
    api = fake_api()
    b = backend(api, rpm=1200)  # 20/s
    b.rpm.level = 0.0
    t0 = time.monotonic()
    collect(requests(6), b, tmp_path / "t.jsonl")
    assert time.monotonic() - t0 >= 0.25


def test_switches_to_max_completion_tokens_when_asked(fake_api, tmp_path):
    api = fake_api(reject_max_tokens=True)
    s = collect(requests(5), backend(api, concurrency=1), tmp_path / "t.jsonl")
    assert s.complete and s.done == 5
    assert len(api.hits) == 6  # one 400, then every request with max_completion_tokens
    s = collect(requests(20), backend(fake_api(reject_max_tokens=True), concurrency=8), tmp_path / "u.jsonl")
    assert s.complete and s.done == 20  # several in flight with the old field all recover


def test_dead_server_is_retried_then_reported_as_a_connection_error(tmp_path):
    """Nothing listening (a typo'd URL, a vLLM still starting): retried like a blip, then reported as
    what it is, not as a timeout, and asked again by the next run."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = OpenAIBackend(GenerationSettings(model="fake-teacher", max_tokens=8), api_key=API_KEY,
                         base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2,
                         retry=RetryPolicy(max_retries=2, backoff_base_s=0.01))
    summary = collect(requests(3), dead, tmp_path / "t.jsonl", progress=False)
    assert not summary.complete and summary.failed == 3 and summary.done == 0
    assert summary.retry_reasons == {"connection error": 6}
    assert not (tmp_path / "t.jsonl").read_text()  # nothing stored: all three are asked again next time
    dead = OpenAIBackend(GenerationSettings(model="fake-teacher", max_tokens=8), api_key=API_KEY,
                         base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2, retry=RetryPolicy(max_retries=0))

    async def ask():
        try:
            return await dead.respond(requests(1))
        finally:
            await dead.aclose()

    [answer] = asyncio.run(ask())
    assert answer.error.startswith("gave up after 1 attempts; last: connection error: Cannot connect to host 127.0.0.1")


VLLM_CONTEXT = ("This model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
                "(2000 in the messages, 100 in the completion). Please reduce the length of the messages or completion.")


@pytest.mark.parametrize("status, code, param, message, action, label", [
    # refused for reasons of its own: set aside, the run goes on
    (400, "400", None, VLLM_CONTEXT, "reject", "context length exceeded"),  # vLLM (code is the status)
    (400, 400, None, VLLM_CONTEXT, "reject", "context length exceeded"),  # ... as an int, as vLLM sends it
    (400, "context_length_exceeded", "messages", "This model's maximum context length is 128000 tokens.",
     "reject", "context length exceeded"),  # OpenAI
    (400, "400", "input_tokens", "This model's maximum context length is 2048 tokens. However, you requested "
     "2100 tokens (parameter=input_tokens, value=2100)", "reject", "context length exceeded"),  # newer vLLM
    (422, None, None, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
     "Given: 4000 `inputs` tokens and 200 `max_new_tokens`", "reject", "context length exceeded"),  # TGI
    (400, "content_policy_violation", None, "Your request was rejected as a result of our safety system.",
     "reject", "content policy"),
    (400, "invalid_prompt", None, "Invalid prompt: your prompt was flagged as potentially violating our "
     "usage policy.", "reject", "content policy"),
    (400, None, None, "something about this one request", "reject", "bad request"),
    # a param naming a part of the request's content (OpenAI writes the path several ways)
    (400, None, "messages.[1].content", "Invalid value for 'content': expected a string, got null.", "reject",
     "bad request"),
    (400, "invalid_type", "messages[0].content", "Invalid type for 'messages[0].content': expected one of a "
     "string or array of objects, but got an object instead.", "reject", "bad request"),
    (400, None, "input[0]", "Invalid 'input[0]': empty string.", "reject", "bad request"),
    (400, None, "prompt.text", "Invalid 'prompt.text'.", "reject", "bad request"),
    # would hit every request: stop
    (400, "unsupported_parameter", "max_tokens", "Unsupported parameter: 'max_tokens' is not supported with "
     "this model.", "fatal", "unsupported parameter"),
    (400, None, "temperature", "Unsupported value: 'temperature' does not support 0.7.", "fatal",
     "unsupported parameter"),
    (400, None, None, "Unsupported parameter: 'top_p'", "fatal", "unsupported parameter"),
    (401, "invalid_api_key", None, "Incorrect API key provided", "fatal", "authentication failed"),
    (403, None, None, "Project does not have access to model", "fatal", "permission denied"),
    (404, "model_not_found", "model", "The model `gpt-9` does not exist", "fatal", "not found"),
    (429, "insufficient_quota", None, "You exceeded your current quota", "fatal", "quota exhausted"),
    # passing trouble: retried
    (429, "rate_limit_exceeded", None, "Rate limit reached.", "retry", "HTTP 429"),
    (503, None, None, "overloaded", "retry", "HTTP 503"),
    (408, None, None, "timeout", "retry", "HTTP 408"),
])
def test_classify_status(status, code, param, message, action, label):
    got_action, reason = classify_status(status, code, param, message)
    assert got_action == action and label in reason and f"HTTP {status}" in reason


SETUP_CONTEXT = ("This model's maximum context length is 2048 tokens. However, you requested 4106 tokens "
                 "(10 in the messages, 4096 in the completion). Please reduce the length of the messages or completion.")


@pytest.mark.parametrize("reason, max_tokens, too_long", [
    (VLLM_CONTEXT, 100, True),  # 100 of 2048 for the completion: the prompt's own length did it
    (VLLM_CONTEXT, None, True),  # the message gives the completion budget
    (SETUP_CONTEXT, 4096, False),  # the completion alone fills the context: every prompt is refused
    ("'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 4096 "
     "tokens and your request has 2778 input tokens (8000 > 4096 - 2778).", 8000, False),  # newer vLLM
    ("'max_tokens' or 'max_completion_tokens' is too large: 2000. This model's maximum context length is 4096 "
     "tokens and your request has 2778 input tokens (2000 > 4096 - 2778).", 2000, True),
    ("This model's maximum context length is 1536 tokens. However, your request has 4176 input tokens. "
     "Please reduce the length of the input messages.", 100, True),  # newer vLLM, the input alone
    ("This model's maximum context length is 1536 tokens. However, your request has 4176 input tokens.", None,
     False),  # no completion budget to compare: counted
    ("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens "
     "and 200 `max_new_tokens`", 200, True),  # TGI
    ("prompt is too long", 100, False),  # numbers not readable: counted
    ("HTTP 400 content policy: flagged (maximum context length is 2048, 1 in the completion)", 100, False),
])
def test_prompt_too_long(reason, max_tokens, too_long):
    """A context-length refusal is the prompt's own problem unless the completion budget alone is
    at least the context (then every prompt is refused: the setup); unreadable numbers count."""
    if not reason.startswith("HTTP"):
        reason = f"HTTP 400 context length exceeded: {reason}"  # as classify_status words it
    assert prompt_too_long(reason, max_tokens) is too_long


def test_refusal_streak_stops_on_the_same_refusal_of_three_different_prompts():
    setup = f"HTTP 400 context length exceeded: {SETUP_CONTEXT}"  # reasons as classify_status words them
    other = setup.replace("4106", "4110").replace("(10 ", "(14 ")  # same refusal, other numbers
    too_long = f"HTTP 400 context length exceeded: {VLLM_CONTEXT}"
    streak = RefusalStreak(limit=3, max_tokens=4096)
    assert streak.refused("a", setup, "a") == [] and streak.refused("b", other, "b") == []
    assert streak.answered() == ["a", "b"]  # an answer in between: the prompts were the problem, not the setup
    assert streak.refused("c", setup, "c") == [] and streak.refused("d", other, "d") == []
    assert streak.refused("e", "content policy", "e") == ["c", "d"]  # another refusal starts a new streak
    assert streak.refused("f", setup, "f") == ["e"] and streak.refused("f", setup, "f2") == []
    assert not streak.tripped  # the same prompt twice is one prompt
    assert streak.refused("g", too_long, "g") == ["g"]  # too long by itself: set aside, never counted
    assert streak.refused("h", other, "h") == [] and not streak.tripped
    assert streak.refused("i", setup, "i") == [] and streak.tripped
    assert streak.held == ["f", "f2", "h", "i"]  # not set aside: pending for a rerun with the setup fixed


def write_prompt_texts(path, texts: list[str]) -> None:
    with open(path, "w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"p{i:05d}", "prompt": text}) + "\n")


def test_prompt_over_the_context_is_set_aside_and_the_run_goes_on(fake_api, tmp_path, capsys):
    """Issue 10 acceptance: against a server with a 2,048-token context, one prompt too long for it
    is set aside with vLLM's reason, the others are answered, a rerun does not send it again and
    --retry-rejected does."""
    api = fake_api(context_tokens=2048)
    texts = [f"prompt {i}" for i in range(12)]
    long_prompt = "prompt 5 " + "word " * 2100
    texts[5] = long_prompt
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompt_texts(prompts, texts)
    argv = teacher_argv(api, prompts, out, "--max-tokens", "100", "--concurrency", "4")

    assert run_cli(argv) == 0
    assert sorted(stored_ids(out)) == [f"p{i:05d}" for i in range(12) if i != 5]
    [rejected] = rows(tmp_path / "t.rejected.jsonl")
    assert rejected["id"] == "p00005" and rejected["messages"][-1]["content"] == long_prompt
    assert "context length exceeded" in rejected["reason"]
    assert "maximum context length is 2048 tokens. However, you requested 2202 tokens" in rejected["reason"]
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert summary["rejected"] == 1 and summary["stopped"] is None and summary["done"] == 11
    assert summary["rejections"] == {"p00005": rejected["reason"]}
    err = capsys.readouterr().err
    assert "rejected 1" in err and "p00005" in err and "t.rejected.jsonl" in err and "--retry-rejected" in err
    assert api.count(long_prompt) == 1  # refused once, not retried

    hits = len(api.hits)
    assert run_cli(argv) == 0  # a rerun sends nothing: the rejected prompt is not asked again
    assert len(api.hits) == hits
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert (summary["skipped"], summary["rejected_before"], summary["rejected"]) == (12, 1, 0)
    assert "--retry-rejected" in capsys.readouterr().err
    assert run_cli([*argv, "--dry-run"]) == 0
    assert "11 already answered in" in (dry := capsys.readouterr().out) and "1 refused by the server before" in dry
    assert "would send 0 requests" in dry
    assert run_cli([*argv, "--dry-run", "--retry-rejected"]) == 0
    assert "would send 1 requests" in capsys.readouterr().out

    assert run_cli([*argv, "--retry-rejected"]) == 0  # asked again, refused again: still set aside
    assert api.keys_since(hits) == [long_prompt]
    api.context_tokens = 4096  # the server now takes it (a longer --max-model-len)
    assert run_cli([*argv, "--retry-rejected"]) == 0
    assert api.keys_since(hits) == [long_prompt, long_prompt]
    assert sorted(stored_ids(out)) == [f"p{i:05d}" for i in range(12)]
    hits = len(api.hits)
    assert run_cli(argv) == 0 and run_cli([*argv, "--retry-rejected"]) == 0
    assert len(api.hits) == hits  # answered now: never asked again, with or without the flag
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert (summary["skipped"], summary["stored_total"]) == (12, 12)


def test_adjacent_prompts_over_the_context_are_set_aside_not_a_streak(fake_api, tmp_path):
    """Three prompts too long for the context next to each other (a file sorted by length): each is
    its own problem, not the setup's; all three are set aside and the run completes."""
    api = fake_api(context_tokens=2048)
    texts = [f"prompt {i}" for i in range(10)]
    for i in (4, 5, 6):
        texts[i] = f"prompt {i} " + "word " * 2100
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompt_texts(prompts, texts)
    assert run_cli(teacher_argv(api, prompts, out, "--max-tokens", "100", "--concurrency", "1")) == 0
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert (summary["stopped"], summary["done"], summary["rejected"]) == (None, 7, 3)
    assert sorted(stored_ids(tmp_path / "t.rejected.jsonl")) == ["p00004", "p00005", "p00006"]


def test_the_same_refusal_on_three_prompts_in_a_row_stops(fake_api, tmp_path, capsys):
    """A max-tokens larger than the server's context fails every request with the same 400: that is
    the setup, not the prompts; stop after three, quoting the reason. Those refusals are not set
    aside: a plain rerun with the setup fixed sends them again."""
    api = fake_api(context_tokens=2048)
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 200)
    argv = teacher_argv(api, prompts, out, "--max-tokens", "4096", "--concurrency", "4")
    assert run_cli(argv) == 1
    refused = {h.key for h in api.hits}
    assert 3 <= len(refused) <= 4 + 2  # those in flight, and at most two sent after the first refusals
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert "3 different prompts in a row" in summary["stopped"]
    assert "maximum context length is 2048 tokens" in summary["stopped"]
    assert summary["not_sent"] >= 194 and summary["retried"] == 0
    assert summary["rejected"] == 0 and summary["failed"] == len(refused)  # pending, not set aside
    assert not stored_ids(tmp_path / "t.rejected.jsonl")
    err = capsys.readouterr().err
    assert "STOPPED" in err and "rerun" in err

    hits = len(api.hits)
    api.context_tokens = 8192  # the setup fixed (a longer --max-model-len)
    assert run_cli(argv) == 0
    assert refused <= set(api.keys_since(hits))  # the refused prompts are sent again
    assert sorted(stored_ids(out)) == [f"p{i:05d}" for i in range(200)]


def test_content_policy_refusal_is_set_aside(fake_api, tmp_path):
    """Set aside, also when the last requests of a run are refused (a streak still held at the end
    was about its prompts, not the setup)."""
    api = fake_api(policy={"prompt 2", "prompt 5", "prompt 6"})
    out = tmp_path / "t.jsonl"
    s = collect(requests(7), backend(api, concurrency=1), out, progress=False)
    assert (s.done, s.rejected, s.failed, s.stopped) == (4, 3, 0, None) and s.complete
    assert "content policy" in s.rejections["p00002"] and "usage policy" in s.rejections["p00002"]
    assert stored_ids(tmp_path / "t.rejected.jsonl") == ["p00002", "p00005", "p00006"]
    assert api.count("prompt 2") == 1
