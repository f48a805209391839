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
from gad.trainer.balance import balance_warnings
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
            raise InputNotFound(f"{p}: no metrics.jsonl here or in its subfolders (not a gad run or demo folder)")
        runs += sorted(subs, key=lambda s: STAGE_ORDER.get(_stage(s), 9))
    return runs


def _stage(run: Path) -> str:
    import yaml

    cfg = run / "config.yaml"
    return (yaml.safe_load(cfg.read_text()) or {}).get("stage", "") if cfg.exists() else ""
