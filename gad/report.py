"""``gad report RUN_DIR ...``: training curves, settings and adversarial-balance warnings of runs.

Reads only what a run folder already holds (``metrics.jsonl``, ``config.yaml``) and writes
``report.md``, ``report.html`` and PNG curves. The warnings watch the two-player game the paper
describes: a discriminator that always wins gives the generator no signal; a reward that climbs
while responses grow fast looks like reward hacking; a collapsing entropy means the policy stopped
exploring.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from gad.trainer.tracking import read_metrics

CURVES = [
    ("reward/mean", "reward (D score of samples)"),
    ("disc/accuracy", "D accuracy (teacher above sample)"),
    ("disc/loss", "D loss"),
    ("policy/kl", "KL to reference"),
    ("gen/response_length_mean", "response length (tokens)"),
    ("policy/entropy", "policy entropy"),
]
PHASES = ["rollout", "score", "disc_update", "reference", "policy_update", "sft_update"]


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]


def balance_warnings(
    rows: list[dict[str, Any]], window: int = 5, d_acc_max: float = 0.95, length_growth: float = 1.5,
    entropy_drop: float = 0.3,
) -> list[str]:
    """Plain-language warnings from one run's metrics; empty when the game looks balanced.

    - D accuracy above ``d_acc_max`` over the last ``window`` steps: D too strong, G gets no signal.
    - reward rising while the mean length grew by more than ``length_growth``× from the first to the
      last window: possible reward hacking through length.
    - entropy in the last window below ``entropy_drop`` × the first window's: entropy collapse.
    """
    out = []

    def mean(xs: list[tuple[int, float]]) -> float:
        return sum(v for _, v in xs) / len(xs)

    acc = _series(rows, "disc/accuracy")
    if len(acc) >= window and mean(acc[-window:]) > d_acc_max:
        out.append(f"D accuracy stuck above {d_acc_max:.2f} (mean {mean(acc[-window:]):.3f} over the last "
                   f"{window} steps): the discriminator is too strong and the generator gets little signal; "
                   "consider a lower discriminator.lr or more generator steps")
    reward, length = _series(rows, "reward/mean"), _series(rows, "gen/response_length_mean")
    if len(reward) >= 2 * window and len(length) >= 2 * window:
        r0, r1 = mean(reward[:window]), mean(reward[-window:])
        l0, l1 = mean(length[:window]), mean(length[-window:])
        if r1 > r0 and l0 > 0 and l1 / l0 > length_growth:
            out.append(f"reward rising ({r0:.3g} → {r1:.3g}) while responses grow fast ({l0:.1f} → {l1:.1f} "
                       "tokens): possible reward hacking; check samples and the discriminator's accuracy")
    ent = _series(rows, "policy/entropy")
    if len(ent) >= 2 * window:
        e0, e1 = mean(ent[:window]), mean(ent[-window:])
        if e0 > 0 and e1 < entropy_drop * e0:
            out.append(f"entropy collapse ({e0:.3g} → {e1:.3g}): the policy has stopped exploring")
    return out


def plot_run(rows: list[dict[str, Any]], out: Path, title: str) -> Path:
    """One PNG: the curves that exist in this run, and the time per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, label) for k, label in CURVES if _series(rows, k)]
    phases = [p for p in PHASES if _series(rows, f"time/{p}")]
    n = len(panels) + (1 if phases else 0)
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
            ax.plot(xs, ys, label=p)
        ax.set_title("seconds per phase", fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """report.md + report.html (+ one PNG per run) for one or more run folders; returns the HTML path."""
    import yaml

    runs = [Path(r) for r in run_dirs]
    out = Path(out) if out else runs[0]
    out.mkdir(parents=True, exist_ok=True)
    md = ["# gad report", ""]
    body = ["<h1>gad report</h1>"]
    for run in runs:
        if not (run / "metrics.jsonl").exists():
            raise FileNotFoundError(f"{run}: no metrics.jsonl (not a gad run folder)")
        rows = read_metrics(run)
        cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
        name = run.name
        png = plot_run(rows, out / f"{name}-curves.png", f"{name} ({cfg.get('stage', '?')})")
        warnings = balance_warnings(rows)
        last = rows[-1] if rows else {}
        summary = {k: last[k] for k in ("step", "reward/mean", "disc/accuracy", "policy/kl", "gen/response_length_mean",
                                         "sft/nll", "time/step") if k in last}
        md += [f"## {name}", "", f"stage `{cfg.get('stage', '?')}`, {len(rows)} steps, last step: "
               + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()), ""]
        md += [f"- **warning:** {w}" for w in warnings] or ["- no balance warnings"]
        md += ["", f"![curves]({png.name})", "", "<details><summary>settings</summary>", "", "```yaml",
               yaml.safe_dump(cfg, sort_keys=False).strip(), "```", "</details>", ""]
        body += [f"<h2>{html.escape(name)}</h2>",
                 f"<p>stage <code>{html.escape(str(cfg.get('stage', '?')))}</code>, {len(rows)} steps</p>",
                 "<ul>" + "".join(f'<li class="warn">{html.escape(w)}</li>' for w in warnings) + "</ul>"
                 if warnings else "<p>No balance warnings.</p>",
                 f'<img src="{html.escape(png.name)}" alt="training curves of {html.escape(name)}">',
                 "<details><summary>settings</summary><pre>"
                 + html.escape(yaml.safe_dump(cfg, sort_keys=False)) + "</pre></details>",
                 "<pre>" + html.escape(json.dumps(summary, indent=1)) + "</pre>"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>gad report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "img{max-width:100%}.warn{color:#a40}pre{background:#f6f6f6;padding:.5em;overflow:auto}"
            "</style></head><body>" + "\n".join(body) + "</body></html>")
    (out / "report.html").write_text(page)
    return out / "report.html"
