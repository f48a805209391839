"""``gad teacher`` end to end: kill -9 and resume under faults, dry run, key handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.teacher.fake_api import ALL_FAULTS
from tests.teacher.harness import (
    API_KEY,
    REPO,
    kill_and_resume,
    run_cli,
    stored_ids,
    teacher_argv,
    write_prompts,
)


def test_sigkill_midway_then_resume_exactly_once(fake_api, tmp_path):
    api = fake_api(fault_rate=0.15, latency=0.01)
    result = kill_and_resume(api, tmp_path, n=400, kill_after_rows=150, concurrency=16)
    assert result.resume_rc == 0
    assert result.exactly_once, (len(result.final_ids), len(set(result.final_ids)))
    assert 150 <= result.killed_at_rows < 400
    assert result.repeated_after_resume == 0
    # every row answers its own prompt
    for line in open(tmp_path / "teacher.jsonl"):
        r = json.loads(line)
        assert f"answer: prompt {int(r['id'][1:])}".startswith(r["teacher_response"])
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def test_dry_run_sends_nothing(fake_api, tmp_path, capsys):
    api = fake_api()
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 10)
    assert run_cli(teacher_argv(api, prompts, out, "--limit", "4")) == 0
    assert run_cli(teacher_argv(api, prompts, out, "--dry-run", "--max-tokens", "100")) == 0
    text = capsys.readouterr().out
    assert "4 already answered" in text and "would send 6 requests" in text and "600 output tokens" in text
    assert len(api.hits) == 4 and len(stored_ids(out)) == 4


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from gad.cli import main

    prompts = tmp_path / "p.jsonl"
    write_prompts(prompts, 2)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    assert main(["teacher", "--prompts", str(prompts), "--out", str(tmp_path / "t.jsonl"),
                 "--model", "m", "--api-key-env", "NO_SUCH_KEY_VAR"]) == 2
    assert "NO_SUCH_KEY_VAR is not set" in capsys.readouterr().err


def test_registered_and_cheap_to_import():
    help_text = subprocess.run([sys.executable, "-m", "gad.cli", "teacher", "--help"], capture_output=True,
                               text=True, check=True, cwd=REPO).stdout
    assert "--prompts" in help_text and "--backend" in help_text  # `gad teacher` is a command
    code = ("import sys, gad.commands.teacher, gad.teacher; "
            "assert 'torch' not in sys.modules and 'openai' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
def test_acceptance_2000_prompts_15pct_faults_one_sigkill(fake_api, tmp_path):
    """Issue 3 acceptance (also benchmarks/teacher_acceptance.py, which prints the numbers)."""
    api = fake_api(fault_rate=0.15, latency=0.02, retry_after="0.2")
    r = kill_and_resume(api, tmp_path, n=2000, kill_after_rows=1000, concurrency=32, resume_in_process=False)
    assert r.resume_rc == 0 and r.exactly_once and r.repeated_after_resume == 0
    assert 1000 <= r.killed_at_rows < 2000
    faults = {h.fault for h in api.hits if h.fault}
    assert faults == set(ALL_FAULTS)  # every kind really happened


def test_changed_system_prompt_refuses_to_resume(fake_api, tmp_path, capsys):
    api = fake_api()
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 3)
    assert run_cli(teacher_argv(api, prompts, out, "--system", "Be brief.")) == 0
    assert run_cli(teacher_argv(api, prompts, out, "--system", "Be verbose.")) == 2
    assert "other generation settings" in capsys.readouterr().err
    assert len(api.hits) == 3 and sorted(stored_ids(out)) == ["p00000", "p00001", "p00002"]
