"""Shared fixtures: a tiny random Llama and its tokenizer made locally (no hub; gad.models.make_tiny_llama),
and teacher sets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.no_skip import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401 (hooks)

WORDS = (
    "the a an is are was be to of and in on for with what how why who when where which can do does "
    "you i we it this that cat dog sun moon water fire tree river city book music red blue green "
    "big small fast slow good bad yes no one two three four five explain describe list write name "
    "tell me about short story poem answer question please because so very more less day night"
).split()


def make_teacher_set(path: Path, rows: int = 16, seed: int = 0) -> Path:
    """A teacher set whose teacher always answers in one recognisable style."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(rows):
            q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            a = "yes " + " ".join(rng.choice(WORDS[:20]) for _ in range(rng.randint(2, 6))) + " good"
            f.write(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": q}], "teacher_response": a}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama over ``WORDS`` with a chat template (system, user, assistant), as an HF folder."""
    from gad.models import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", WORDS)


@pytest.fixture
def teacher_set(tmp_path: Path) -> Path:
    return make_teacher_set(tmp_path / "teacher.jsonl")


@pytest.fixture
def fake_api():
    """A loopback chat-completions server (tests/teacher/fake_api.py). Factory: ``fake_api(fault_rate=...,
    script=...)`` starts one, stopped after the test."""
    from tests.teacher.fake_api import FakeChatAPI
    from tests.teacher.harness import API_KEY

    servers: list[FakeChatAPI] = []

    def start(**kwargs) -> FakeChatAPI:
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("retry_after", "0.05")
        kwargs.setdefault("hang_s", 5.0)
        server = FakeChatAPI(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _secrets_forgotten_after_each_test():
    """Secrets a test registers (gad.secrets is process-wide) do not leak into the next test."""
    from gad import secrets

    before = set(secrets._SECRETS)
    yield
    secrets._SECRETS.clear()
    secrets._SECRETS.update(before)
