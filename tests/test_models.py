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
