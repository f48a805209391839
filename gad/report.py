"""``gad report RUN_DIR ...``: what a run (or a whole demo) did, as ``report.html`` and ``report.md``.

Reads only what the folders already hold and writes the two pages plus PNG curves:

- a training run (``metrics.jsonl``, ``config.yaml``): curves (reward, D accuracy and loss, KL,
  length, entropy, seconds per phase), the last step's numbers, balance warnings, the settings;
- a demo folder (``demo.json``, stage subfolders, ``eval/``): first the comparison of the untrained,
  SeqKD and GAD students on the held-out prompts, a verdict, answers side by side, then every stage.

The balance warnings watch the two-player game the paper describes: a discriminator that always wins
gives the generator no signal; a reward that climbs while responses grow fast looks like reward
hacking; a collapsing entropy means the policy stopped exploring.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gad.eval.report import fmt_number
from gad.trainer.tracking import read_metrics

CURVES = [
    ("reward/mean", "reward (D score of samples)"),
    ("disc/accuracy", "D accuracy (teacher above sample)"),
    ("disc/loss", "D loss"),
    ("policy/kl", "KL to reference"),
    ("gen/response_length_mean", "response length (tokens)"),
    ("policy/entropy", "policy entropy"),
    ("sft/nll", "cross-entropy on teacher answers"),
]
PHASES = ["rollout", "score", "disc_update", "reference", "policy_update", "sft_update"]
STAGE_ORDER = {"seqkd": 0, "warmup": 1, "train": 2, "offpolicy": 3}


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]


def _mean(xs: list[tuple[int, float]]) -> float:
    return sum(v for _, v in xs) / len(xs)


def balance_warnings(
    rows: list[dict[str, Any]], window: int = 5, d_acc_max: float = 0.95, length_growth: float = 1.5,
    entropy_drop: float = 0.3,
) -> list[str]:
    """Plain-language warnings from one run's metrics; empty when the game looks balanced.

    - D accuracy above ``d_acc_max`` over the last ``window`` steps: D too strong, G gets no signal.
    - reward rising while the mean length grew by more than ``length_growth``× from the first to the
      last window: possible reward hacking through length.
    - entropy in the last window below ``entropy_drop`` × the first window's: entropy collapse.

    The trends compare the first and last ``window`` steps, shrunk to half the run when it is shorter
    than two windows (a run of under 4 steps has no trend).
    """
    out = []
    acc = _series(rows, "disc/accuracy")
    if len(acc) >= window and _mean(acc[-window:]) > d_acc_max:
        out.append(f"D accuracy stuck above {d_acc_max:.2f} (mean {_mean(acc[-window:]):.3f} over the last "
                   f"{window} steps): the discriminator is too strong and the generator gets little signal; "
                   "consider a lower discriminator.lr or more generator steps")

    def trend(key: str) -> tuple[float, float] | None:
        xs = _series(rows, key)
        w = min(window, len(xs) // 2)
        return (_mean(xs[:w]), _mean(xs[-w:])) if w >= 2 else None

    reward, length = trend("reward/mean"), trend("gen/response_length_mean")
    if reward and length:
        (r0, r1), (l0, l1) = reward, length
        if r1 > r0 and l0 > 0 and l1 / l0 > length_growth:
            out.append(f"reward rising ({r0:.3g} → {r1:.3g}) while responses grow fast ({l0:.1f} → {l1:.1f} "
                       "tokens): possible reward hacking; check samples and the discriminator's accuracy")
    ent = trend("policy/entropy")
    if ent and ent[0] > 0 and ent[1] < entropy_drop * ent[0]:
        out.append(f"entropy collapse ({ent[0]:.3g} → {ent[1]:.3g}): the policy has stopped exploring")
    return out


def plot_run(rows: list[dict[str, Any]], out: Path, title: str) -> Path:
    """One PNG: the curves that exist in this run, and the time per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, label) for k, label in CURVES if _series(rows, k)]
    phases = [p for p in PHASES if _series(rows, f"time/{p}")]
    n = max(1, len(panels) + (1 if phases else 0))
    cols = 3
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(12, 3.2 * ((n + cols - 1) // cols)), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels):
        xs, ys = zip(*_series(rows, key))
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
    if phases:
        ax = axes.flat[len(panels)]
        for p in phases:
            xs, ys = zip(*_series(rows, f"time/{p}"))
            ax.plot(xs, ys, label=p, marker="." if len(xs) < 30 else None)
        ax.set_title("seconds per phase", fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) + (1 if phases else 0):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------------
# One document, two renderings


@dataclass
class Doc:
    """Blocks rendered the same way to Markdown and to HTML, so the two pages never drift apart."""

    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.md += ["#" * level + " " + text, ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str, cls: str = "") -> None:
        self.md += [text, ""]
        self.html.append(f"<p class='{cls}'>{html.escape(text)}</p>" if cls else f"<p>{html.escape(text)}</p>")

    def bullets(self, items: list[str], cls: str = "") -> None:
        self.md += [f"- {i}" for i in items] + [""]
        self.html.append(f"<ul class='{cls}'>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        self.md += ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
        self.md += ["| " + " | ".join(map(cell, r)) + " |" for r in rows] + [""]
        self.html.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                                   for r in rows) + "</table>")

    def image(self, name: str, alt: str) -> None:
        self.md += [f"![{alt}]({name})", ""]
        self.html.append(f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">')

    def details(self, summary: str, text: str) -> None:
        self.md += [f"<details><summary>{summary}</summary>", "", "```", text.strip(), "```", "</details>", ""]
        self.html.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")

    def answers(self, prompt: str, answers: list[tuple[str, str]]) -> None:
        """One prompt and each model's answer, side by side in HTML, one after another in Markdown."""
        self.md += [f"**Prompt:** {prompt}", ""] + [f"- *{who}:* " + (text.strip() or "(empty)").replace("\n", "\n  ") for who, text in answers] + [""]
        self.html.append("<div class='example'><p class='prompt'><b>Prompt:</b> " + html.escape(prompt) + "</p>"
                         "<div class='answers'>" + "".join(
                             f"<div><h4>{html.escape(who)}</h4><p>{html.escape(text.strip() or '(empty)')}</p></div>"
                             for who, text in answers) + "</div></div>")

    def write(self, out: Path, title: str) -> Path:
        (out / "report.md").write_text("\n".join(self.md) + "\n", encoding="utf-8")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
                "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
                "img{max-width:100%}.warn li{color:#a40}.verdict{font-size:1.1em;background:#eef6ee;padding:.6em}"
                "pre{background:#f6f6f6;padding:.5em;overflow:auto;font-size:.85em}"
                "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
                ".answers{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:.6em}"
                ".answers div{background:#f8f8fb;padding:.4em .6em;border-radius:4px;font-size:.9em}"
                ".answers p{white-space:pre-wrap}.answers h4{margin:.2em 0}.example{margin-bottom:1.5em}"
                "</style></head><body>" + "\n".join(self.html) + "</body></html>")
        (out / "report.html").write_text(page, encoding="utf-8")
        return out / "report.html"


# ---------------------------------------------------------------------------------------------------
# The demo's comparison: untrained vs SeqKD vs GAD on held-out prompts


def style_rate(texts: list[str], marker: str) -> float | None:
    """Share of answers that open with ``marker`` (case and leading space ignored)."""
    if not texts:
        return None
    return sum(t.strip().lower().startswith(marker.lower()) for t in texts) / len(texts)


def comparison(results: dict[str, Any], answers: dict[str, list[str]], teacher: list[str],
               marker: str | None) -> tuple[list[str], list[list[str]], dict[str, dict[str, float]]]:
    """The comparison table (head, rows) and the numbers the verdict compares, per student."""
    head = ["model"] + ([f'style ("{marker}")'] if marker else []) + [
        "distinguishable from teacher (acc, 95% CI; 0.5 = not at all)", "F1@1", "F1@2", "ROUGE-L", "length mean",
        "cut at max tokens"]
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
                fmt_number(f1.get("1")), fmt_number(f1.get("2")), fmt_number(rl.get("value")), fmt_number(m["length"]["mean"], "{:.1f}"),
                f"{m.get('n_truncated', 0)}/{m['n']}"]
        rows.append(row)
    t_row = ["teacher"] + ([fmt_number(style_rate(teacher, marker), "{:.0%}")] if marker else [])
    rows.append(t_row + ["–", "1", "1", "1", fmt_number(ref_len, "{:.1f}"), "–"])
    nums["teacher"] = {"length": ref_len or 0.0, "style": style_rate(teacher, marker) if marker else None}
    return head, rows, nums


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


def _demo_sections(doc: Doc, root: Path, manifest: dict[str, Any]) -> None:
    from gad.eval.generations import read_generations
    from gad.eval.report import read_results
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

    k = manifest.get("plan", {}).get("examples", 4)
    doc.heading(2, "Answers side by side")
    for item in heldout[:k]:
        prompt = item["messages"][-1]["content"]
        doc.answers(prompt, [("teacher", item["teacher_response"])]
                    + [(name, gens[name].get(item["id"], "(no answer)")) for name in gens])


def _run_section(doc: Doc, run: Path, out: Path, level: int) -> None:
    import yaml

    rows = read_metrics(run)
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    stage = cfg.get("stage", "?")
    doc.heading(level, f"{run.name} (stage {stage}, {len(rows)} steps)")
    last = rows[-1] if rows else {}
    summary = [f"{k} {last[k]:.4g}" if isinstance(last[k], float) else f"{k} {last[k]}"
               for k in ("step", "reward/mean", "disc/accuracy", "policy/kl", "gen/response_length_mean",
                         "sft/nll", "time/step") if k in last]
    doc.para("Last step: " + ", ".join(summary) if summary else "No steps logged yet.")
    warnings = balance_warnings(rows)
    if warnings:
        doc.bullets([f"warning: {w}" for w in warnings], "warn")
    else:
        doc.para("No balance warnings.")
    if rows:
        png = plot_run(rows, out / f"{run.name}-curves.png", f"{run.name} ({stage})")
        doc.image(png.name, f"training curves of {run.name}")
    doc.details(f"settings of {run.name}", yaml.safe_dump(cfg, sort_keys=False))


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders (with ``metrics.jsonl``) among ``paths`` and their direct subfolders, in
    pipeline order for a demo folder."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.jsonl").exists():
            runs.append(p)
            continue
        subs = [s for s in sorted(p.iterdir()) if (s / "metrics.jsonl").exists()] if p.is_dir() else []
        if not subs and not (p / "demo.json").exists():
            raise FileNotFoundError(f"{p}: no metrics.jsonl here or in its subfolders (not a gad run or demo folder)")
        runs += sorted(subs, key=lambda s: STAGE_ORDER.get(_stage(s), 9))
    return runs


def _stage(run: Path) -> str:
    import yaml

    cfg = run / "config.yaml"
    return (yaml.safe_load(cfg.read_text()) or {}).get("stage", "") if cfg.exists() else ""


def write_run_report(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """report.md + report.html (+ PNG curves) for run folders and/or a demo folder; returns the HTML path."""
    paths = [Path(p) for p in paths]
    runs = find_runs(paths)
    out = Path(out) if out else paths[0]
    out.mkdir(parents=True, exist_ok=True)
    doc = Doc()
    demo = next((p for p in paths if (p / "demo.json").exists()), None)
    if demo is not None:
        manifest = json.loads((demo / "demo.json").read_text())
        title = "gad demo report"
        doc.heading(1, title)
        doc.para(f"Student {manifest['student']}; black-box teacher {manifest['teacher']}. Pipeline: teacher "
                 "collection → SeqKD → discriminator warmup (from the SeqKD student) → GAD → evaluation of the "
                 "untrained, SeqKD and GAD students on held-out prompts the training never saw."
                 + (" Quick run: too few steps to mean much." if manifest.get("quick") else ""))
        _demo_sections(doc, demo, manifest)
    else:
        manifest, title = {}, "gad report"
        doc.heading(1, title)
    doc.heading(2, "Training")
    for run in runs:
        _run_section(doc, run, out, 3 if demo is not None else 2)
    if manifest:
        doc.heading(2, "Settings")
        seconds = manifest.get("seconds") or {}
        if seconds:
            doc.table(["phase", *seconds, "total"],
                      [["seconds", *(f"{v:.0f}" for v in seconds.values()), f"{sum(seconds.values()):.0f}"]])
        doc.details("demo plan", json.dumps(manifest.get("plan", {}), indent=1))
        if manifest.get("hidden_context"):
            doc.details("the teacher's hidden context (never shown to the student)",
                        "\n".join(f"{m['role']}: {m['content']}" for m in manifest["hidden_context"]))
    return doc.write(out, title)
