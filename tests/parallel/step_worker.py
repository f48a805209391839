"""One GAD step on this process's share of a fixed batch, with replayed responses; rank 0 saves the
updated weights and the logged metrics. Run as one process (``parallel=none``) or under torchrun.

    python -m tests.parallel.step_worker MODEL TEACHER_SET OUT_DIR MODE[+lora]

``+lora``: the generator and the discriminator are LoRA adapters on one shared backbone; what is
saved is then the adapters and D's head.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
from accelerate.utils import set_seed
from safetensors.torch import save_file

from gad import lora
from gad.config import load_config
from gad.data import encode_teacher_set, read_teacher_set
from gad.rollout import ReplayRollout
from gad.trainer import parallel
from gad.trainer.roles import build_roles
from gad.trainer.steps import PromptBatch, gad_step
from gad.trainer.timing import PhaseTimer

PROMPTS, N, MINI = 4, 4, 2  # 2 optimizer steps for G: each process holds 1 prompt of each mini-batch


def replay_table(examples, vocab: int, eos: int) -> dict[tuple[int, ...], list[list[int]]]:
    """Rank 1's prompts (under 2 processes) get short responses, rank 0's long ones; some end
    without EOS (truncated)."""
    rank1 = {i for i in parallel.World(rank=1, size=2).share(list(range(PROMPTS)), MINI)}
    table = {}
    for i, ex in enumerate(examples):
        rng = random.Random(i)
        responses = []
        for j in range(N):
            length = rng.randint(1, 3) if i in rank1 else rng.randint(6, 9)
            body = [rng.randrange(5, vocab) for _ in range(length)]
            responses.append(body if j == N - 1 else body + [eos])
        table[tuple(ex.prompt_ids)] = responses
    return table


LORA = ["generator.lora_r=4", "discriminator.lora_r=4", "lora.share_base=true", "generator.lora_lr=1e-2",
        "discriminator.lora_lr=1e-2"]


def trained_state(model, world: parallel.World) -> dict[str, torch.Tensor]:
    """What a model trains, gathered whole on rank 0 (every process calls this)."""
    if isinstance(model, lora.AdapterView):
        if model.name == "gen":
            return model.adapters.state_dict("gen")
        return lora.discriminator_state(model.model, model.adapters, model.name)
    full = world.full_state_dict(model)
    if full is None:  # one process: the model's own state, each tied parameter under its first name
        full = dict(model.state_dict())
        for tied in {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}:
            full.pop(tied)
    return full


def main(model: str, data: str, out: str, mode: str) -> None:
    mode, _, extra = mode.partition("+")
    cfg = load_config(None, [
        f"data.train_file={data}", f"generator.model={model}", f"train.output_dir={out}",
        f"train.batch_size={PROMPTS}", f"rollout.n={N}", f"algorithm.mini_batch_size={MINI}",
        "train.micro_batch_size=2", "generator.lr=1e-4", "discriminator.lr=1e-4", "algorithm.kl_coef=0.1",
        "generator.grad_clip=0.5", f"train.parallel={mode}", *(LORA if extra == "lora" else []),
    ], stage="train")
    world = parallel.setup(mode, "train")
    set_seed(0)
    roles = build_roles(cfg, model, model, None, world)
    rows, stats = read_teacher_set(data)
    examples, _ = encode_teacher_set(rows, roles.tokenizer, roles.eos_id, 64, 64, stats)
    examples = examples[:PROMPTS]
    roles.rollout = ReplayRollout(replay_table(examples, len(roles.tokenizer), roles.eos_id))
    batch = PromptBatch([examples[i] for i in world.share(list(range(PROMPTS)), MINI)])
    replayed = roles.rollout.generate(batch.prompts, N)
    metrics = gad_step(batch, roles, PhaseTimer())
    lengths = world.gather(torch.tensor([sum(map(len, replayed)) / len(replayed)]))  # each process's mean
    states = {name: trained_state(m, world) for name, m in roles.models().items()}
    if world.is_main:
        Path(out).mkdir(parents=True, exist_ok=True)
        for name, sd in states.items():
            save_file({k: v.detach().float().contiguous().clone() for k, v in sd.items()}, f"{out}/{name}.safetensors")
        (Path(out) / "metrics.json").write_text(json.dumps(
            {**metrics, "local_prompts": len(batch.examples), "processes": world.size,
             "local_response_length": lengths.tolist()}))
    world.barrier()
    world.close()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:5])
