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


LIKELIHOODS = ("precision", "coverage")


def has_likelihoods(results: Results) -> bool:
    """Whether any (model, set) holds a precision or coverage estimate."""
    return any(m.get(k) for per_set in results.values() for m in per_set.values() for k in LIKELIHOODS)


def likelihood_table(results: Results) -> str:
    """Precision and coverage per (model, set): mean log-probability per token [95% interval], the
    answers and tokens scored (:mod:`gad.eval.likelihood`)."""
    head = ["model", "set", "precision / token [95% CI]", "answers (tokens)", "coverage / token [95% CI]",
            "answers (tokens)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, per_set in results.items():
        for s, m in per_set.items():
            if not any(m.get(k) for k in LIKELIHOODS):
                continue
            row = [model, s]
            for k in LIKELIHOODS:
                e = m.get(k)
                row += [_interval(e, "value", "{:.3f}"), _scored(e)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _scored(e: dict | None) -> str:
    """Answers scored (tokens), and of how many when some could not be."""
    if not e:
        return "–"
    skipped = e.get("n_skipped") or 0
    return f"{e['n']}" + (f" of {e['n'] + skipped}" if skipped else "") + f" ({e['n_tokens']})"


def paired_table(results: Results) -> str:
    """Paired differences of precision and coverage per token (model A − model B on the same
    prompts, 95% paired bootstrap interval); empty when there is a single model."""
    head = ["set", "measure", "A − B", "difference / token [95% CI]", "prompts"]
    rows = []
    for model, per_set in results.items():
        for s, m in per_set.items():
            for k in LIKELIHOODS:
                for other, d in ((m.get(k) or {}).get("paired") or {}).items():
                    if d:
                        rows.append([s, k, f"{model} − {other}", _interval(d, "value", "{:+.3g}"), str(d["n"])])
    if not rows:
        return ""
    rows.sort(key=lambda r: (r[0], r[1]))
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


LIKELIHOOD_NOTE = (
    "Precision: the local teacher's log-likelihood of each student answer under the teacher's full "
    "context (hidden messages, prompt, its chat template); coverage: the student's log-likelihood of "
    "each teacher answer of a teacher set. Both in nats per token of the scoring model's tokenizer, "
    "the answer's tokens plus EOS when the answer ended (not when cut at the token budget); mean over "
    "answers of each answer's mean, 95% bootstrap interval over answers; higher is closer to the teacher. "
    "Paired differences: mean over the same prompts of A's minus B's per-token value, 95% paired "
    "bootstrap interval (one that excludes 0 is a difference the prompts support)."
)


def likelihood_lines(results: Results) -> list[str]:
    """The report's precision/coverage section (none when nothing was measured)."""
    if not has_likelihoods(results):
        return []
    lines = ["## Precision and coverage", "", LIKELIHOOD_NOTE, "", likelihood_table(results), ""]
    scorer = next((m["precision"]["scorer"] for p in results.values() for m in p.values() if m.get("precision")), None)
    if scorer:
        lines[4:4] = [f"Teacher: {scorer}.", ""]
    paired = paired_table(results)
    return lines + ([paired, ""] if paired else [])


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
        *likelihood_lines(results),
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
