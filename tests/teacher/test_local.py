"""The local-model backend on the session's tiny random Llama (tests/conftest.py; no downloads)."""

from __future__ import annotations

import json

import pytest
import torch

from gad.teacher import ChatRequest, GenerationSettings, LocalBackend, collect


@pytest.fixture(scope="module")
def tiny_model(tiny_model):
    """The session's tiny model folder (tests/conftest.py), loaded: ``(model, tokenizer)``."""
    from gad.models import load_causal_lm

    return load_causal_lm(str(tiny_model))


def answered(out) -> list[dict]:
    """Every answer collected into ``out``: the teacher set and its ``.dropped.jsonl`` sidecar (the
    tiny random model often says only special tokens, which decode to nothing: an empty answer is
    set aside)."""
    dropped = out.with_suffix(".dropped.jsonl")
    return [json.loads(line) for f in (out, dropped) if f.exists() for line in open(f)]


def test_local_backend_writes_the_teacher_schema(tiny_model, tmp_path):
    model, tokenizer = tiny_model
    settings = GenerationSettings(model="tiny-llama", max_tokens=6)
    backend = LocalBackend(settings, model, tokenizer, batch_size=3, device="cpu")
    reqs = [ChatRequest(id=f"p{i}", messages=[{"role": "user", "content": text}])
            for i, text in enumerate(["hello how are you", "tell me a story", "what is two plus two",
                                      "the cat sat", "hello"])]
    out = tmp_path / "t.jsonl"
    summary = collect(reqs, backend, out, progress=False)
    rows = answered(out)
    assert sorted(r["id"] for r in rows) == [f"p{i}" for i in range(5)]
    for r in rows:
        assert set(r) == {"id", "messages", "teacher_response", "meta"}
        meta = r["meta"]
        assert meta["backend"] == "local" and meta["model"] == "tiny-llama"
        assert meta["finish_reason"] in ("stop", "length") and 0 < meta["usage"]["completion_tokens"] <= 6
        if meta["finish_reason"] == "length":  # the budget was spent
            assert meta["usage"]["completion_tokens"] == 6
    assert summary.done + summary.dropped == 5 and summary.tokens_out > 0
    assert summary.dropped == summary.flagged["empty"] == sum(not r["teacher_response"] for r in rows)
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

    from tests.teacher.harness import run_cli, write_prompts

    loaded = []
    fake = types.ModuleType("gad.models")
    fake.load_causal_lm = lambda path, dtype=None: loaded.append(path) or tiny_model
    monkeypatch.setitem(sys.modules, "gad.models", fake)
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 5)
    argv = ["--prompts", str(prompts), "--out", str(out), "--backend", "local", "--model", "some/path",
            "--max-tokens", "4", "--batch-size", "2", "--no-progress"]
    assert run_cli(argv) == 0
    assert loaded == ["some/path"] and len(answered(out)) == 5


def argmax_decode(model, tokenizer, messages, max_new_tokens: int) -> list[int]:
    """Plain greedy decoding, one token at a time, no generation config at all."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(nxt)
            if nxt == tokenizer.eos_token_id:
                break
    return new


def test_checkpoint_sampling_defaults_do_not_leak_into_greedy_output(tiny_model, tmp_path):
    """A checkpoint whose generation_config.json asks for sampling, top-k and a repetition penalty
    (Qwen2.5 ships top_k=20, repetition_penalty=1.05) must not change what the teacher generates:
    greedy is greedy, token for token the argmax of the model's own logits."""
    model, tokenizer = tiny_model
    folder = tmp_path / "teacher-model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    gen_cfg = json.loads((folder / "generation_config.json").read_text())
    gen_cfg.update(do_sample=True, temperature=0.7, top_k=3, top_p=0.5, repetition_penalty=5.0)
    (folder / "generation_config.json").write_text(json.dumps(gen_cfg))

    backend = LocalBackend(GenerationSettings(model="tiny", max_tokens=8), str(folder), batch_size=1, device="cpu")
    assert backend.model.generation_config.repetition_penalty == 5.0  # the checkpoint's defaults are there ...
    reqs = [ChatRequest(id=f"p{i}", messages=[{"role": "user", "content": text}])
            for i, text in enumerate(["hello how are you", "the cat sat"])]
    out = collect(reqs, backend, tmp_path / "t.jsonl", progress=False)
    assert out.done + out.dropped == 2
    rows = {r["id"]: r for r in answered(tmp_path / "t.jsonl")}
    for r in reqs:
        expected = argmax_decode(backend.model, backend.tokenizer, r.messages, 8)
        finished = expected[-1] == tokenizer.eos_token_id
        text = tokenizer.decode(expected[:-1] if finished else expected, skip_special_tokens=True)
        # ... and do not reach the output
        assert rows[r.id]["teacher_response"] == text
        assert rows[r.id]["meta"]["finish_reason"] == ("stop" if finished else "length")
        assert rows[r.id]["meta"]["usage"]["completion_tokens"] == len(expected) - finished


def test_prompt_too_long_for_the_local_model_is_set_aside(tiny_model, tmp_path):
    """As an API server does: a prompt that with its token budget exceeds the model's context is
    refused with the reason, the rest of its batch is answered, and a rerun does not ask again."""
    model, tokenizer = tiny_model
    context = model.config.max_position_embeddings
    backend = LocalBackend(GenerationSettings(model="tiny", max_tokens=4), model, tokenizer, batch_size=3, device="cpu")
    reqs = [ChatRequest(id=f"p{i}", messages=[{"role": "user", "content": text}])
            for i, text in enumerate(["hello how are you", "the cat sat " * (context // 3), "what is two plus two"])]
    out = tmp_path / "t.jsonl"
    summary = collect(reqs, backend, out, progress=False)
    assert (summary.done + summary.dropped, summary.rejected, summary.stopped) == (2, 1, None)
    assert sorted(r["id"] for r in answered(out)) == ["p0", "p2"]
    [row] = [json.loads(line) for line in open(tmp_path / "t.rejected.jsonl")]
    assert row["id"] == "p1" and f"maximum context length is {context} tokens" in row["reason"]
    assert collect(reqs, backend, out, progress=False).skipped == 3


def test_adjacent_prompts_too_long_for_the_local_model_do_not_stop_the_run(tiny_model, tmp_path):
    """Three long prompts in a row, with the backend's default token budget (no max_tokens set): each
    is too long by itself (its refusal says so, as vLLM's does), so each is set aside and the run goes on."""
    from gad.teacher.api import prompt_too_long

    model, tokenizer = tiny_model
    context = model.config.max_position_embeddings
    backend = LocalBackend(GenerationSettings(model="tiny"), model, tokenizer, batch_size=1, device="cpu")
    backend.max_new_tokens = backend.rollout.max_new_tokens = 4  # a budget well inside the context
    texts = ["hello"] + ["the cat sat " * (context // 3)] * 3 + ["what is two plus two"]
    reqs = [ChatRequest(id=f"p{i}", messages=[{"role": "user", "content": t + f" {i}"}]) for i, t in enumerate(texts)]
    summary = collect(reqs, backend, tmp_path / "t.jsonl", progress=False)
    assert (summary.done + summary.dropped, summary.rejected, summary.stopped) == (2, 3, None)
    assert all(prompt_too_long(reason, None) for reason in summary.rejections.values())
