"""An evaluation's results rendered: ``report.md`` (a comparison table, a table per set), PNG plots.

The numbers come from ``results.json`` (:mod:`gad.eval.results`); nothing here computes a metric.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from gad.eval.metrics import NGRAM_NS
from gad.eval.names import slug
from gad.eval.results import Results
from gad.plots import figure


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
    with figure(path, figsize=(6.4, 3.6)) as (fig, ax):
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
    with figure(path, figsize=(6.4, 3.6)) as (fig, ax):
        for model, f1 in series.items():
            ax.plot(NGRAM_NS, [f1[str(n)] for n in NGRAM_NS], marker="o", label=model)
        ax.set_xlabel("n")
        ax.set_ylabel("n-gram overlap F1 with the reference")
        ax.set_xticks(NGRAM_NS)
        ax.set_title(f"{set_name}: n-gram overlap")
        ax.legend()
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
                png = fn(results, s, out / f"{slug(s)}-{kind}.png")
                if png is not None:
                    lines += [f"![{s} {kind}]({png.name})", ""]
        lines += _judge_failures(results, s)
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
