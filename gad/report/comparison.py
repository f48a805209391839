"""The demo's comparison: the untrained, SeqKD and GAD students against the teacher on held-out
prompts, the verdict that compares them, and their answers side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gad.eval.report import LIKELIHOODS, fmt_number
from gad.report.render import Doc


def style_rate(texts: list[str], marker: str) -> float | None:
    """Share of answers that open with ``marker`` (case and leading space ignored)."""
    if not texts:
        return None
    return sum(t.strip().lower().startswith(marker.lower()) for t in texts) / len(texts)


def comparison(results: dict[str, Any], answers: dict[str, list[str]], teacher: list[str],
               marker: str | None) -> tuple[list[str], list[list[str]], dict[str, dict[str, float]]]:
    """The comparison table (head, rows) and the numbers the verdict compares, per student."""
    kinds = [k for k in LIKELIHOODS if any(m.get(k) for m in results.values())]
    head = ["model"] + ([f'style ("{marker}")'] if marker else []) + [
        "distinguishable from teacher (acc, 95% CI; 0.5 = not at all)", "F1@1", "F1@2", "ROUGE-L",
        *(LIKELIHOOD_HEADS[k] for k in kinds), "length mean", "cut at max tokens"]
    rows, nums = [], {}
    ref_len = None
    for name, m in results.items():
        d, f1, rl = m.get("distinguishability") or {}, m.get("ngram_f1") or {}, m.get("rouge_l") or {}
        ref_len = ref_len or (m.get("reference_length") or {}).get("mean")
        nums[name] = {"distinguishability": d.get("accuracy"), "F1@1": f1.get("1"), "F1@2": f1.get("2"),
                      "ROUGE-L": rl.get("value"), "length": m["length"]["mean"]}
        row = [name]
        if marker:
            nums[name]["style"] = style_rate(answers.get(name, []), marker)
            row.append(fmt_number(nums[name]["style"], "{:.0%}"))
        row += [f"{fmt_number(d.get('accuracy'))} [{fmt_number(d.get('low'))}, {fmt_number(d.get('high'))}]" if d else "–",
                fmt_number(f1.get("1")), fmt_number(f1.get("2")), fmt_number(rl.get("value")),
                *(likelihood_cell(m.get(k)) for k in kinds), fmt_number(m["length"]["mean"], "{:.1f}"),
                f"{m.get('n_truncated', 0)}/{m['n']}"]
        nums[name].update({k: (m.get(k) or {}).get("value") for k in kinds})
        rows.append(row)
    t_row = ["teacher"] + ([fmt_number(style_rate(teacher, marker), "{:.0%}")] if marker else [])
    rows.append(t_row + ["–", "1", "1", "1", *("–" for _ in kinds), fmt_number(ref_len, "{:.1f}"), "–"])
    nums["teacher"] = {"length": ref_len or 0.0, "style": style_rate(teacher, marker) if marker else None}
    return head, rows, nums


LIKELIHOOD_HEADS = {"precision": "precision: teacher's log-lik. of the answer / token (95% CI)",
                    "coverage": "coverage: log-lik. of the teacher's answers / token (95% CI)"}


def interval_cell(e: dict[str, Any] | None, fmt: str = "{:.3f}") -> str:
    """``value [low, high]`` of an estimate, "–" when there is none."""
    if not e or e.get("value") is None:
        return "–"
    return f"{fmt.format(e['value'])} [{fmt.format(e['low'])}, {fmt.format(e['high'])}]"


def likelihood_cell(e: dict[str, Any] | None) -> str:
    """A precision or coverage cell: the estimate, and how many answers were scored when some were not."""
    if not e:
        return "–"
    skipped = e.get("n_skipped") or 0
    return interval_cell(e) + (f" ({e['n']} of {e['n'] + skipped} answers scored)" if skipped else "")


def paired_rows(results: dict[str, Any]) -> list[list[str]]:
    """Paired differences of precision and coverage per token between students (later − earlier in
    the results' order: SeqKD − untrained, GAD − untrained, GAD − SeqKD), 95% paired intervals."""
    rows = []
    for kind in LIKELIHOODS:
        for name, m in results.items():
            for other, d in ((m.get(kind) or {}).get("paired") or {}).items():
                if d:
                    rows.append([kind, f"{name} − {other}", interval_cell(d, "{:+.3g}"), str(d["n"]),
                                 "yes" if d["low"] > 0 or d["high"] < 0 else "no"])
    return rows


TIES = {"distinguishability": 0.01, "F1@1": 0.01, "F1@2": 0.01, "ROUGE-L": 0.01, "length": 1.0, "style": 0.0}
"""Differences up to these count as ties: on a few dozen prompts, smaller ones are noise."""


def closer(nums: dict[str, dict[str, float]], a: str, b: str) -> tuple[list[str], list[str], list[str]]:
    """Measures on which student ``a`` is closer to the teacher than ``b``, farther, and tied
    (within :data:`TIES`)."""
    t = nums["teacher"]
    better, worse, tied = [], [], []
    for key, sign in (("distinguishability", -1), ("F1@1", 1), ("F1@2", 1), ("ROUGE-L", 1), ("length", 0), ("style", 0)):
        x, y = nums[a].get(key), nums[b].get(key)
        if x is None or y is None:
            continue
        if sign == 0:  # closer to the teacher's value
            x, y, sign = -abs(x - t[key]), -abs(y - t[key]), 1
        if abs(x - y) <= TIES[key] + 1e-12:
            tied.append(key)
        else:
            (better if sign * (x - y) > 0 else worse).append(key)
    return better, worse, tied


def _verdict(nums: dict[str, dict[str, float]], a: str, b: str) -> str:
    better, worse, tied = closer(nums, a, b)
    parts = [f"closer to the teacher on {', '.join(better)}" if better else "closer on no measure"]
    if worse:
        parts.append(f"farther on {', '.join(worse)}")
    if tied:
        parts.append(f"tied on {', '.join(tied)}")
    return "; ".join(parts) + "."


def demo_sections(doc: Doc, root: Path, manifest: dict[str, Any]) -> None:
    from gad.eval.generations import read_generations
    from gad.eval.results import read_results
    from gad.teacher import read_rows

    results_path = root / "eval" / "results.json"
    if not results_path.exists():
        doc.para("The evaluation has not run yet: run the demo again to finish it.", "warn")
        return
    results = read_results(results_path)
    heldout = read_rows(root / "teacher-heldout.jsonl")
    teacher = {r["id"]: r["teacher_response"] for r in heldout}
    per_model = {name: next(iter(sets.values())) for name, sets in results.items() if sets}
    gens = {name: {g.id: g.response for g in read_generations(root / "eval" / name).values()} for name in per_model}
    answers = {name: [g.get(i, "") for i in teacher] for name, g in gens.items()}
    marker = manifest.get("style_marker")
    head, rows, nums = comparison(per_model, answers, list(teacher.values()), marker)

    n = next(iter(per_model.values()))["n"] if per_model else 0
    if {"gad", "untrained"} <= nums.keys():
        verdict = f"On {n} held-out prompts, the GAD student against the untrained one: {_verdict(nums, 'gad', 'untrained')}"
        if "seqkd" in nums:
            verdict += f" Against SeqKD: {_verdict(nums, 'gad', 'seqkd')}"
        doc.para(verdict + " (Ties: differences up to 0.01, one token of mean length, or no prompt of style.)",
                 "verdict")
    doc.heading(2, f"Held-out comparison ({n} prompts, greedy answers)")
    doc.table(head, rows)
    unit = next(iter(per_model.values())).get("length_unit", "tokens") if per_model else "tokens"
    doc.para(f"Distinguishability: cross-validated accuracy of a TF-IDF + logistic-regression classifier telling "
             f"the student's answers from the teacher's (lower is closer). F1@n: n-gram overlap with the teacher's "
             f"answer. Lengths in {unit}. "
             + (f"Style: share of answers that open with \"{marker}\", the hidden context's signature. " if marker else "")
             + "Brackets: 95% intervals; at this size, differences inside them are noise. Lengths and truncation "
               "matter when reading the overlap numbers: an answer cut at the token limit cannot end like the teacher's.")
    scorer = next((m["precision"]["scorer"] for m in per_model.values() if m.get("precision")), None)
    if any(m.get(k) for m in per_model.values() for k in LIKELIHOODS):
        doc.para("Precision: the teacher's own log-likelihood of each student answer"
                 + (f" (teacher: {scorer})" if scorer else "")
                 + "; coverage: the student's log-likelihood of each teacher answer. Both mean nats per token of the "
                   "scoring model's tokenizer (the answer's tokens, plus EOS when the answer ended rather than hit "
                   "the token limit), averaged over prompts; higher is closer to the teacher. An empty answer cut at "
                   "the token limit (only special tokens, which decode to nothing) has no token to score.")
        paired = paired_rows(per_model)
        if paired:
            doc.table(["measure", "A − B", "difference / token (95% paired CI)", "prompts", "interval excludes 0"],
                      paired)

    k = manifest.get("plan", {}).get("examples", 4)
    doc.heading(2, "Answers side by side")
    for item in heldout[:k]:
        prompt = item["messages"][-1]["content"]
        doc.answers(prompt, [("teacher", item["teacher_response"])]
                    + [(name, gens[name].get(item["id"], "(no answer)")) for name in gens])


