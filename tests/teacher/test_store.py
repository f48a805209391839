"""The append-only store: resume state, torn-line repair, no duplicates, one writer."""

from __future__ import annotations

import json

import pytest

from gad.teacher.store import JsonlFile, ResponseStore, StoreError, sidecar


def row(i: int) -> dict:
    return {"id": f"p{i}", "messages": [{"role": "user", "content": f"q{i}"}], "teacher_response": f"a{i}",
            "meta": {"settings": "abc"}}


def test_append_and_reopen(tmp_path):
    path = tmp_path / "t.jsonl"
    with ResponseStore(path) as store:
        for i in range(3):
            store.append(row(i))
    with ResponseStore(path) as store:
        assert store.done_ids == {"p0", "p1", "p2"}
        assert store.fingerprints == {"abc"}
        with pytest.raises(StoreError, match="duplicate"):
            store.append(row(1))
    assert len(path.read_text().splitlines()) == 3


def test_torn_last_line_is_cut_and_counted(tmp_path):
    path = tmp_path / "t.jsonl"
    good = "".join(json.dumps(row(i)) + "\n" for i in range(2))
    path.write_text(good + json.dumps(row(2))[:25])  # killed halfway through the third line
    with ResponseStore(path) as store:
        assert store.done_ids == {"p0", "p1"} and store.repaired_bytes == 25
        store.append(row(2))
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["p0", "p1", "p2"]


def test_complete_last_row_without_newline_is_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row(0)) + "\n" + json.dumps(row(1)))
    with ResponseStore(path) as store:
        assert store.done_ids == {"p0", "p1"}
        store.append(row(2))
    assert len(path.read_text().splitlines()) == 3


def test_garbage_in_the_middle_names_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row(0)) + "\n{not json\n" + json.dumps(row(1)) + "\n")
    with pytest.raises(StoreError, match=r"t.jsonl:2"):
        ResponseStore(path).open()


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    with ResponseStore(path):
        with pytest.raises(StoreError, match="another process"):
            ResponseStore(path).open()


def test_dry_scan_does_not_repair(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row(0)) + "\n" + '{"id": "p1", "mess')
    store = ResponseStore(path).scan()
    assert store.done_ids == {"p0"}
    assert path.read_text().endswith('"mess')


def test_failed_write_leaves_no_half_line(tmp_path, monkeypatch):
    path = tmp_path / "t.jsonl"
    f = JsonlFile(path)
    f.open()
    f.append(row(0))
    import os

    real_write = os.write

    def short_write(fd, data):  # a full disk: only part of the line gets written
        return real_write(fd, data[:10])

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(StoreError, match="short write"):
        f.append(row(1))
    monkeypatch.undo()
    f.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["p0"]


def test_sidecar_names(tmp_path):
    assert sidecar(tmp_path / "teacher.jsonl", ".summary.json").name == "teacher.summary.json"
    assert sidecar(tmp_path / "teacher", ".dropped.jsonl").name == "teacher.dropped.jsonl"


def test_rejected_log_is_done_unless_retried_and_an_answer_wins(tmp_path):
    path = tmp_path / "t.jsonl"
    refused = {"id": "p1", "messages": [{"role": "user", "content": "q1"}], "reason": "too long", "meta": {}}
    with ResponseStore(path) as store:
        store.append(row(0))
        store.reject(refused)
    with ResponseStore(path) as store:
        assert store.done_ids == {"p0", "p1"} and store.rejected_ids == {"p1"}
    with ResponseStore(path, retry_rejected=True) as store:
        assert store.done_ids == {"p0"}
        store.reject(refused)  # refused again: logged again
        store.append(row(1))  # answered at last
        with pytest.raises(StoreError, match="already answered"):
            store.reject(refused)
    assert len(sidecar(path, ".rejected.jsonl").read_text().splitlines()) == 2
    with ResponseStore(path, retry_rejected=True) as store:
        assert store.done_ids == {"p0", "p1"} and store.rejected_ids == set()
