"""The colocated vLLM engine under torchrun with FSDP2: each process's engine decodes its own prompts
(a different number per process) like ``transformers.generate`` on the same sharded generator, before
and after one generator update made through the trainer's own roles; rank 0 writes what it saw.

    torchrun --standalone --nproc_per_node 2 -m tests.parallel.vllm_worker MODEL TEACHER_SET OUT_JSON
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

from gad.batch import pack
from gad.config import load_config
from gad.trainer import parallel
from gad.trainer.roles import _rollout, build_roles
from gad.trainer.steps import sequence_logprobs
from tests.test_trainer import overrides

TEXTS = ["what is the cat", "tell me a story about the moon", "why is the sun red", "name a blue river"]


def main(model: str, teacher_set: str, out: str) -> None:
    cfg = load_config(None, overrides(Path(model), Path(teacher_set), Path(out).parent / "run",
                                      train__parallel="fsdp2", rollout__engine="vllm", rollout__vllm_enforce_eager="true",
                                      rollout__vllm_cpu_kv_cache_gib=1, generator__lr=1e-2), stage="train")
    world = parallel.setup("fsdp2", "train")
    roles = build_roles(cfg, model, model, None, world)
    tok = roles.tokenizer
    hf_cfg = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, engine="hf"))
    hf = _rollout(hf_cfg, world, parallel.unwrap(roles.generator), tok)  # generate on the same sharded model
    texts = TEXTS[:3] if world.rank == 0 else TEXTS[3:]
    prompts = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for t in texts]
    seen = {}
    seen["before"] = (roles.rollout.greedy(16).generate(prompts, 1), hf.greedy(16).generate(prompts, 1))

    # One generator update through the roles (the same batch in every process).
    answer = tok("yes the cat is good", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    seqs = pack(prompts[:1] * 4, [answer] * 4, tok.pad_token_id, tok.eos_token_id)
    logprobs, _ = sequence_logprobs(roles.generator, seqs)
    loss = -logprobs[seqs.response_mask.bool()].mean()
    roles.backward(loss, "gen")
    assert roles.step_optimizer("gen", loss.item())["gen/skipped_update"] == 0.0
    seen["after"] = (roles.rollout.greedy(16).generate(prompts, 1), hf.greedy(16).generate(prompts, 1))
    seen["syncs"] = roles.rollout.engine.syncs
    everyone = world.gather_objects(seen)
    roles.close()
    x = torch.ones(1)
    torch.distributed.all_reduce(x)  # the trainer's process group outlives the engine
    if world.rank == 0:
        Path(out).write_text(json.dumps({"ranks": everyone, "group_after_close": x.item()}))
    world.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
