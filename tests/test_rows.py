"""gad.rows: the one row reader and prompt-format converter behind teacher sets, prompts and eval sets."""

import json

import pytest

from gad.rows import iter_rows, messages_id, row_id, row_to_messages


class Bad(ValueError):
    pass


def test_where_labels_for_each_file_kind(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"prompt": "x"}\n\n{"prompt": "y"}\n')
    (tmp_path / "b.json").write_text(json.dumps([{"prompt": "x"}, {"prompt": "y"}], indent=2))
    (tmp_path / "c.json").write_text('{"prompt": "x"}\n{"prompt": "y"}\n')  # JSON lines under a .json name
    pq.write_table(pa.table({"prompt": ["x", "y"]}), tmp_path / "d.parquet")
    labels = {name: [where.split(":", 1)[1] for where, _, _ in iter_rows(tmp_path / name)]
              for name in ("a.jsonl", "b.json", "c.json", "d.parquet")}
    assert labels == {"a.jsonl": ["1", "3"], "b.json": ["item 1", "item 2"], "c.json": ["1", "2"],
                      "d.parquet": ["row 1", "row 2"]}


def test_bad_rows_raise_the_callers_error_or_are_yielded(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"prompt": "x"}\n[1]\n{"prompt": }\n')
    with pytest.raises(Bad, match=r"t.jsonl:2: expected a JSON object, got list"):
        list(iter_rows(p, Bad))
    rows = list(iter_rows(p, Bad, keep_going=True))
    assert rows[0][2] == {"prompt": "x"} and isinstance(rows[1][2], Bad)
    assert str(rows[2][2]).endswith("t.jsonl:3: not valid JSON (Expecting value at column 12)")
    (tmp_path / "l.json").write_text('[\n {"prompt": "x"},\n {"prompt": }\n]')
    with pytest.raises(Bad, match=r"l.json: not valid JSON \(Expecting value at line 3 column 13\)"):
        list(iter_rows(tmp_path / "l.json", Bad))
    with pytest.raises(Bad, match="no such file"):
        list(iter_rows(tmp_path / "missing.jsonl", Bad))


@pytest.mark.parametrize("row, content", [
    ({"messages": [{"role": "user", "content": "m"}]}, "m"),
    ({"content": [{"role": "user", "content": "c"}]}, "c"),
    ({"prompt": "p"}, "p"),
    ({"turns": ["first", "second"]}, "first"),
    ({"instruction": "do", "instances": [{"input": "this", "output": "o"}]}, "do\n\nthis"),
    ({"instruction": "do", "context": " "}, "do"),
    ({"instruction": "do", "input": "that"}, "do\n\nthat"),
])
def test_every_public_format_becomes_a_user_turn(row, content):
    assert row_to_messages(row, "f:1")[-1] == {"role": "user", "content": content}


@pytest.mark.parametrize("row, match", [
    ({"messages": [{"role": "user", "content": " "}]}, r"f:1: field 'messages\[0\].content': empty"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
     r"f:1: field 'messages': the last message must be the user's turn"),
    ({"turns": []}, r"f:1: field 'turns': expected a non-empty list of strings"),
    ({"instruction": "do", "input": 3}, r"f:1: field 'input': expected a string, got int"),
    ({"text": "x"}, r"f:1: field 'messages': missing .*found \['text'\]"),
])
def test_bad_prompts_name_the_field(row, match):
    with pytest.raises(Bad, match=match):
        row_to_messages(row, "f:1", Bad)


def test_messages_id_is_pinned():
    # Resuming a teacher collection matches these ids across runs: a change here orphans stored rows.
    assert messages_id([{"role": "user", "content": "hello"}]) == "hd98167dd28f22e33"


BOM = b"\xef\xbb\xbf"
LATIN1 = '{"prompt": "caf\xe9"}'.encode("latin-1")  # a Windows-1252 / Latin-1 file: 0xe9 is not UTF-8


@pytest.mark.parametrize("name, body", [
    ("a.jsonl", b'{"prompt": "x"}\r\n{"prompt": "y"}\r\n'),
    ("b.json", b'[{"prompt": "x"}, {"prompt": "y"}]'),
    ("c.json", b'{"prompt": "x"}\n{"prompt": "y"}\n'),
])
def test_a_byte_order_mark_is_read(tmp_path, name, body):
    # Spreadsheet exports and Windows editors start UTF-8 files with EF BB BF.
    (tmp_path / name).write_bytes(BOM + body)
    assert [row for _, _, row in iter_rows(tmp_path / name, Bad)] == [{"prompt": "x"}, {"prompt": "y"}]


@pytest.mark.parametrize("name, body, match", [
    ("a.jsonl", b'{"prompt": "x"}\n\n' + LATIN1 + b"\n", r"a.jsonl:3: not UTF-8 text \(byte 0xe9 at column 16\)"),
    ("b.json", b'[{"prompt": "x"},\n ' + LATIN1 + b"]", r"b.json:2: not UTF-8 text \(byte 0xe9 at column 17\)"),
    ("u.jsonl", '{"prompt": "x"}\n'.encode("utf-16"), r"u.jsonl:1: not UTF-8 text \(byte 0xff at column 1\).*UTF-16"),
    ("d.json", BOM + b'[{"prompt": "caf\xe9"}]', r"d.json:1: not UTF-8 text \(byte 0xe9 at column 17\)"),
    ("e.jsonl", BOM + LATIN1 + b"\n", r"e.jsonl:1: not UTF-8 text \(byte 0xe9 at column 16\)"),
])
def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path, name, body, match):
    (tmp_path / name).write_bytes(body)
    with pytest.raises(Bad, match=match):
        list(iter_rows(tmp_path / name, Bad))


@pytest.mark.parametrize("name", ["t.jsonl", "t.json"])  # JSON lines, also under a .json name
def test_a_line_that_is_not_utf8_is_a_bad_row_the_others_are_kept(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b'{"prompt": "x"}\n' + LATIN1 + b'\n{"prompt": "y"}\n')
    rows = [row for _, _, row in iter_rows(p, Bad, keep_going=True)]
    assert rows[0] == {"prompt": "x"} and rows[2] == {"prompt": "y"}
    assert isinstance(rows[1], Bad) and f"{name}:2: not UTF-8 text" in str(rows[1])


def test_json_lines_keep_unicode_line_separators_inside_strings(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028 as it is; it is not a line break in JSON lines.
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"prompt": "a\u2028b"}, ensure_ascii=False) + "\n{}\n", encoding="utf-8")
    assert [row for _, _, row in iter_rows(p, Bad)] == [{"prompt": "a\u2028b"}, {}]


def test_a_file_that_is_not_parquet_is_a_clear_error(tmp_path):
    p = tmp_path / "t.parquet"
    p.write_text('{"prompt": "x"}\n')
    with pytest.raises(Bad, match=r"t.parquet: not a parquet file"):
        list(iter_rows(p, Bad))


@pytest.mark.parametrize("reader", ["teacher set", "prompts", "eval set", "generations"])
@pytest.mark.parametrize("bad", [True, 1.5, [1], {"a": 1}])
def test_every_reader_checks_ids_the_same_way(tmp_path, reader, bad):
    # One id rule for every file: a string or an integer (what upstream sets use), never a bool,
    # float, list or object (whose str() would differ between writers or collide).
    from gad.data import read_teacher_set
    from gad.eval.generations import read_generations
    from gad.eval.sets import load_eval_set
    from gad.teacher.prompts import read_prompts

    row, name, read = {
        "teacher set": ({"id": bad, "prompt": "q", "teacher_response": "r"}, "id", read_teacher_set),
        "prompts": ({"id": bad, "prompt": "q"}, "id", read_prompts),
        "eval set": ({"question_id": bad, "turns": ["q"]}, "question_id", load_eval_set),
        "generations": ({"set": "s", "id": bad, "prompt": "q", "response": "r"}, "id", read_generations),
    }[reader]
    p = tmp_path / "f.jsonl"
    p.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=rf"f.jsonl:1: field '{name}': expected a string or an integer, "
                                         rf"got {type(bad).__name__}$"):
        read(p)


def test_row_id():
    assert row_id({"id": 7}, "f:1", Bad) == "7" and row_id({"id": "a"}, "f:1", Bad) == "a"
    assert row_id({}, "f:1", Bad) is None and row_id({"id": None}, "f:1", Bad) is None
    assert row_id({"question_id": 3}, "f:1", Bad, "question_id") == "3"
    with pytest.raises(Bad, match=r"f:1: field 'id': expected a string or an integer, got bool"):
        row_id({"id": False}, "f:1", Bad)
