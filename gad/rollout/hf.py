"""The ``transformers.generate`` engine: sampling from the live training model itself."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from transformers import GenerationConfig


class HFRollout:
    """Sampling with ``transformers.generate`` from the live policy.

    ``temperature=0`` decodes greedily (``gad eval``'s default); training always samples.
    ``micro_batch_size``: prompts per ``generate`` call (0 = all in one call). With several calls the
    prompts are sorted by length first, so a call pads little, and the samples are put back in the
    prompts' order.
    ``min_new_tokens``: EOS is suppressed until a sample has this many tokens (transformers'
    ``min_new_tokens``); 0 = off. Training leaves it off; ``benchmarks/step.py`` sets it to
    ``max_new_tokens`` so every sample has exactly that length and step costs compare.
    """

    def __init__(
        self, model: Any, pad_id: int, eos_id: int, max_new_tokens: int, temperature: float = 0.8,
        top_p: float = 1.0, autocast: Any = None, micro_batch_size: int = 0, min_new_tokens: int = 0,
    ):
        self.model, self.pad_id, self.eos_id = model, pad_id, eos_id
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.autocast = autocast or nullcontext
        self.micro_batch_size = micro_batch_size
        self.min_new_tokens = min_new_tokens

    def greedy(self, max_new_tokens: int = 0) -> HFRollout:
        """The same engine (model, precision, adapter) decoding greedily, with its own token budget
        (0 = this one's): validation during training."""
        return HFRollout(self.model, self.pad_id, self.eos_id, max_new_tokens or self.max_new_tokens, 0.0,
                         autocast=self.autocast, micro_batch_size=self.micro_batch_size)

    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        size = self.micro_batch_size or len(prompts)
        if len(prompts) <= size:
            return self._generate(prompts, n)
        by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        groups: list[list[list[int]]] = [[] for _ in prompts]
        for start in range(0, len(prompts), size):
            chunk = by_length[start : start + size]
            samples = self._generate([prompts[i] for i in chunk], n)  # grouped by prompt, in chunk order
            for j, i in enumerate(chunk):
                groups[i] = samples[j * n : (j + 1) * n]
        return [s for group in groups for s in group]

    @torch.no_grad()
    def _generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        """One ``generate`` call: ``n`` samples of each prompt, grouped by prompt."""
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: generation continues every row at column `width`
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        # A fresh GenerationConfig, not the model's: a checkpoint's own defaults (Qwen2.5 ships top_k=20,
        # repetition_penalty=1.05) would make the samples come from another distribution than the
        # one the policy loss assumes. Passing it is not enough: transformers 5 fills every field
        # left unset from `model.generation_config`, so that one is swapped for a blank during the call.
        # temperature 0 = greedy (evaluation); training always samples.
        decoding = (
            {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
            if self.temperature > 0 else {"do_sample": False}
        )
        gen_cfg = GenerationConfig(
            **decoding, num_return_sequences=n, max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens or None, eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
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
