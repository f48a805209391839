"""From responses to numbers to a report: ``results.json``, ``report.md`` and PNG plots.

:func:`evaluate_responses` is what ``gad eval`` calls once per (model, set) with parallel lists of
prompts, student responses and reference responses (``None`` where a set has no reference); it
returns a JSON-ready dict. The results of several models and sets are a nested dict
``{model: {set: metrics}}`` that :func:`write_results` and :func:`write_eval_report` turn into files.

``results.json``::

    {"format": "gad-eval-results", "version": 1,
     "models": {"gad": {"vicuna80": {"n": 80, "n_reference": 80,
                                     "ngram_f1": {"1": 0.41, ..., "6": 0.05},
                                     "rouge_l": {"value", "low", "high", "n"},
                                     "length": {"n", "mean", "median", "p90", "max", "min"},
                                     "length_unit": "words",
                                     "reference_length": {...},
                                     "distinguishability": {"accuracy", "low", "high", "p_value", "n", "folds"},
                                     "judge": {"score", "low", "high", "n_scored", "n_failed", "per_item",
                                               "model", "failures": [{"id", "reason"}]},   # gad eval
                                     "reference_source": "set" | "judge:<model>" | null,  # gad eval
                                     "n_truncated": 3,     # answers that hit max_new_tokens (gad eval)
                                     "per_item": {"id": [...], "length": [...], "reference_length": [...],
                                                  "rouge_l": [...]}}}}}

Keys whose metric could not be computed (no references, no judge) are ``null``, and so is NaN.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gad.eval import metrics as M
from gad.eval.distinguish import two_sample_test

RESULTS_FORMAT = "gad-eval-results"
NGRAM_NS = tuple(range(1, 7))

Results = dict[str, dict[str, dict[str, Any]]]  # model -> set -> metrics


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
        f1 = M.ngram_f1_by_n(cands, refs, NGRAM_NS, overlap_tokenize)
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


# ---------------------------------------------------------------------------------------------------
# Files


def write_results(results: Results, out_dir: str | os.PathLike) -> Path:
    """Writes ``out_dir/results.json`` (see the module docstring) and returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    payload = {"format": RESULTS_FORMAT, "version": 1, "models": _nan_to_none(results)}
    path.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _nan_to_none(x: Any) -> Any:
    """NaN (e.g. a judge score with nothing scored) becomes null: strict JSON for other tools."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def read_results(path: str | os.PathLike) -> Results:
    """The ``models`` mapping of a ``results.json`` written by :func:`write_results`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise ValueError(f'{path}: not a gad eval results file (expected "format": "{RESULTS_FORMAT}")')
    return data["models"]


def _sets(results: Results) -> list[str]:
    names: list[str] = []
    for per_set in results.values():
        names += [s for s in per_set if s not in names]
    return names


def fmt_number(x: float | None, fmt: str = "{:.3f}") -> str:
    """A table cell: "–" for a missing or NaN number."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _interval(d: dict | None, key: str, fmt: str) -> str:
    if not d or d.get(key) is None or math.isnan(d[key]) or d.get("low") is None:
        return "–"
    return f"{fmt.format(d[key])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def _judge_cell(j: dict | None) -> str:
    if not j:
        return "–"
    cell = _interval(j, "score", "{:.1f}")
    return cell + (f" ({j['n_failed']} failed)" if j.get("n_failed") else "")


def set_table(results: Results, set_name: str) -> str:
    """A markdown table for one set: one row per model, plus the reference's lengths."""
    head = ["model", "judge", "ROUGE-L"] + [f"F1@{n}" for n in NGRAM_NS]
    unit = next((p[set_name].get("length_unit") for p in results.values() if set_name in p), None) or "tokens"
    head += [f"len mean ({unit})", "len median", "len p90", "distinguish acc"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    reference_length = None
    for model, per_set in results.items():
        m = per_set.get(set_name)
        if m is None:
            continue
        f1 = m.get("ngram_f1") or {}
        length = m["length"]
        row = [model, _judge_cell(m.get("judge")), _interval(m.get("rouge_l"), "value", "{:.3f}")]
        row += [fmt_number(f1.get(str(n))) for n in NGRAM_NS]
        row += [
            fmt_number(length["mean"], "{:.1f}"),
            fmt_number(length["median"], "{:.1f}"),
            fmt_number(length["p90"], "{:.1f}"),
        ]
        row += [_interval(m.get("distinguishability"), "accuracy", "{:.3f}")]
        lines.append("| " + " | ".join(row) + " |")
        reference_length = reference_length or m.get("reference_length")
    if reference_length:
        r = reference_length
        row = ["*reference*", "–", "–"] + ["–"] * len(NGRAM_NS)
        row += [fmt_number(r["mean"], "{:.1f}"), fmt_number(r["median"], "{:.1f}"), fmt_number(r["p90"], "{:.1f}"), "–"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def comparison_table(results: Results) -> str:
    """One markdown table, models × sets: judge score (when judged), ROUGE-L, distinguishability."""
    sets = _sets(results)
    lines = ["| model | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for model, per_set in results.items():
        cells = []
        for s in sets:
            m = per_set.get(s)
            if m is None:
                cells.append("–")
                continue
            parts = []
            if m.get("judge"):
                parts.append(f"judge {_judge_cell(m['judge'])}")
            if m.get("rouge_l"):
                parts.append(f"RL {m['rouge_l']['value']:.3f}")
            if m.get("distinguishability"):
                parts.append(f"D {100 * m['distinguishability']['accuracy']:.0f}%")
            parts.append(f"len {m['length']['mean']:.0f}")
            cells.append(" · ".join(parts))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_lengths(results: Results, set_name: str, path: Path) -> Path | None:
    """Overlaid histograms of response lengths for each model and the reference."""
    series: dict[str, list[int]] = {}
    for per_set in results.values():
        ref = per_set.get(set_name, {}).get("per_item", {}).get("reference_length")
        if ref:
            series["reference"] = [x for x in ref if x is not None]
            break
    for model, per_set in results.items():
        if set_name in per_set:
            series[model] = per_set[set_name]["per_item"]["length"]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    top = max(max(v, default=0) for v in series.values())
    bins = list(range(0, top + max(1, top // 30) + 1, max(1, top // 30)))
    for label, values in series.items():
        if label == "reference":  # the background the models are compared against
            ax.hist(values, bins=bins, color="0.8", label=label, histtype="stepfilled")
        else:
            ax.hist(values, bins=bins, label=label, histtype="step", linewidth=1.8)
    unit = next((p[set_name].get("length_unit") for p in results.values() if set_name in p), None) or "tokens"
    ax.set_xlabel(f"response length ({unit})")
    ax.set_ylabel("responses")
    ax.set_title(f"{set_name}: response lengths")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_ngram_f1(results: Results, set_name: str, path: Path) -> Path | None:
    """N-gram overlap F1 against n, one line per model (the paper's Fig. 4)."""
    series = {
        model: per_set[set_name]["ngram_f1"]
        for model, per_set in results.items()
        if set_name in per_set and per_set[set_name].get("ngram_f1")
    }
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for model, f1 in series.items():
        ax.plot(NGRAM_NS, [f1[str(n)] for n in NGRAM_NS], marker="o", label=model)
    ax.set_xlabel("n")
    ax.set_ylabel("n-gram overlap F1 with the reference")
    ax.set_xticks(NGRAM_NS)
    ax.set_title(f"{set_name}: n-gram overlap")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _judge_failures(results: Results, set_name: str) -> list[str]:
    """Markdown lines listing the prompts the judge could not score, with the reason (none: [])."""
    lines = []
    for model, per_set in results.items():
        for f in ((per_set.get(set_name) or {}).get("judge") or {}).get("failures") or []:
            lines.append(f"- {model} · {f['id']}: {f['reason']}")
    if not lines:
        return []
    return ["Judge failures (left out of the score, never scored):", "", *lines, ""]


def write_eval_report(
    results: Results, out_dir: str | os.PathLike, *, plots: bool = True, title: str = "Evaluation"
) -> Path:
    """Writes ``out_dir/report.md`` (a comparison table, then a table and plots per set) and the PNGs
    it links; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Models: {', '.join(results)}.", ""]
    lines += [
        "Judge: `s_student / (s_student + s_ref) × 100` averaged over prompts, 95% bootstrap interval "
        "(50 = rated like the reference). ROUGE-L and n-gram F1 against the reference. Distinguishability: "
        "cross-validated accuracy of a TF-IDF + logistic-regression classifier telling student from "
        "reference responses on held-out prompts (50% = indistinguishable), 95% Wilson interval.",
        "",
        "## Comparison",
        "",
        comparison_table(results),
        "",
    ]
    for s in _sets(results):
        n = max(per_set[s]["n"] for per_set in results.values() if s in per_set)
        lines += [f"## {s} ({n} prompts)", ""]
        source = next((p[s].get("reference_source") for p in results.values() if s in p), None)
        if source:
            lines += [f"Reference: {'the set' if source == 'set' else source.replace(':', ' ', 1) + ' answers'}.", ""]
        lines += [set_table(results, s), ""]
        if plots:
            for kind, fn in (("lengths", plot_lengths), ("ngram-f1", plot_ngram_f1)):
                png = fn(results, s, out / f"{_slug(s)}-{kind}.png")
                if png is not None:
                    lines += [f"![{s} {kind}]({png.name})", ""]
        lines += _judge_failures(results, s)
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
