"""Validation during training (``eval.every``): the student answers held-out teacher prompts greedily
and is measured against the teacher's answers, as the run goes.

- ``val/d_accuracy``: how often D scores the teacher's answer above the student's (D's view of the
  held-out pairs, the same comparison its training loss makes, on prompts it never trained on);
- ``val/response_length_mean`` and ``val/ended_rate``: the greedy answers' length in tokens and the
  share that end with EOS (rather than at the token budget);
- ``val/distinguish_accuracy`` with ``val/distinguish_low``/``_high``: the classifier two-sample
  test of ``gad eval`` (:mod:`gad.distinguish`) between the teacher's and the student's answers,
  cross-validated over prompts; 0.5 = indistinguishable.

Each process answers its share of the prompts; the counts and texts are gathered, so every process
logs the same values.
"""

from __future__ import annotations

import torch

from gad.batch import pack
from gad.data import Example
from gad.distinguish import two_sample_test
from gad.trainer.roles import Roles


def validate(roles: Roles, examples: list[Example], max_new_tokens: int = 0) -> dict[str, float]:
    """The ``val/*`` metrics of the current student (and D, in the stages that have one) on ``examples``."""
    world, tok = roles.world, roles.tokenizer
    examples = examples[: len(examples) - len(examples) % world.size]  # equal shares: sharded D runs in step
    mine = examples[world.rank :: world.size]
    answers = roles.rollout.greedy(max_new_tokens).generate([e.prompt_ids for e in mine], 1) if mine else []
    out: dict[str, float] = {}
    if roles.discriminator is not None and mine:
        out["val/d_accuracy"] = world.total(_teacher_scored_higher(roles, mine, answers)) / len(examples)
    lengths = world.total(sum(len(a) for a in answers))
    ended = world.total(sum(bool(a) and a[-1] == roles.eos_id for a in answers))
    out["val/response_length_mean"] = lengths / len(examples)
    out["val/ended_rate"] = ended / len(examples)
    pairs = world.gather_objects([(tok.decode(e.response_ids, skip_special_tokens=True), tok.decode(a, skip_special_tokens=True))
                                  for e, a in zip(mine, answers)])
    teacher, student = [t for part in pairs for t, _ in part], [s for part in pairs for _, s in part]
    if len(teacher) >= 2:
        test = two_sample_test(teacher, student, paired=True)
        out.update({"val/distinguish_accuracy": test.accuracy, "val/distinguish_low": test.low,
                    "val/distinguish_high": test.high})
    out["val/prompts"] = float(len(examples))
    return out


@torch.no_grad()
def _teacher_scored_higher(roles: Roles, examples: list[Example], answers: list[list[int]]) -> int:
    """How many of ``examples`` D scores above the student's answer (teacher and answer side by side)."""
    D, size = roles.discriminator, max(2, roles.cfg.train.micro_batch_size)
    was = D.model.training if hasattr(D, "model") else D.training
    D.eval()
    wins = 0
    try:
        for start in range(0, len(examples), size // 2):
            exs, ans = examples[start : start + size // 2], answers[start : start + size // 2]
            prompts = [e.prompt_ids for e in exs for _ in range(2)]
            responses = [r for e, a in zip(exs, ans) for r in (e.response_ids, a)]
            seqs = pack(prompts, responses, roles.pad_id, roles.eos_id).to(roles.device)
            with roles.autocast():
                scores = D(seqs.input_ids, seqs.attention_mask, seqs.position_ids, seqs.last_index).float().view(-1, 2)
            wins += int((scores[:, 0] > scores[:, 1]).sum())
    finally:
        D.train(was)
    return wins
