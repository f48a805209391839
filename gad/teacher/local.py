"""A local transformers model as the teacher: offline collection and the demo, same output schema.

Generation goes through :class:`gad.rollout.HFRollout`, the one generation path of training and
evaluation, so a checkpoint's own sampling defaults (``generation_config.json``) never change what
the teacher says. It runs in a worker thread so the collector's event loop (progress bar, store)
stays live. A prompt that does not fit the model's context with its token budget is refused, as an
API server refuses it, and the rest of the batch is answered.

``engine="vllm"`` (``gad teacher --backend vllm``) generates with a vLLM engine given the model's
weights in memory instead (:func:`gad.rollout.vllm_engine.vllm_rollout_for`): the same prompts,
sampling settings, refusals and rows, ``meta.backend`` "vllm".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gad.teacher.backend import ChatRequest, ChatResponse, GenerationSettings

DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_VLLM_CONTEXT = 4096  # the vLLM engine's context when the model's config does not say
WHAT_VLLM = "gad teacher --backend vllm"


class LocalBackend:
    """Batched generation with a causal LM. ``model`` is a path / hub-style name (loaded with
    :func:`gad.models.load_causal_lm`; None = the embedded default) or a ready model, in which case
    ``tokenizer`` must be given too (tests build tiny random ones).

    ``settings.temperature`` None or 0 decodes greedily; otherwise nucleus sampling with
    ``settings.top_p``, seeded with ``settings.seed`` before each batch when given.
    ``chat_template_kwargs``: extra variables for this model's chat template (e.g.
    ``{"enable_thinking": False}``), part of the run's fingerprint; the student's
    ``data.chat_template_kwargs`` are not the teacher's.
    ``engine``: ``hf`` (``transformers.generate``) or ``vllm`` (a vLLM engine on the same weights,
    its context the model's; ``vllm_enforce_eager``: without compilation); ``aclose`` shuts it down.
    """

    name = "local"
    concurrency = 1  # one model, one batch at a time

    def __init__(self, settings: GenerationSettings, model: Any = None, tokenizer: Any = None,
                 *, batch_size: int = 8, device: str | None = None,
                 chat_template_kwargs: dict[str, Any] | None = None, engine: str = "hf",
                 vllm_enforce_eager: bool = False):
        import torch

        from gad.rollout import HFRollout

        if engine not in ("hf", "vllm"):
            raise ValueError(f"engine: 'hf' or 'vllm', got {engine!r}")
        if engine == "vllm":  # before the model loads
            from gad.rollout.vllm_engine import require_vllm

            require_vllm(WHAT_VLLM)
        if model is None or isinstance(model, str):
            from gad.models import load_causal_lm  # lazy: only offline users need models

            model, tokenizer = load_causal_lm(model)
        elif tokenizer is None:
            raise ValueError("a ready model needs its tokenizer: LocalBackend(settings, model, tokenizer)")
        self.settings = settings
        self.batch_size = batch_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_new_tokens = settings.max_tokens or DEFAULT_MAX_NEW_TOKENS
        self.context_length = context_length(model)
        temperature, top_p = settings.temperature or 0.0, settings.top_p if settings.top_p is not None else 1.0
        self.rollout: Any
        if engine == "vllm":  # the weights are copied into the engine: the model stays where it is
            from gad.rollout.vllm_engine import vllm_rollout_for

            self.name = "vllm"
            self.context_length = self.context_length or DEFAULT_VLLM_CONTEXT
            self.device, self.model = str(next(model.parameters()).device), model.eval()
            self.rollout = vllm_rollout_for(self.model, tokenizer, self.max_new_tokens, temperature, top_p,
                                            max_model_len=self.context_length, enforce_eager=vllm_enforce_eager,
                                            what=WHAT_VLLM)
        else:
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model = model.to(self.device).eval()
            self.rollout = HFRollout(self.model, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                                     self.max_new_tokens, temperature=temperature, top_p=top_p)

    async def respond(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        return await asyncio.to_thread(self.generate, list(requests))

    async def aclose(self) -> None:
        close = getattr(self.rollout, "close", None)
        if close is not None:  # a vLLM engine
            close()

    def fingerprint_extra(self) -> dict[str, Any]:
        """The template's variables change what the teacher is asked (nothing when there are none,
        so stores collected before them resume)."""
        return {"chat_template_kwargs": self.chat_template_kwargs} if self.chat_template_kwargs else {}

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        import torch

        from gad.data import template_prompt

        tok, s = self.tokenizer, self.settings
        prompts = [template_prompt(tok, r.messages, self.chat_template_kwargs) for r in requests]
        responses: list[ChatResponse | None] = [None] * len(requests)
        fits = []
        for i, (r, ids) in enumerate(zip(requests, prompts, strict=True)):
            refusal = too_long(len(ids), self.max_new_tokens, self.context_length)
            if refusal:
                responses[i] = ChatResponse(id=r.id, model=s.model, rejected=refusal)
            else:
                fits.append(i)
        if fits:
            if s.seed is not None:
                torch.manual_seed(s.seed)
            outs = self.rollout.generate([prompts[i] for i in fits], n=1)  # cut after the first EOS
            for i, ids in zip(fits, outs, strict=True):
                finished = bool(ids) and ids[-1] == tok.eos_token_id
                text_ids = ids[:-1] if finished else ids
                responses[i] = ChatResponse(
                    id=requests[i].id, content=tok.decode(text_ids, skip_special_tokens=True),
                    finish_reason="stop" if finished else "length", model=s.model,
                    prompt_tokens=len(prompts[i]), completion_tokens=len(text_ids))
        return [r for r in responses if r is not None]


def context_length(model: Any) -> int | None:
    """The longest sequence the model was built for (None when its config does not say)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def too_long(prompt_tokens: int, max_new_tokens: int, context: int | None) -> str | None:
    """Why a prompt does not fit the model (worded as vLLM words it), or None when it does."""
    if context is None or prompt_tokens + max_new_tokens <= context:
        return None
    return (f"context length exceeded: the model's maximum context length is {context} tokens; this request "
            f"needs {prompt_tokens + max_new_tokens} ({prompt_tokens} in the messages, {max_new_tokens} in "
            "the completion). Shorten the prompt or lower --max-tokens")
