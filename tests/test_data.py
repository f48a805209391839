"""Teacher-set reading: the three formats, the promised errors, length limits, batch order."""

import json

import pytest

from gad.data import (
    TeacherSetError,
    batch_indices,
    encode_response,
    encode_teacher_set,
    read_teacher_set,
)
from gad.models import load_tokenizer


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"id": "a", "messages": [{"role": "user", "content": "hi"}], "teacher_response": "hello"}


def test_three_formats(tmp_path):
    p = write_rows(tmp_path / "t.jsonl", [
        GOOD,
        {"prompt": "what is red", "teacher_response": "a colour"},
        {"content": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "x"}], "teacher_response": "y"},
    ])
    rows, stats = read_teacher_set(p)
    assert [r.messages[-1]["content"] for r in rows] == ["hi", "what is red", "x"]
    assert rows[1].id and rows[1].id != rows[2].id  # ids derived from the messages when absent
    assert stats.rows == 3 and stats.bad_rows == 0


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD, {**GOOD, "id": "b"}]), p)
    rows, _ = read_teacher_set(p)
    assert [r.id for r in rows] == ["a", "b"]


@pytest.mark.parametrize("bad,message", [
    ('{"id": "x", "messages": [', r"t.jsonl:2: not valid JSON"),
    ({"id": "x", "messages": [{"role": "user", "content": "q"}]}, r"t.jsonl:2: field 'teacher_response': missing"),
    ({"id": "x", "messages": [{"role": "user", "content": "q"}], "teacher_response": "  "}, r"t.jsonl:2: field 'teacher_response': empty"),
    ({"id": "x", "messages": [{"role": "user", "content": "q"}], "teacher_response": 3}, r"t.jsonl:2: field 'teacher_response': must be a string, got int"),
    ({"id": "x", "messages": [{"role": "user"}], "teacher_response": "r"}, r"t.jsonl:2: field 'messages\[0\].content': must be a string"),
    ({"id": "x", "messages": [], "teacher_response": "r"}, r"t.jsonl:2: field 'messages': must be a non-empty list"),
    ({"id": "a", "messages": [{"role": "user", "content": "q"}], "teacher_response": "r"}, r"t.jsonl:2: field 'id': duplicate id 'a'"),
    ({"teacher_response": "r"}, r"t.jsonl:2: field 'messages': missing"),
])
def test_malformed_rows_name_file_line_field(tmp_path, bad, message):
    p = write_rows(tmp_path / "t.jsonl", [GOOD, bad, {**GOOD, "id": "c"}])
    with pytest.raises(TeacherSetError, match=message):
        read_teacher_set(p)
    rows, stats = read_teacher_set(p, skip_bad_rows=True)
    assert [r.id for r in rows] == ["a", "c"] and stats.bad_rows == 1


def test_lengths_enforced_and_counted(tiny_model, tmp_path):
    tok = load_tokenizer(str(tiny_model))
    long_prompt = " ".join(["cat"] * 50)
    p = write_rows(tmp_path / "t.jsonl", [
        {"id": "short", "prompt": "what is a cat", "teacher_response": "a cat is a small animal"},
        {"id": "long-prompt", "prompt": long_prompt, "teacher_response": "yes"},
        {"id": "long-answer", "prompt": "dog", "teacher_response": " ".join(["dog"] * 30)},
    ])
    rows, stats = read_teacher_set(p)
    examples, stats = encode_teacher_set(rows, tok, tok.eos_token_id, max_prompt_length=20, max_response_length=10, stats=stats)
    assert [e.id for e in examples] == ["short", "long-answer"]
    assert stats.dropped_long_prompts == 1 and stats.truncated_responses == 1
    short, cut = examples
    assert short.response_ids[-1] == tok.eos_token_id and not short.truncated  # ends like a student sample
    assert len(cut.response_ids) == 10 and cut.response_ids[-1] != tok.eos_token_id and cut.truncated
    assert "1 dropped" in stats.summary() and "1 teacher responses truncated" in stats.summary()


@pytest.mark.parametrize("side", ["left", "right"])
def test_long_prompts_truncated_on_the_chosen_side(tiny_model, tmp_path, side):
    """``data.long_prompts``: ``left`` keeps the end of the templated prompt (the assistant header the
    student answers after), ``right`` its beginning (verl's ``truncation=right``); both are counted."""
    from gad.data import template_prompt

    tok = load_tokenizer(str(tiny_model))
    p = write_rows(tmp_path / "t.jsonl", [
        {"id": "short", "prompt": "what is a cat", "teacher_response": "a cat"},
        {"id": "long-prompt", "prompt": " ".join(["cat"] * 50), "teacher_response": "yes"},
    ])
    rows, stats = read_teacher_set(p)
    full = template_prompt(tok, rows[1].messages)
    examples, stats = encode_teacher_set(rows, tok, tok.eos_token_id, 20, 10, stats, long_prompts=side)
    assert [e.id for e in examples] == ["short", "long-prompt"] and len(full) > 20
    assert examples[1].prompt_ids == (full[-20:] if side == "left" else full[:20])
    assert examples[0].prompt_ids == template_prompt(tok, rows[0].messages)  # a prompt that fits is untouched
    assert stats.truncated_prompts == 1 and stats.dropped_long_prompts == 0
    assert "1 prompts truncated" in stats.summary()


def test_encode_response_appends_eos(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    ids, truncated = encode_response(tok, "yes good", tok.eos_token_id, 100)
    assert ids == tok("yes good", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] and not truncated


def test_batch_order_is_a_function_of_the_step():
    n, b = 10, 4
    stream = [i for s in range(5) for i in batch_indices(s, b, n, seed=1)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))  # whole epochs
    assert batch_indices(3, b, n, seed=1) == stream[12:16]  # same batch whenever asked
    assert batch_indices(0, b, n, seed=2) != batch_indices(0, b, n, seed=1)


def test_a_byte_order_mark_is_read(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n").encode())
    rows, _ = read_teacher_set(p)
    assert [r.id for r in rows] == ["a"]


def test_bytes_that_are_not_utf8_are_a_bad_row(tmp_path):
    p = tmp_path / "t.jsonl"
    latin1 = json.dumps({**GOOD, "id": "b", "teacher_response": "caf\xe9"}, ensure_ascii=False).encode("latin-1")
    p.write_bytes((json.dumps(GOOD) + "\n").encode() + latin1 + b"\n" + (json.dumps({**GOOD, "id": "c"}) + "\n").encode())
    with pytest.raises(TeacherSetError, match=r"t.jsonl:2: not UTF-8 text \(byte 0xe9 at column \d+\)"):
        read_teacher_set(p)
    rows, stats = read_teacher_set(p, skip_bad_rows=True)
    assert [r.id for r in rows] == ["a", "c"] and stats.bad_rows == 1


def test_a_save_to_disk_dataset_trains_like_the_same_jsonl(tiny_model, teacher_set, tmp_path):
    """A folder written by ``datasets``' ``save_to_disk`` is a teacher set (and an eval set) like the
    JSONL it was made from: the same rows, a 2-step SeqKD run to the same weights; a bad row is named
    by its folder and row; a dict of splits asks for one."""
    import datasets
    import torch

    from gad import stages
    from gad.eval.sets import load_eval_set
    from tests.test_trainer import cfg_for, weights

    raw = [json.loads(line) for line in teacher_set.open()]
    datasets.Dataset.from_list(raw).save_to_disk(str(tmp_path / "ds"))
    assert read_teacher_set(tmp_path / "ds")[0] == read_teacher_set(teacher_set)[0]
    assert [i.id for i in load_eval_set(tmp_path / "ds").items] == [r["id"] for r in raw]
    runs = [stages.seqkd(cfg_for("seqkd", tiny_model, data, tmp_path / name))
            for name, data in (("from-jsonl", teacher_set), ("from-dataset", tmp_path / "ds"))]
    a, b = (weights(r.checkpoint / "generator") for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)

    bad = [dict(r) for r in raw]
    bad[2]["teacher_response"] = None  # arrow columns hold one type: a missing value
    datasets.Dataset.from_list(bad).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(TeacherSetError, match=rf"{tmp_path / 'bad'}:row 3: field 'teacher_response'"):
        read_teacher_set(tmp_path / "bad")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(raw[:8]), "test": datasets.Dataset.from_list(raw[8:])}
                         ).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(TeacherSetError, match="holds the splits train, test; name one"):
        read_teacher_set(tmp_path / "dict")
    assert len(read_teacher_set(tmp_path / "dict" / "test")[0]) == 8


def test_a_hub_dataset_id_offline_is_one_clear_error(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    from gad.rows import is_hub_dataset

    for module in (huggingface_hub.constants, datasets.config):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_hub_dataset("someone/teacher-set:train") and not is_hub_dataset("runs/teacher.jsonl")
    with pytest.raises(TeacherSetError, match="nobody-xyz/no-such-set: cannot read it as a Hugging Face dataset"):
        read_teacher_set("nobody-xyz/no-such-set")
