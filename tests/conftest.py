"""Shared fixtures: a tiny random Llama-style model and tokenizer made locally (no hub), and teacher sets."""

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
SPECIAL = ["<pad>", "<eos>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def make_tiny_model(out: Path, seed: int = 0, layers: int = 2) -> Path:
    """Save a tiny LlamaForCausalLM + WordLevel tokenizer to ``out`` (an HF folder)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=SPECIAL[3:],
    )
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


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
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


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
