"""Shared by the tests and benchmarks/teacher_acceptance.py: run ``gad teacher`` against the fake
API, SIGKILL it midway, resume, and account for every request the server saw."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.teacher.fake_api import FakeChatAPI

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-gadtest-7f3a9c1e5b2d4f6a8c0e"


def write_prompts(path: Path, n: int) -> list[str]:
    """``n`` prompts with explicit ids; the prompt text doubles as the fake server's key."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i:05d}", "prompt": f"prompt {i}"}) + "\n")
    return [f"p{i:05d}" for i in range(n)]


def teacher_argv(api: FakeChatAPI, prompts: Path, out: Path, *extra: str) -> list[str]:
    return ["--prompts", str(prompts), "--out", str(out), "--model", "fake-teacher",
            "--base-url", api.url, "--timeout", "0.5", "--backoff-base", "0.05",
            "--no-progress", *extra]


def subprocess_cmd(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "gad.cli", "teacher", *argv]


def env() -> dict[str, str]:
    return dict(os.environ, OPENAI_API_KEY=API_KEY, PYTHONPATH=str(REPO))


def stored_ids(path: Path) -> list[str]:
    """Ids of the complete lines in a JSONL file (a torn last line is ignored, as the store does)."""
    if not path.exists():
        return []
    ids = []
    for line in path.read_bytes().split(b"\n"):
        try:
            ids.append(json.loads(line)["id"])
        except (ValueError, KeyError):
            continue
    return ids


@dataclass
class KillResumeResult:
    n: int
    killed_at_rows: int
    requests_before_kill: int
    repeated_after_resume: int
    """Requests the server received after the resume began for ids already stored at the kill."""
    final_ids: list[str]
    total_requests: int
    resume_rc: int
    elapsed_s: float

    @property
    def exactly_once(self) -> bool:
        return len(self.final_ids) == self.n == len(set(self.final_ids))


def kill_and_resume(api: FakeChatAPI, tmp: Path, n: int, kill_after_rows: int,
                    concurrency: int = 16, resume_in_process: bool = True) -> KillResumeResult:
    t0 = time.monotonic()
    prompts, out = tmp / "prompts.jsonl", tmp / "teacher.jsonl"
    write_prompts(prompts, n)
    argv = teacher_argv(api, prompts, out, "--concurrency", str(concurrency))
    proc = subprocess.Popen(subprocess_cmd(argv), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while len(stored_ids(out)) < kill_after_rows:
            if proc.poll() is not None:
                raise RuntimeError(f"teacher exited before the kill: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    finished = set(stored_ids(out)) | set(stored_ids(out.with_name("teacher.dropped.jsonl")))
    mark = len(api.hits)

    if resume_in_process:
        rc = run_cli(argv)
    else:
        rc = subprocess.run(subprocess_cmd(argv), env=env(), capture_output=True).returncode
    repeated = sum(key_to_id(k) in finished for k in api.keys_since(mark))
    final_ids = stored_ids(out) + stored_ids(out.with_name("teacher.dropped.jsonl"))  # empty answers
    return KillResumeResult(n=n, killed_at_rows=len(finished), requests_before_kill=mark,
                            repeated_after_resume=repeated, final_ids=final_ids,
                            total_requests=len(api.hits), resume_rc=rc,
                            elapsed_s=time.monotonic() - t0)


def key_to_id(key: str) -> str:
    return f"p{int(key.split()[-1]):05d}"


def run_cli(argv: list[str]) -> int:
    """``gad teacher ARGV`` in this process, with the test key in the environment."""
    from gad.cli import main

    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = API_KEY
    try:
        return main(["teacher", *argv])
    finally:
        if old is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = old
