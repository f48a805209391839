"""Prompt readers: every accepted format, stable ids, and errors that name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gad.teacher.prompts import PromptFormatError, read_prompts

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data beside the repo


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_messages_and_prompt_rows(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [
        {"id": 7, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {"prompt": "hello"},
        {"prompt": [{"role": "user", "content": "as a list"}]},
        {"content": [{"role": "user", "content": "the paper's release format"}]},
    ])
    ps = read_prompts(p)
    assert [r.id for r in ps.requests][0] == "7"
    assert ps.requests[1].messages == [{"role": "user", "content": "hello"}]
    assert ps.requests[1].id.startswith("h") and ps.requests[1].id == read_prompts(p).requests[1].id
    assert ps.requests[3].messages[0]["content"] == "the paper's release format"


def test_system_prompt_and_duplicates(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "same"}, {"prompt": "same"}, {"prompt": "other"}])
    ps = read_prompts(p, system="You are helpful.")
    assert (ps.rows, ps.duplicates, len(ps.requests)) == (3, 1, 2)
    assert ps.requests[0].messages[0] == {"role": "system", "content": "You are helpful."}
    assert ps.requests[0].id != read_prompts(p).requests[0].id  # the system prompt is part of the ask


@pytest.mark.parametrize("rows, match", [
    ([{"prompt": "ok"}, {"messages": [{"role": "bot", "content": "x"}]}], r"p.jsonl:2: field 'messages\[0\].role'"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
     r"p.jsonl:1: field 'messages': the last message must be the user's"),
    ([{"prompt": 3}], r"p.jsonl:1: field 'prompt': expected a string"),
    ([{"text": "x"}], r"p.jsonl:1: field 'messages': missing"),
    ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], r"p.jsonl:2: field 'id': 'a' was already used by .*p.jsonl:1"),
    ([{"instruction": "do", "instances": []}], r"p.jsonl:1: field 'instances'"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, rows, match):
    with pytest.raises(PromptFormatError, match=match):
        read_prompts(write_jsonl(tmp_path / "p.jsonl", rows))


def test_invalid_json_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(PromptFormatError, match=r"p.jsonl:2: not valid JSON"):
        read_prompts(p)


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a", "b"]}), tmp_path / "p.parquet")
    assert [r.messages[0]["content"] for r in read_prompts(tmp_path / "p.parquet").requests] == ["a", "b"]
    pq.write_table(pa.table({"prompt": ["a", ""]}), tmp_path / "bad.parquet")
    with pytest.raises(PromptFormatError, match=r"bad.parquet:row 2: field 'prompt': empty"):
        read_prompts(tmp_path / "bad.parquet")


def test_public_formats_in_small(tmp_path):
    """The public sets' schemas, always (the real files below need ../shared/data beside the clone)."""
    p = write_jsonl(tmp_path / "p.jsonl", [
        {"question_id": 81, "turns": ["first turn", "second turn"]},
        {"id": "si0", "instruction": "Fix this.", "instances": [{"input": "I is here.", "output": "x"}]},
        {"instruction": "What is X?", "context": "X is a cactus.", "response": "A cactus."},
        {"instruction": "Name an actor.", "output": "Someone."},
    ])
    asked = [(r.id, r.messages) for r in read_prompts(p).requests]
    assert asked[0] == ("81", [{"role": "user", "content": "first turn"}])
    assert asked[1] == ("si0", [{"role": "user", "content": "Fix this.\n\nI is here."}])
    assert asked[2][1] == [{"role": "user", "content": "What is X?\n\nX is a cactus."}]
    assert asked[3][1] == [{"role": "user", "content": "Name an actor."}]


@pytest.mark.skipif(not DATA.exists(), reason=f"the public evaluation sets are not at {DATA} (licences keep them out of the repo)")
def test_public_eval_formats():
    vicuna = read_prompts(DATA / "vicuna80.jsonl")
    assert len(vicuna.requests) == 80 and vicuna.requests[0].id == "1"
    mt = read_prompts(DATA / "mtbench80.jsonl")  # two turns: the first is asked
    assert mt.requests[0].messages[0]["content"].startswith("Compose an engaging travel blog")

    si = read_prompts(DATA / "selfinst252.jsonl")
    assert len(si.requests) == 252 and si.requests[0].id == "user_oriented_task_0"
    assert si.requests[0].messages[0]["content"].endswith("please let me know.")  # instance input appended

    dolly = read_prompts(DATA / "dolly500.jsonl")
    assert len(dolly.requests) + dolly.duplicates == 500
    with_ctx = next(r for r in dolly.requests if "Ferocactus is a genus" in r.messages[0]["content"])
    assert with_ctx.messages[0]["content"].startswith("What is a Ferocactus\n\n")

    alpaca = read_prompts(DATA / "alpacaeval805.json")  # a JSON list with `instruction`
    assert len(alpaca.requests) + alpaca.duplicates == 805


def test_a_byte_order_mark_is_read(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"id": "a", "prompt": "hi"}\n')
    assert [r.id for r in read_prompts(p).requests] == ["a"]


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b'{"prompt": "hi"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(PromptFormatError, match=r"p.jsonl:2: not UTF-8 text \(byte 0xe9 at column 16\)"):
        read_prompts(p)
