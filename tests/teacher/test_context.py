"""A hidden-context teacher: the teacher sees the hidden messages, the teacher set never holds them."""

from __future__ import annotations

import pytest

from gad.teacher import ChatRequest, GenerationSettings, OpenAIBackend, SettingsChanged, collect, read_rows
from gad.teacher.context import HiddenContextBackend
from tests.teacher.harness import API_KEY

HIDDEN = [{"role": "system", "content": "Start with 'In short:'."},
          {"role": "user", "content": "example question"}, {"role": "assistant", "content": "In short: example."}]


def test_teacher_sees_the_context_and_the_store_does_not(fake_api, tmp_path):
    seen = []

    def reply(body):
        seen.append(body["messages"])
        return "In short: " + body["messages"][-1]["content"]

    api = fake_api(reply=reply)
    inner = OpenAIBackend(GenerationSettings(model="fake-teacher", max_tokens=32), api_key=API_KEY, base_url=api.url)
    teacher = HiddenContextBackend(inner, HIDDEN)
    requests = [ChatRequest(f"q{i}", [{"role": "user", "content": f"question {i}"}], {"split": "train"}) for i in range(5)]
    summary = collect(requests, teacher, tmp_path / "t.jsonl", progress=False)
    assert summary.complete and summary.done == 5
    assert len(seen) == 5 and all(m[:3] == HIDDEN and m[3]["content"].startswith("question") for m in seen)
    rows = read_rows(tmp_path / "t.jsonl")
    assert [r["messages"] for r in rows] == [r.messages for r in requests]  # only what the student will see
    assert all(r["teacher_response"] == "In short: " + r["messages"][0]["content"] and r["split"] == "train" for r in rows)
    assert "example question" not in (tmp_path / "t.jsonl").read_text()


def test_resume_with_another_hidden_context_is_refused(fake_api, tmp_path):
    api = fake_api()
    settings = GenerationSettings(model="fake-teacher", max_tokens=32)
    requests = [ChatRequest("q0", [{"role": "user", "content": "question"}])]
    first = HiddenContextBackend(OpenAIBackend(settings, api_key=API_KEY, base_url=api.url), HIDDEN)
    collect(requests, first, tmp_path / "t.jsonl", progress=False)
    other = HiddenContextBackend(OpenAIBackend(settings, api_key=API_KEY, base_url=api.url), HIDDEN[:1])
    with pytest.raises(SettingsChanged, match="t.jsonl was collected with other generation settings"):
        collect(requests + [ChatRequest("q1", [{"role": "user", "content": "more"}])], other, tmp_path / "t.jsonl",
                progress=False)
