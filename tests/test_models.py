"""The discriminator reads the response's final token, survives a save/load, and packing is exact."""

import torch

from gad.batch import pack
from gad.models import Discriminator, load_causal_lm, load_tokenizer
from gad.trainer.steps import sequence_logprobs


def test_discriminator_scores_at_final_token_regardless_of_padding(tiny_model):
    torch.manual_seed(0)
    D = Discriminator.from_backbone(str(tiny_model)).eval()
    tok = load_tokenizer(str(tiny_model))
    eos = tok.eos_token_id
    prompt, resp = [6, 7, 8], [9, 10, eos]
    alone = pack([prompt], [resp], tok.pad_token_id, eos)
    # The same pair next to a longer prompt and a longer response: more padding on both sides.
    crowd = pack([prompt, [6] * 9], [resp, [11] * 7 + [eos]], tok.pad_token_id, eos)
    s1 = D(alone.input_ids, alone.attention_mask, alone.position_ids, alone.last_index)
    s2 = D(crowd.input_ids, crowd.attention_mask, crowd.position_ids, crowd.last_index)
    assert torch.allclose(s1[0], s2[0], atol=1e-5)
    assert crowd.last_index.tolist() == [9 + 3 - 1, 9 + 8 - 1] and not crowd.truncated.any()


def test_pad_equal_to_eos_is_still_scored_at_eos(tiny_model):
    """With pad == EOS (SmolLM2, Llama 3) the score must still come from the EOS token itself."""
    torch.manual_seed(0)
    D = Discriminator.from_backbone(str(tiny_model)).eval()
    eos = load_tokenizer(str(tiny_model)).eos_token_id
    b = pack([[6, 7]], [[9, eos]], pad_id=eos, eos_id=eos)
    without_eos = pack([[6, 7]], [[9]], pad_id=eos, eos_id=eos)
    s_eos = D(b.input_ids, b.attention_mask, b.position_ids, b.last_index)
    s_9 = D(without_eos.input_ids, without_eos.attention_mask, without_eos.position_ids, without_eos.last_index)
    assert b.last_index.item() == 3 and not torch.allclose(s_eos, s_9)
    assert without_eos.truncated.item()  # no EOS: scored at its last token and flagged


def test_discriminator_save_load_roundtrip(tiny_model, tmp_path):
    torch.manual_seed(0)
    D = Discriminator.from_backbone(str(tiny_model)).eval()
    D.save(tmp_path / "d.safetensors")
    D2 = Discriminator.load(tmp_path / "d.safetensors").eval()
    b = pack([[6, 7, 8]], [[9, 1]], 0, 1)
    args = (b.input_ids, b.attention_mask, b.position_ids, b.last_index)
    assert torch.allclose(D(*args), D2(*args))


def test_logprobs_from_packed_batch_match_a_plain_forward(tiny_model):
    model, tok = load_causal_lm(str(tiny_model))
    model.eval()
    eos = tok.eos_token_id
    prompts, responses = [[6, 7, 8, 9], [10]], [[11, 12, eos], [13, eos]]
    b = pack(prompts, responses, tok.pad_token_id, eos)
    lp, _ = sequence_logprobs(model, b)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        logits = model(torch.tensor([p + r])).logits[0, len(p) - 1 : -1]
        ref = torch.log_softmax(logits, -1)[torch.arange(len(r)), torch.tensor(r)]
        assert torch.allclose(lp[i, : len(r)], ref, atol=1e-5)
    # a sub-batch trims its padding and gives the same numbers
    sub = b.rows(slice(1, 2))
    assert sub.input_ids.shape[1] < b.input_ids.shape[1]
    assert torch.allclose(sequence_logprobs(model, sub)[0][0, :2], lp[1, :2], atol=1e-5)


def test_rollout_samples_the_policy_not_the_checkpoints_generation_defaults(tiny_model):
    """A checkpoint's generation_config (top_k, repetition penalty...) must not shape the samples."""
    from gad.rollout import HFRollout

    model, tok = load_causal_lm(str(tiny_model))
    model.generation_config.top_k = 1  # would make every sample the argmax
    model.generation_config.repetition_penalty = 50.0
    torch.manual_seed(0)
    engine = HFRollout(model, tok.pad_token_id, tok.eos_token_id, max_new_tokens=1, temperature=1.0)
    n = 4096
    firsts = torch.tensor([s[0] for s in engine.generate([[6, 7, 8]], n=n)])
    with torch.no_grad():
        p = torch.softmax(model(torch.tensor([[6, 7, 8]])).logits[0, -1], -1).double()
    # every token (the prompt's own, which a repetition penalty would push down, included) is drawn
    # at its probability under the policy, within 4 binomial standard deviations
    freq = torch.bincount(firsts, minlength=p.numel()).double() / n
    assert ((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1 / n).all()
    assert model.generation_config.repetition_penalty == 50.0  # the checkpoint's own settings are left as they were


def test_logprobs_at_a_sampling_temperature(tiny_model):
    """The policy loss scores samples under softmax(logits / T), the distribution that drew them."""
    model, tok = load_causal_lm(str(tiny_model))
    model.eval()
    b = pack([[6, 7, 8]], [[11, 12, tok.eos_token_id]], tok.pad_token_id, tok.eos_token_id)
    logits = model(torch.tensor([[6, 7, 8, 11, 12, tok.eos_token_id]])).logits[0, 2:-1]
    ref = torch.log_softmax(logits / 0.5, -1)[torch.arange(3), torch.tensor([11, 12, tok.eos_token_id])]
    assert torch.allclose(sequence_logprobs(model, b, temperature=0.5)[0][0], ref, atol=1e-5)



def test_gguf_cache_folder_is_the_same_in_every_process(tmp_path):
    import subprocess
    import sys

    code = "from pathlib import Path; from gad.models import gguf_cache_dir; print(gguf_cache_dir(Path('/m/x.gguf')))"
    env = {**__import__("os").environ, "GAD_HOME": str(tmp_path)}
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout for _ in range(2)}
    assert len(seen) == 1 and seen.pop().startswith(str(tmp_path / "models" / "x-"))


# ---------------------------------------------------------------------- memory switches


def varied_prompts(tok, count: int = 5) -> list[list[int]]:
    """Prompts of different lengths (3..3+count-1 tokens), in no length order, from the model's vocabulary."""
    g = torch.Generator().manual_seed(1)
    lengths = [5, 3, 7, 4, 6, 3, 8][:count]
    return [torch.randint(6, len(tok), (k,), generator=g).tolist() for k in lengths]


def count_generate_calls(model) -> list[int]:
    """Wrap ``model.generate``; return the list that records each call's number of prompts."""
    real, calls = model.generate, []

    def spy(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    model.generate = spy
    return calls


def test_rollout_in_chunks_gives_each_prompt_the_samples_of_one_call(tiny_model):
    """Greedy decoding is deterministic, so chunked generation (sorted by length, put back in order)
    must give exactly the samples of one call, prompt by prompt; generate runs ceil(P / micro) times."""
    from gad.rollout import HFRollout

    model, tok = load_causal_lm(str(tiny_model))
    prompts = varied_prompts(tok)
    calls = count_generate_calls(model)
    one = HFRollout(model, tok.pad_token_id, tok.eos_token_id, max_new_tokens=6, temperature=0).generate(prompts, n=1)
    assert calls == [5]
    calls.clear()
    chunked = HFRollout(model, tok.pad_token_id, tok.eos_token_id, max_new_tokens=6, temperature=0,
                        micro_batch_size=2).generate(prompts, n=1)
    assert calls == [2, 2, 1]  # ceil(5 / 2) calls
    assert chunked == one
    assert len({tuple(s) for s in one}) > 1  # the prompts' answers differ, so a misplaced group shows


def test_sampled_rollout_in_chunks_keeps_groups_with_their_prompts(tiny_model):
    """With sampling the draws differ from one call's, but each prompt still gets its own n samples, in
    the prompts' order: at a temperature low enough that sampling picks the argmax, every group equals
    that prompt's greedy answer."""
    from gad.rollout import HFRollout

    model, tok = load_causal_lm(str(tiny_model))
    prompts = varied_prompts(tok, 7)
    greedy = HFRollout(model, tok.pad_token_id, tok.eos_token_id, max_new_tokens=5, temperature=0).generate(prompts, n=1)
    calls = count_generate_calls(model)
    torch.manual_seed(0)
    sampled = HFRollout(model, tok.pad_token_id, tok.eos_token_id, max_new_tokens=5, temperature=1e-4,
                        micro_batch_size=3).generate(prompts, n=3)
    assert calls == [3, 3, 1] and len(sampled) == 7 * 3
    assert all(1 <= len(s) <= 5 for s in sampled)
    assert [sampled[i * 3 : (i + 1) * 3] for i in range(7)] == [[g] * 3 for g in greedy]


def test_rollout_min_new_tokens_suppresses_eos_until_then(tiny_model):
    """benchmarks/step.py's fixed lengths: at a high temperature EOS is drawn often, yet with
    ``min_new_tokens = max_new_tokens`` every sample has exactly that many tokens and no EOS."""
    from gad.rollout import HFRollout

    model, tok = load_causal_lm(str(tiny_model))
    prompts = varied_prompts(tok)
    eos = tok.eos_token_id

    def sample(**kw):
        torch.manual_seed(0)
        return HFRollout(model, tok.pad_token_id, eos, max_new_tokens=30, temperature=5.0, **kw).generate(prompts, n=8)

    assert any(len(s) < 30 and s[-1] == eos for s in sample())  # EOS ends some samples early ...
    fixed = sample(min_new_tokens=30)
    assert all(len(s) == 30 and eos not in s for s in fixed)  # ... and none when suppressed


def test_rollout_with_gradient_checkpointing_keeps_its_cache(tiny_model):
    """Checkpointing acts in training passes only: a rollout from a model left in training mode with
    checkpointing on decodes with the KV cache (one new token per layer call after the prompt), gives
    the same answers, and leaves the model in training mode."""
    from gad.models import enable_gradient_checkpointing
    from gad.rollout import HFRollout

    model, tok = load_causal_lm(str(tiny_model))
    prompts = varied_prompts(tok, 3)
    plain = HFRollout(model, tok.pad_token_id, tok.eos_token_id, max_new_tokens=6, temperature=0).generate(prompts, n=1)
    enable_gradient_checkpointing(model)
    model.train()
    widths: list[int] = []
    model.model.layers[0].mlp.register_forward_hook(lambda m, args, out: widths.append(args[0].shape[1]))
    out = HFRollout(model, tok.pad_token_id, tok.eos_token_id, max_new_tokens=6, temperature=0).generate(prompts, n=1)
    assert out == plain and model.training and model.model.layers[0].gradient_checkpointing
    assert widths[0] == max(len(p) for p in prompts) and len(widths) > 1 and set(widths[1:]) == {1}


def test_bf16_reference_logprobs_are_fp32_from_bf16_logits_and_close_to_fp32(tiny_model):
    """The bf16 reference's log-probs are the fp32 log-softmax of its own bf16 logits, and close to
    the fp32 reference's.

    Tolerance: bf16 keeps 8 significant bits, a relative rounding error u = 2^-8 per rounding. To
    first order a logit z collects at most k*u*max|z| from the k roundings on its way (weights and
    activations: about 4 per decoder layer + embedding, final norm and head, k = 10 for this 2-layer
    model), and log p_t = z_t - logsumexp(z) moves by at most twice the largest logit error:
    tol = 2 * k * u * max|z|. A log-softmax taken in bf16 instead of fp32 would be off by about
    u * |log p| (~0.02 here), far above the 1e-5 of the first check.
    """
    from gad.models import load_reference

    tok = load_tokenizer(str(tiny_model))
    eos = tok.eos_token_id
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(6, len(tok), (int(k),), generator=g).tolist() for k in torch.randint(3, 12, (16,), generator=g)]
    responses = [torch.randint(6, len(tok), (int(k),), generator=g).tolist() + [eos]
                 for k in torch.randint(2, 20, (16,), generator=g)]
    b = pack(prompts, responses, tok.pad_token_id, eos)
    fp32, bf16 = load_reference(str(tiny_model), "fp32"), load_reference(str(tiny_model), "bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16} and not any(p.requires_grad for p in bf16.parameters())
    assert not bf16.training
    with torch.no_grad():
        lp32, lp16 = sequence_logprobs(fp32, b)[0], sequence_logprobs(bf16, b)[0]
        logits16 = bf16(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits
        z_max = fp32(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits.abs().max()
    assert lp16.dtype == torch.float32 and logits16.dtype == torch.bfloat16
    R = b.response_ids.shape[1]
    mask = b.response_mask.bool()
    for temperature in (1.0, 0.8):  # the sampling temperature divides the logits after the upcast too
        upcast = torch.log_softmax(logits16[:, -R - 1 : -1].float() / temperature, -1)
        expected = upcast.gather(-1, b.response_ids.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            got = sequence_logprobs(bf16, b, temperature=temperature)[0]
        torch.testing.assert_close(got[mask], expected[mask], rtol=0, atol=1e-5)
    tol = 2 * 10 * 2**-8 * float(z_max)
    err = (lp16 - lp32).abs()[mask]
    assert 0 < err.max() <= tol, (float(err.max()), tol)  # differs (it is bf16), within the bound
