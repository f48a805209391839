"""Glue between a set, a model's cached generations and the metrics: what ``gad eval`` calls.

``gad eval`` (generation with a student model, the LLM judge) is built on top of this:

1. ``items = pending_items(eval_set, read_generations(out_dir))`` — what still needs generating;
2. generate those, ``append_generations(out_dir, ...)`` as they come (resumable);
3. ``evaluate_generations(eval_set, read_generations(out_dir), judge_pairs=...)`` — the metrics;
4. ``write_results`` / ``write_eval_report`` (:mod:`gad.eval.report`) over ``{model: {set: metrics}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gad.eval.generations import Generation
from gad.eval.report import evaluate_responses
from gad.eval.sets import EvalItem, EvalSet

Generations = dict[tuple[str, str], Generation]


def pending_items(eval_set: EvalSet, generations: Generations) -> list[EvalItem]:
    """The items of ``eval_set`` with no cached generation (or one made for a different prompt)."""
    out = []
    for item in eval_set:
        g = generations.get((eval_set.name, item.id))
        if g is None or g.messages != item.messages:
            out.append(item)
    return out


def evaluate_generations(
    eval_set: EvalSet,
    generations: Generations,
    *,
    references: Sequence[str | None] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`gad.eval.report.evaluate_responses` over a set and its cached generations.

    ``references`` (in the set's item order) replace the set's own, e.g. the judge's answers for a
    set that has none. Other keyword arguments go to ``evaluate_responses`` (``judge_pairs`` in the
    set's item order, tokenizers, ``distinguish``, ``seed``).

    Raises ``ValueError`` naming the first items that have no generation, or whose cached prompt is
    not the set's (the set file changed since generation).
    """
    missing = [it.id for it in eval_set if (eval_set.name, it.id) not in generations]
    stale = [
        it.id
        for it in eval_set
        if (eval_set.name, it.id) in generations
        and generations[(eval_set.name, it.id)].messages != it.messages
    ]
    if missing or stale:
        problems = []
        if missing:
            problems.append(f"{len(missing)} without a generation (first: {', '.join(missing[:5])})")
        if stale:
            problems.append(f"{len(stale)} generated for a different prompt (first: {', '.join(stale[:5])})")
        raise ValueError(f"set {eval_set.name} ({eval_set.path}): items " + "; ".join(problems))
    gens = [generations[(eval_set.name, it.id)] for it in eval_set]
    return evaluate_responses(
        [it.prompt for it in eval_set],
        [g.response for g in gens],
        [it.reference for it in eval_set] if references is None else list(references),
        ids=[it.id for it in eval_set],
        **kwargs,
    )
