"""A local transformers model as the teacher: offline collection and the demo, same output schema.

Generation runs in a worker thread so the collector's event loop (progress bar, store) stays live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gad.teacher.backend import ChatRequest, ChatResponse, GenerationSettings


class LocalBackend:
    """Batched ``generate`` with a causal LM. ``model`` is a path / hub-style name (loaded with
    :func:`gad.models.load_causal_lm`; None = the embedded default) or a ready model, in which case
    ``tokenizer`` must be given too (tests build tiny random ones)."""

    name = "local"
    concurrency = 1  # one model, one batch at a time

    def __init__(self, settings: GenerationSettings, model: Any = None, tokenizer: Any = None,
                 *, batch_size: int = 8, device: str | None = None):
        import torch

        if model is None or isinstance(model, str):
            from gad.models import load_causal_lm  # lazy: only offline users need models

            model, tokenizer = load_causal_lm(model)
        elif tokenizer is None:
            raise ValueError("a ready model needs its tokenizer: LocalBackend(settings, model, tokenizer)")
        self.settings = settings
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # decoder-only: new tokens must follow every prompt
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    async def respond(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return await asyncio.to_thread(self.generate, list(requests))

    async def aclose(self) -> None:
        return None

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        import torch

        tok, s = self.tokenizer, self.settings
        texts = [tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
                 for r in requests]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        do_sample = bool(s.temperature)  # None or 0 -> greedy
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_tokens or 512, "do_sample": do_sample,
                                  "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
        if do_sample:
            kwargs["temperature"] = s.temperature
            if s.top_p is not None:
                kwargs["top_p"] = s.top_p
        if s.seed is not None:
            torch.manual_seed(s.seed)
        with torch.no_grad():
            out = self.model.generate(**batch, **kwargs)
        new_tokens = out[:, batch["input_ids"].shape[1]:]  # (B, T_new)
        prompt_lens = batch["attention_mask"].sum(dim=1).tolist()
        responses = []
        for r, ids, n_prompt in zip(requests, new_tokens.tolist(), prompt_lens):
            if tok.eos_token_id in ids:
                ids, finish = ids[: ids.index(tok.eos_token_id)], "stop"
            else:
                finish = "length"
            responses.append(ChatResponse(
                id=r.id, content=tok.decode(ids, skip_special_tokens=True), finish_reason=finish,
                model=s.model, prompt_tokens=int(n_prompt), completion_tokens=len(ids)))
        return responses
