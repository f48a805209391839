"""The local-model backend on the session's tiny random Llama (tests/conftest.py; no downloads)."""

from __future__ import annotations

import json

import pytest

from gad.teacher import ChatRequest, GenerationSettings, LocalBackend, collect  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tiny_model):
    """The session's tiny model folder (tests/conftest.py), loaded: ``(model, tokenizer)``."""
    from gad.models import load_causal_lm

    return load_causal_lm(str(tiny_model))


def test_local_backend_writes_the_teacher_schema(tiny_model, tmp_path):
    model, tokenizer = tiny_model
    settings = GenerationSettings(model="tiny-llama", max_tokens=6)
    backend = LocalBackend(settings, model, tokenizer, batch_size=3, device="cpu")
    reqs = [ChatRequest(id=f"p{i}", messages=[{"role": "user", "content": text}])
            for i, text in enumerate(["hello how are you", "tell me a story", "what is two plus two",
                                      "the cat sat", "hello"])]
    out = tmp_path / "t.jsonl"
    summary = collect(reqs, backend, out, progress=False)
    rows = [json.loads(line) for line in open(out)]
    assert sorted(r["id"] for r in rows) == [f"p{i}" for i in range(5)]
    for r in rows:
        assert set(r) == {"id", "messages", "teacher_response", "meta"}
        meta = r["meta"]
        assert meta["backend"] == "local" and meta["model"] == "tiny-llama"
        assert meta["finish_reason"] in ("stop", "length") and 0 < meta["usage"]["completion_tokens"] <= 6
        if meta["finish_reason"] == "length":  # the budget was spent
            assert meta["usage"]["completion_tokens"] == 6
    assert summary.done == 5 and summary.tokens_out > 0
    # a rerun finds everything answered and generates nothing
    again = collect(reqs, backend, out, progress=False)
    assert again.skipped == 5 and again.done == 0


def test_ready_model_needs_its_tokenizer(tiny_model):
    with pytest.raises(ValueError, match="tokenizer"):
        LocalBackend(GenerationSettings(model="x"), tiny_model[0])


def test_cli_local_backend(tiny_model, tmp_path, monkeypatch):
    """`gad teacher --backend local --model PATH` loads through gad.models.load_causal_lm."""
    import sys
    import types

    from tests.teacher.harness import run_cli, stored_ids, write_prompts

    loaded = []
    fake = types.ModuleType("gad.models")
    fake.load_causal_lm = lambda path, dtype=None: loaded.append(path) or tiny_model
    monkeypatch.setitem(sys.modules, "gad.models", fake)
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 5)
    argv = ["--prompts", str(prompts), "--out", str(out), "--backend", "local", "--model", "some/path",
            "--max-tokens", "4", "--batch-size", "2", "--no-progress"]
    assert run_cli(argv) == 0
    assert loaded == ["some/path"] and len(stored_ids(out)) == 5
