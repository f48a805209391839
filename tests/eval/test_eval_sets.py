"""Loaders on the real public files (``<repo root>/../shared/data``) and on small malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gad.eval.sets import EvalDataError, detect_format, load_eval_set, resolve_eval_set

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def data_dir() -> Path:
    """The real public files: their licences keep them out of the repo, so these tests need them
    beside the clone (``../shared/data``). Every format is also covered, always, by
    ``test_every_public_format_in_small`` on rows written here in the same schemas."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"the public evaluation sets are not at {DATA_DIR}")
    return DATA_DIR


def test_every_public_format_in_small(tmp_path):
    fastchat = _write(tmp_path, [{"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."],
                                  "reference": ["hint"]}], "mt.jsonl")
    selfinst = _write(tmp_path, [{"id": "t0", "motivation_app": "Grammarly", "instruction": "Fix this.",
                                  "instances": [{"input": "I is here.", "output": "I am here."}]},
                                 {"id": "t1", "motivation_app": "Gmail", "instruction": "Say hi.",
                                  "instances": [{"input": "", "output": "Hi."}]}], "si.jsonl")
    dolly = _write(tmp_path, [{"instruction": "What is X?", "context": "X is a cactus.", "response": "A cactus.",
                               "category": "closed_qa"}], "dolly.jsonl")
    alpaca = tmp_path / "alpaca.json"  # AlpacaEval: a JSON list
    alpaca.write_text(json.dumps([{"instruction": "Name an actor.", "output": "Someone.", "generator": "g",
                                   "dataset": "oasst"}]))
    mt = load_eval_set(fastchat)
    assert (mt.format, mt.items[0].id, mt.items[0].prompt, mt.items[0].category) == ("fastchat", "81", "Write a poem.", "writing")
    assert mt.items[0].meta == {"n_turns": 2, "judge_reference": ["hint"]} and mt.items[0].reference is None
    si = load_eval_set(selfinst)
    assert si.format == "selfinst" and si.items[0].prompt == "Fix this.\n\nI is here." and si.items[1].prompt == "Say hi."
    assert si.items[0].reference == "I am here." and si.items[0].category == "Grammarly"
    d = load_eval_set(dolly)
    assert d.format == "dolly" and d.items[0].prompt == "What is X?\n\nX is a cactus." and d.items[0].id == "0"
    assert d.items[0].reference == "A cactus." and d.items[0].meta == {"has_context": True}
    a = load_eval_set(alpaca)
    assert a.format == "alpaca" and a.items[0].prompt == "Name an actor." and a.items[0].reference == "Someone."
    assert a.items[0].category == "oasst" and a.items[0].meta == {"generator": "g"}
    assert resolve_eval_set("mt", [tmp_path]) == fastchat  # a file stem in a data dir


def test_vicuna(data_dir):
    s = load_eval_set(data_dir / "vicuna80.jsonl")
    assert (s.name, s.format, len(s)) == ("vicuna80", "fastchat", 80)
    first = s.items[0]
    assert first.id == "1" and first.category == "generic"
    assert first.messages == [{"role": "user", "content": "How can I improve my time management skills?"}]
    assert first.reference is None
    assert all(len(it.messages) == 1 and it.prompt for it in s)


def test_mtbench_first_turns(data_dir):
    s = load_eval_set(data_dir / "mtbench80.jsonl")
    assert (s.format, len(s)) == ("fastchat", 80)
    assert all(it.meta["n_turns"] == 2 for it in s)
    assert s.items[0].id == "81" and s.items[0].prompt.startswith("Compose an engaging travel blog post")
    assert "Rewrite your previous response" not in s.items[0].prompt
    by_id = {it.id: it for it in s}
    assert by_id["101"].meta["judge_reference"][0] == "You are in second place."
    assert by_id["101"].reference is None  # judge hints are not a reference response
    assert len({it.category for it in s}) == 8


def test_selfinst_joins_instruction_and_input(data_dir):
    s = load_eval_set(data_dir / "selfinst252.jsonl")
    assert (s.format, len(s)) == ("selfinst", 252)
    first = s.items[0]
    assert first.id == "user_oriented_task_0" and first.category == "Grammarly"
    assert first.prompt.startswith("The sentence you are given might be too wordy")
    assert first.prompt.endswith(
        "\n\nIf you have any questions about my rate or if you find it necessary to "
        "increase or decrease the scope for this project, please let me know."
    )
    assert first.reference.startswith("If you have any questions about my rate or find it necessary")
    # 44 tasks have an empty input: the prompt is the instruction alone
    no_input = [it for it in s if "\n\n" not in it.prompt]
    assert len(no_input) >= 40


def test_dolly(data_dir):
    s = load_eval_set(data_dir / "dolly500.jsonl")
    assert (s.format, len(s)) == ("dolly", 500)
    assert s.items[0].id == "0" and s.items[0].prompt == "How does running improve your health?"
    assert s.items[0].reference.startswith("Running is a form of aerobic exercise.")
    assert s.items[2].prompt.startswith("What is a Ferocactus\n\nFerocactus is a genus")
    assert sum(it.meta["has_context"] for it in s) == 46  # SOURCES.md: 46 items have a short context
    assert s.items[0].category == "general_qa"


def test_alpacaeval(data_dir):
    s = load_eval_set(data_dir / "alpacaeval805.json")
    assert (s.format, len(s)) == ("alpaca", 805)
    first = s.items[0]
    assert first.prompt == "What are the names of some famous actors that started their careers on Broadway?"
    assert first.reference.startswith("Some famous actors that started their careers on Broadway")
    assert first.category == "helpful_base" and first.meta["generator"] == "text_davinci_003"
    counts = {}
    for it in s:
        counts[it.category] = counts.get(it.category, 0) + 1
    assert counts == {"selfinstruct": 252, "oasst": 188, "koala": 156, "helpful_base": 129, "vicuna": 80}


def test_resolve_short_names(data_dir):
    assert resolve_eval_set("vicuna", [data_dir]) == data_dir / "vicuna80.jsonl"
    assert resolve_eval_set("dolly500", [data_dir]) == data_dir / "dolly500.jsonl"
    with pytest.raises(FileNotFoundError, match="neither a file nor a known set"):
        resolve_eval_set("nope", [data_dir])


def _write(tmp_path: Path, rows, name="set.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_teacher_set(tmp_path):
    rows = [
        {
            "id": "t1",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
            "teacher_response": "Hello.",
            "meta": {"category": "chat", "source": "x"},
        },
        {"id": 2, "messages": [{"role": "user", "content": "2+2?"}], "teacher_response": "4"},
    ]
    s = load_eval_set(_write(tmp_path, rows, "teacher.jsonl"))
    assert s.format == "teacher" and [it.id for it in s] == ["t1", "2"]
    assert s.items[0].prompt == "Hi?" and s.items[0].reference == "Hello." and s.items[0].category == "chat"
    assert len(s.items[0].messages) == 2


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"id": "a", "messages": "hi", "teacher_response": "x"}], r"set.jsonl:1: field 'messages'"),
        (
            [
                {"id": "a", "messages": [{"role": "user", "content": "q"}], "teacher_response": "x"},
                "{not json",
            ],
            r"set.jsonl:2: not valid JSON",
        ),
        (
            [
                {
                    "id": "a",
                    "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                    "teacher_response": "x",
                }
            ],
            r"set.jsonl:1: field 'messages': the last message must be the user's",
        ),
        ([{"question_id": 1, "turns": []}], r"set.jsonl:1: field 'turns'"),
        ([{"instruction": "x", "response": 3}], r"set.jsonl:1: field 'response': expected a string"),
        (
            [{"question_id": 1, "turns": ["q"]}, {"question_id": 1, "turns": ["r"]}],
            r"set.jsonl:2: field 'id': duplicate id '1' \(first on line 1\)",
        ),
        ([{"foo": 1}], r"set.jsonl:1: cannot tell the format"),
        (
            [{"question_id": 1, "turns": ["q"]}, {"turns": ["r"]}],
            r"set.jsonl:2: field 'question_id': missing",
        ),
        (
            [{"id": "x", "instruction": "i", "instances": [{"input": 5, "output": "o"}]}],
            r"set.jsonl:1: field 'instances\[0\].input': expected a string",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, rows, message):
    with pytest.raises(EvalDataError, match=message):
        load_eval_set(_write(tmp_path, rows))


def test_json_list_errors_and_missing_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "", "output": "b"}]))
    with pytest.raises(EvalDataError, match=r"x.json:item 2: field 'instruction': empty"):
        load_eval_set(p)
    with pytest.raises(FileNotFoundError, match=r"missing.jsonl: evaluation set not found"):
        load_eval_set(tmp_path / "missing.jsonl")
    with pytest.raises(EvalDataError, match="unknown format"):
        load_eval_set(p, format="csv")


def test_detect_format():
    assert detect_format({"id": 1, "messages": [], "teacher_response": ""}) == "teacher"
    assert detect_format({"instruction": "", "output": ""}) == "alpaca"
    assert detect_format({"text": ""}) is None


def test_teacher_set_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "p1", "messages": [{"role": "user", "content": "Hi?"}], "teacher_response": "Hello."}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "teacher.parquet")
    s = load_eval_set(tmp_path / "teacher.parquet")
    assert s.format == "teacher" and s.items[0].reference == "Hello." and s.name == "teacher"


def test_a_byte_order_mark_is_read(tmp_path):
    p = tmp_path / "alpaca.json"  # AlpacaEval as a spreadsheet tool saves it
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"instruction": "Say hi.", "output": "Hi."}]).encode())
    assert [i.prompt for i in load_eval_set(p).items] == ["Say hi."]


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    p = tmp_path / "mt.jsonl"
    p.write_bytes(b'{"question_id": 1, "turns": ["a"]}\n{"question_id": 2, "turns": ["caf\xe9"]}\n')
    with pytest.raises(EvalDataError, match=r"mt.jsonl:2: not UTF-8 text \(byte 0xe9 at column 34\)"):
        load_eval_set(p)
