"""A teacher's thinking (``reasoning_content``, ``reasoning``, inline ``<think>``) is kept in
``meta.reasoning``, out of the response the student learns and D compares, unless
``--keep-reasoning`` asks for it; a reply cut while thinking is empty."""

from __future__ import annotations

import json

import pytest

from gad.data import read_teacher_set
from gad.teacher import ChatResponse, collect
from gad.teacher.backend import separate_reasoning, split_reasoning
from tests.teacher.harness import run_cli, stored_ids, teacher_argv, write_prompts
from tests.teacher.test_api import backend, requests, rows


@pytest.mark.parametrize(("text", "answer", "reasoning"), [
    ("plain answer", "plain answer", None),
    ("<think>\nstep one\nstep two\n</think>\n\nThe answer.\n", "The answer.\n", "step one\nstep two"),
    ("  <think>x</think>y", "y", "x"),
    ("<think>\n\n</think>\n\nNo thinking today.", "No thinking today.", None),  # Qwen3 thinking off
    ("<think>\nstill thinking when the budget ran o", "", "still thinking when the budget ran o"),
    ("R1 opened the block in its prompt\n</think>\n\nanswer", "answer", "R1 opened the block in its prompt"),
    ("an answer that mentions <think> and </think> tags", "an answer that mentions <think> and </think> tags", None),
])
def test_split_reasoning(text, answer, reasoning):
    assert split_reasoning(text) == (answer, reasoning)


def test_separate_reasoning_joins_returned_and_inline_thinking():
    r = separate_reasoning(ChatResponse("a", content="<think>inline</think>\nanswer", reasoning="returned"))
    assert (r.content, r.reasoning) == ("answer", "returned\n\ninline")
    assert separate_reasoning(ChatResponse("a", content=None, refusal="no")).content is None
    cut = separate_reasoning(ChatResponse("a", content="<think>long", finish_reason="length"))
    assert (cut.content, cut.reasoning, cut.flag) == ("", "long", "empty")  # no answer: nothing to learn


def thinking_inline(body: dict) -> str:
    key = body["messages"][-1]["content"]
    return f"<think>\nthinking about {key}\n</think>\n\nanswer: {key}"


@pytest.mark.parametrize("served", ["reasoning_content", "reasoning", "inline"])
def test_reasoning_goes_to_meta_and_the_set_reads(served, fake_api, tmp_path):
    api = fake_api(reasoning_field=None if served == "inline" else served,
                   reply=thinking_inline if served == "inline" else None)
    out = tmp_path / "t.jsonl"
    s = collect(requests(3), backend(api), out, progress=False)
    assert (s.done, s.reasoning) == (3, 3) and "with reasoning 3" in s.format()
    for r in rows(out):
        key = f"prompt {int(r['id'][1:])}"
        assert r["teacher_response"] == f"answer: {key}"
        assert r["meta"]["reasoning"] == f"thinking about {key}" and r["meta"]["flag"] is None
    teacher_rows, _ = read_teacher_set(out)  # meta.reasoning is no part of training
    assert sorted(t.teacher_response for t in teacher_rows) == [f"answer: prompt {i}" for i in range(3)]


def test_cut_while_thinking_is_empty_and_set_aside(fake_api, tmp_path):
    def long_thought(body: dict) -> str:
        return "<think>\n" + "hmm " * 40 + "\n</think>\n\nanswer"

    api = fake_api(reply=long_thought, script={"prompt 0": ["length"]})  # cut to half: inside the block
    out = tmp_path / "t.jsonl"
    s = collect(requests(2), backend(api), out, progress=False)
    assert (s.done, s.dropped, s.flagged["empty"], s.flagged["truncated"]) == (1, 1, 1, 0)
    [dropped] = rows(tmp_path / "t.dropped.jsonl")
    assert dropped["teacher_response"] == "" and dropped["meta"]["reasoning"].startswith("hmm hmm")
    assert dropped["meta"]["finish_reason"] == "length" and stored_ids(out) == ["p00001"]


def test_keep_reasoning_keeps_it_in_the_response_and_is_part_of_the_settings(fake_api, tmp_path, capsys):
    api = fake_api(reasoning_field="reasoning_content")
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 2)
    assert run_cli(teacher_argv(api, prompts, out, "--keep-reasoning")) == 0
    for r in rows(out):
        key = f"prompt {int(r['id'][1:])}"
        assert r["teacher_response"] == f"<think>\nthinking about {key}\n</think>\n\nanswer: {key}"
        assert "reasoning" not in r["meta"]
    write_prompts(prompts, 3)  # one more prompt, asked without --keep-reasoning: refused, nothing sent
    assert run_cli(teacher_argv(api, prompts, out)) == 2
    assert "other generation settings" in capsys.readouterr().err and len(api.hits) == 2
    assert run_cli(teacher_argv(api, prompts, out, "--keep-reasoning")) == 0 and len(api.hits) == 3
    summary = json.loads((tmp_path / "t.summary.json").read_text())
    assert summary["reasoning"] == 1
