'''``gad report RUN_DIR ...``: what a run (or a whole demo) did, as ``report.html`` and ``report.md``.

Reads only what the folders already hold and writes the two pages plus PNG curves:

- a training run (``metrics.jsonl``, ``config.yaml``): curves (reward, D accuracy and loss, KL,
  length, entropy, seconds per phase), the last step's numbers, balance warnings, the settings
  (:mod:`gad.report.run`);
- a demo folder (``demo.json``, stage subfolders, ``eval/``): first the comparison of the untrained,
  SeqKD and GAD students on the held-out prompts, a verdict, answers side by side
  (:mod:`gad.report.comparison`), then every stage.

Both pages are rendered from one :class:`gad.report.render.Doc`, so they never drift apart.
'''

from __future__ import annotations

import json
from pathlib import Path

from gad.report.comparison import demo_sections
from gad.report.render import Doc
from gad.report.run import balance_warnings, find_runs, run_section

__all__ = ["balance_warnings", "write_run_report"]


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
        demo_sections(doc, demo, manifest)
    else:
        manifest, title = {}, "gad report"
        doc.heading(1, title)
    doc.heading(2, "Training")
    for run in runs:
        run_section(doc, run, out, 3 if demo is not None else 2)
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
