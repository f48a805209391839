"""From a model's answers to its metrics: what ``gad eval`` computes for each (model, set).

:func:`evaluate_responses` takes parallel lists of prompts, student responses and reference
responses (``None`` where a set has no reference) and returns every metric as a JSON-ready dict
(the per-set entry of ``results.json``, see :mod:`gad.eval.results`). Over a set and a model's
cached generations:

1. ``items = pending_items(eval_set, read_generations(out_dir))`` — what still needs generating;
2. generate those, ``append_generations(out_dir, ...)`` as they come (resumable);
3. ``evaluate_generations(eval_set, read_generations(out_dir), judge_pairs=...)`` — the metrics;
4. ``write_results`` (:mod:`gad.eval.results`) / ``write_eval_report`` (:mod:`gad.eval.report`)
   over ``{model: {set: metrics}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gad.distinguish import two_sample_test
from gad.eval import metrics as M
from gad.eval.generations import Generation
from gad.eval.sets import EvalDataError, EvalItem, EvalSet

Generations = dict[tuple[str, str], Generation]


def pending_items(eval_set: EvalSet, generations: Generations) -> list[EvalItem]:
    """The items of ``eval_set`` with no cached generation (or one made for a different prompt)."""
    out = []
    for item in eval_set:
        g = generations.get((eval_set.name, item.id))
        if g is None or g.messages != item.messages:
            out.append(item)
    return out


def evaluate_responses(
    prompts: Sequence[str],
    responses: Sequence[str],
    references: Sequence[str | None],
    *,
    ids: Sequence[str] | None = None,
    judge_pairs: Sequence[tuple[float, float] | None] | None = None,
    overlap_tokenize: M.Tokenize = M.default_tokenize,
    length_tokenize: M.Tokenize = M.whitespace_tokenize,
    length_unit: str = "words",
    distinguish: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Every API-free metric for one model on one set (plus the judge aggregate when given).

    Args:
        prompts, responses, references: parallel lists, one entry per item; a ``None`` reference
            leaves that item out of the overlap metrics and the two-sample test.
        ids: item ids for ``per_item`` (default ``"0"``, ``"1"``, ...).
        judge_pairs: per-item ``(s_student, s_ref)`` or ``None`` for a judge failure
            (see :func:`gad.eval.metrics.aggregate_judge_scores`).
        overlap_tokenize: tokens for n-gram F1 and ROUGE-L.
        length_tokenize: tokens for lengths (pass the student tokenizer's ``tokenize`` for the
            paper's token counts; whitespace words by default).
        length_unit: what ``length_tokenize`` counts, for tables and plots (e.g. ``"tokens"``).
        distinguish: run the two-sample test (needs at least 2 references).
        seed: for the bootstrap and the cross-validation folds.
    """
    n = len(responses)
    if not (len(prompts) == n == len(references)):
        raise ValueError(
            f"{len(prompts)} prompts, {n} responses, {len(references)} references: need one each"
        )
    if n == 0:
        raise ValueError("no items")
    if judge_pairs is not None and len(judge_pairs) != n:
        raise ValueError(f"{len(judge_pairs)} judge scores for {n} items")
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]

    lengths = [len(length_tokenize(r)) for r in responses]
    paired = [(r, ref) for r, ref in zip(responses, references) if ref is not None]
    out: dict[str, Any] = {
        "n": n,
        "n_reference": len(paired),
        "ngram_f1": None,
        "rouge_l": None,
        "length": M.summarize_lengths(lengths),
        "length_unit": length_unit,
        "reference_length": None,
        "distinguishability": None,
        "judge": None,
        "per_item": {"id": ids, "length": lengths, "reference_length": None, "rouge_l": None},
    }
    if paired:
        cands, refs = [c for c, _ in paired], [r for _, r in paired]
        f1 = M.ngram_f1_by_n(cands, refs, M.NGRAM_NS, overlap_tokenize)
        out["ngram_f1"] = {str(k): v for k, v in f1.items()}
        rl = M.rouge_l_scores(cands, refs, overlap_tokenize)
        out["rouge_l"] = M.bootstrap_ci(rl, seed=seed).to_dict()
        ref_lengths = [None if ref is None else len(length_tokenize(ref)) for ref in references]
        out["reference_length"] = M.summarize_lengths([x for x in ref_lengths if x is not None])
        out["per_item"]["reference_length"] = ref_lengths
        it = iter(rl)
        out["per_item"]["rouge_l"] = [None if ref is None else next(it) for ref in references]
        if distinguish and len(paired) >= 2:
            out["distinguishability"] = two_sample_test(refs, cands, paired=True, seed=seed).to_dict()
    if judge_pairs is not None:
        out["judge"] = M.aggregate_judge_scores(judge_pairs, seed=seed).to_dict()
    return out


def evaluate_generations(
    eval_set: EvalSet,
    generations: Generations,
    *,
    references: Sequence[str | None] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`evaluate_responses` over a set and its cached generations.

    ``references`` (in the set's item order) replace the set's own, e.g. the judge's answers for a
    set that has none. Other keyword arguments go to ``evaluate_responses`` (``judge_pairs`` in the
    set's item order, tokenizers, ``distinguish``, ``seed``).

    Raises ``ValueError`` naming the first items that have no generation, or whose cached prompt is
    not the set's (the set file changed since generation).
    """
    pending = pending_items(eval_set, generations)
    missing = [it.id for it in pending if (eval_set.name, it.id) not in generations]
    stale = [it.id for it in pending if (eval_set.name, it.id) in generations]
    if missing or stale:
        problems = []
        if missing:
            problems.append(f"{len(missing)} without a generation (first: {', '.join(missing[:5])})")
        if stale:
            problems.append(f"{len(stale)} generated for a different prompt (first: {', '.join(stale[:5])})")
        raise EvalDataError(f"set {eval_set.name} ({eval_set.path}): items " + "; ".join(problems))
    gens = [generations[(eval_set.name, it.id)] for it in eval_set]
    return evaluate_responses(
        [it.prompt for it in eval_set],
        [g.response for g in gens],
        [it.reference for it in eval_set] if references is None else list(references),
        ids=[it.id for it in eval_set],
        **kwargs,
    )
