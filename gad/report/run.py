"""One training run in the report: its curves, the last step's numbers, balance warnings, its settings.

The balance warnings (:mod:`gad.trainer.balance`, the checks a run makes as it goes) watch the
two-player game the paper describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gad.errors import InputNotFound
from gad.plots import figure
from gad.report.render import Doc
from gad.trainer.balance import CONDITIONS, balance_warnings
from gad.trainer.tracking import read_metrics, read_samples

CURVES = [
    ("reward/mean", "reward (D score of samples)"),
    ("disc/accuracy", "D accuracy (teacher above sample)"),
    ("disc/loss", "D loss"),
    ("policy/kl", "KL to reference"),
    ("gen/response_length_mean", "response length (tokens)"),
    ("policy/entropy", "policy entropy"),
    ("sft/nll", "cross-entropy on teacher answers"),
    ("val/d_accuracy", "held-out: D accuracy (teacher above greedy answer)"),
    ("val/distinguish_accuracy", "held-out: two-sample test accuracy (0.5 = indistinguishable)"),
    ("val/response_length_mean", "held-out: greedy answer length (tokens)"),
]
PHASES = ["rollout", "score", "disc_update", "reference", "policy_update", "sft_update"]
STAGE_ORDER = {"seqkd": 0, "warmup": 1, "train": 2, "offpolicy": 3}


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]


def plot_run(rows: list[dict[str, Any]], out: Path, title: str) -> Path:
    """One PNG: the curves that exist in this run, and the time per phase."""
    panels = [(k, label) for k, label in CURVES if _series(rows, k)]
    phases = [p for p in PHASES if _series(rows, f"time/{p}")]
    n = max(1, len(panels) + (1 if phases else 0))
    cols = 3
    rows_of_panels = (n + cols - 1) // cols
    with figure(out, rows_of_panels, cols, figsize=(12, 3.2 * rows_of_panels), squeeze=False, dpi=90) as (fig, axes):
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
    return out


def run_section(doc: Doc, run: Path, out: Path, level: int) -> None:
    """A heading, the last step, the balance warnings, the curves (a PNG in ``out``) and the settings of ``run``."""
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
    monitor = monitor_history(rows)
    if monitor:
        doc.para("The balance monitor during the run: " + "; ".join(monitor) + ".")
    elif any(k.startswith("balance/") for k in last):
        doc.para(f"The balance monitor during the run: checked at each of the {len(rows)} steps, no condition held.")
    samples_section(doc, read_samples(run), level + 1)
    if rows:
        png = plot_run(rows, out / f"{run.name}-curves.png", f"{run.name} ({stage})")
        doc.image(png.name, f"training curves of {run.name}")
    doc.details(f"settings of {run.name}", yaml.safe_dump(cfg, sort_keys=False))


def monitor_history(rows: list[dict[str, Any]]) -> list[str]:
    """When each ``balance/*`` condition held during the run (the monitor's flags, step by step)."""
    out = []
    for name in CONDITIONS:
        held = [r["step"] for r in rows if r.get(f"balance/{name}") == 1.0]
        if held:
            end = "still at the end" if rows[-1].get(f"balance/{name}") == 1.0 else f"last at step {held[-1]}"
            out.append(f"{name} held for {len(held)} steps from step {held[0]} ({end})")
    return out


def samples_section(doc: Doc, records: list[dict[str, Any]], level: int) -> None:
    """The latest logged samples (``samples.jsonl``): per prompt, the teacher's response and the
    student's samples by D's score; and how D ranked the teacher among its samples, step by step."""
    if not records:
        return
    last = max(r["step"] for r in records)
    doc.heading(level, f"Samples at step {last}")
    for r in (r for r in records if r["step"] == last):
        doc.para(f"Prompt: {r.get('prompt', r['id'])}")
        rows = [["teacher", f"{r['teacher_score']:.3g}", "", "", r["teacher"]]]
        for smp in sorted(r["samples"], key=lambda x: -x["reward"]):
            adv = "" if smp["advantage"] is None else f"{smp['advantage']:.3g}"
            rows.append(["sample", f"{smp['reward']:.3g}", adv, f"{smp['length']}{'' if smp['ended'] else ' (cut)'}", smp["text"]])
        doc.table(["", "D score (reward)", "advantage", "tokens", "text"], rows)
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_step.setdefault(r["step"], []).append(r)
    doc.para("Where D ranks the teacher's response among the student's samples (1 = above every sample): "
             "a rank that rises over the run means the student's samples catch up with the teacher's in D's eyes.")
    doc.table(["step", "prompts", "teacher's mean rank", "samples scored above the teacher"], [
        [str(step), str(len(rs)), f"{sum(r['teacher_rank'] for r in rs) / len(rs):.2f} of {len(rs[0]['samples']) + 1}",
         f"{sum(r['teacher_rank'] - 1 for r in rs) / sum(len(r['samples']) for r in rs):.0%}"]
        for step, rs in sorted(by_step.items())])


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
            raise InputNotFound(f"{p}: no metrics.jsonl here or in its subfolders (not a gad run or demo folder)")
        runs += sorted(subs, key=lambda s: STAGE_ORDER.get(_stage(s), 9))
    return runs


def _stage(run: Path) -> str:
    import yaml

    cfg = run / "config.yaml"
    return (yaml.safe_load(cfg.read_text()) or {}).get("stage", "") if cfg.exists() else ""
