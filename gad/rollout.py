"""Rollout: sampling the student's responses, behind a small interface.

Contract of a rollout engine: ``generate(prompts, n) -> list of n * len(prompts) token lists``,
grouped by prompt (all samples of prompt 0 first), each ending with EOS unless it hit the token
budget. Only token ids cross this boundary: log-probs are always recomputed by the training model,
so a vLLM engine can replace :class:`HFRollout` without touching the step.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Protocol

import torch
from transformers import GenerationConfig


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]: ...


class HFRollout:
    """Sampling with ``transformers.generate`` from the live policy.

    ``temperature=0`` decodes greedily (``gad eval``'s default); training always samples.
    """

    def __init__(
        self, model: Any, pad_id: int, eos_id: int, max_new_tokens: int, temperature: float = 0.8,
        top_p: float = 1.0, autocast: Any = None,
    ):
        self.model, self.pad_id, self.eos_id = model, pad_id, eos_id
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.autocast = autocast or nullcontext

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: generation continues every row at column `width`
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        # A fresh GenerationConfig, not the model's: a checkpoint's own defaults (Qwen2.5 ships top_k=20,
        # repetition_penalty=1.05) would make the samples come from another distribution than the
        # one the policy loss assumes.
        # temperature 0 = greedy (evaluation); training always samples.
        decoding = (
            {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
            if self.temperature > 0 else {"do_sample": False}
        )
        gen_cfg = GenerationConfig(
            **decoding, num_return_sequences=n, max_new_tokens=self.max_new_tokens, eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        # transformers (5.x) fills every field left unset in `gen_cfg` (a repetition penalty, min_p...)
        # from the model's own generation_config: a blank one stands in for it while sampling.
        was_training, own_defaults = self.model.training, self.model.generation_config
        self.model.eval()
        self.model.generation_config = GenerationConfig()
        try:
            with self.autocast():
                out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg)
                # (len(prompts) * n, width + new), grouped by prompt
        finally:
            self.model.generation_config = own_defaults
            self.model.train(was_training)
        return [cut_at_eos(row, self.eos_id) for row in out[:, width:].tolist()]


def cut_at_eos(tokens: list[int], eos_id: int) -> list[int]:
    """Keep tokens up to and including the first EOS (the rest is padding, which may equal EOS)."""
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens
