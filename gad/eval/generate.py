"""The student's answers to an evaluation set, batched through a rollout engine.

One generation path for training and evaluation (the rollout engine), greedy here by default:
:class:`gad.rollout.HFRollout` (``transformers.generate``), or a vLLM engine on the same weights
(:func:`vllm_rollout`, ``gad eval --engine vllm``) handed in as ``rollout``.
Prompts are rendered with the student's own chat template (:func:`gad.data.template_prompt`) and
sorted longest first, so each batch pads little and an out-of-memory shows up in the first batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gad.eval.sets import EvalItem


@dataclass(frozen=True)
class Answer:
    """One generated response. ``truncated``: it hit ``max_new_tokens`` before EOS."""

    item: EvalItem
    response: str
    n_tokens: int
    truncated: bool


def generate_answers(
    model: Any,
    tokenizer: Any,
    items: Sequence[EvalItem],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    on_batch: Callable[[list[Answer]], None] | None = None,
    progress: bool = True,
    desc: str = "generate",
    chat_template_kwargs: dict[str, Any] | None = None,
    rollout: Any = None,
) -> list[Answer]:
    """Answers ``items`` in batches; ``on_batch`` gets each batch as it finishes (to cache it).
    ``chat_template_kwargs``: extra variables for the student's chat template (e.g.
    ``enable_thinking=False``), as in training (``data.chat_template_kwargs``).

    ``temperature=0`` is greedy decoding; otherwise nucleus sampling with ``top_p``, seeded by
    ``seed`` once before the first batch.
    """
    import torch

    from gad.data import template_prompt
    from gad.rollout import HFRollout, cut_at_eos

    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    eos_id = tokenizer.eos_token_id
    if rollout is None:
        model = model.to("cuda" if torch.cuda.is_available() else "cpu")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
        rollout = HFRollout(model, pad_id, eos_id, max_new_tokens, temperature=temperature, top_p=top_p)
    prompts = {it.id: template_prompt(tokenizer, it.messages, chat_template_kwargs) for it in items}
    order = sorted(items, key=lambda it: -len(prompts[it.id]))
    torch.manual_seed(seed)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), unit="prompt", dynamic_ncols=True, desc=desc)
    answers: list[Answer] = []
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            outs = rollout.generate([prompts[it.id] for it in batch], n=1)
            done = []
            for it, ids in zip(batch, outs, strict=True):
                ids = cut_at_eos(ids, eos_id)
                finished = bool(ids) and ids[-1] == eos_id
                text_ids = ids[:-1] if finished else ids
                done.append(Answer(it, tokenizer.decode(text_ids, skip_special_tokens=True), len(text_ids),
                                   truncated=not finished))
            answers += done
            if on_batch is not None:
                on_batch(done)
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(truncated=sum(a.truncated for a in answers), refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return answers


def vllm_rollout(model: Any, tokenizer: Any, items: Sequence[EvalItem], *, max_new_tokens: int,
                 temperature: float = 0.0, top_p: float = 1.0, enforce_eager: bool = False,
                 chat_template_kwargs: dict[str, Any] | None = None) -> Any:
    """A vLLM engine on ``model``'s weights for answering ``items`` (its context: their longest
    prompt plus ``max_new_tokens``), for :func:`generate_answers`; close it when done."""
    from gad.data import template_prompt
    from gad.rollout.vllm_engine import vllm_rollout_for

    longest = max((len(template_prompt(tokenizer, it.messages, chat_template_kwargs)) for it in items), default=0)
    return vllm_rollout_for(model, tokenizer, max_new_tokens, temperature, top_p,
                            max_model_len=longest + max_new_tokens, enforce_eager=enforce_eager,
                            what="gad eval --engine vllm")
