"""Claim 2 across regimes and seeds: GAD against an official-strength SeqKD in ``gad synthetic``.

A sweep is regimes × seeds; each cell is one :func:`gad.synthetic.run_synthetic` with two methods,
SeqKD and GAD (warmup → train, the train stage continuing the warmup run), reading the same teacher
set. The settings below were fixed before any sweep result was seen (``docs/claims.md`` says so):

- SeqKD at official strength: lr ``5 x`` the warmup's (the scripts' 5e-6 against 1e-6), for as many
  steps as warmup + GAD together (the scripts' epochs match); GAD's G keeps the warmup's lr through
  ``gad train`` (``train.init_state=all`` restores it with the optimizer, as the scripts do);
- the regimes (:data:`REGIMES`): each a few :class:`SyntheticConfig` changes from :data:`SWEEP_BASE`;
- the verdict per regime: the paired difference GAD − SeqKD of held-out precision per token,
  averaged over the last ``late_evals`` checkpoints, with a 95% t-interval across seeds: "beats"
  when the interval lies above 0, "loses" when below, "ties" otherwise.

Each cell's results go to ``DIR/cells/REGIME-seedN.json`` and are reused when the config matches,
so an interrupted sweep continues where it stopped. Outputs: ``sweep.json``, ``sweep.md``, ``sweep.png``.

Python API::

    from gad.synthetic_sweep import run_sweep
    summary = run_sweep("runs/sweep", seeds=5, jobs=2)
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from gad.plots import figure
from gad.synthetic import SyntheticConfig, run_synthetic

SWEEP_BASE: dict[str, Any] = {
    "methods": ("seqkd", "gad"),
    "sft_lr": 1e-3,  # the warmup's G lr, kept by gad train (the official scripts: 1e-6 for both)
    "seqkd_lr": 5e-3,  # 5x: the official SeqKD's 5e-6; 5e-3 is the lr this student is known to train at
    "continue_warmup": True,
    "plot": False,
}
"""What every cell changes from ``SyntheticConfig``'s defaults (offpolicy is claim 3, not run here)."""

REGIMES: dict[str, dict[str, Any]] = {
    "base": {},
    # Exposure bias compounds with length: mean teacher length ≈ 12 + 1/0.1 - 1 = 21 symbols (base: 8).
    "long": {"min_length": 12, "stop_prob": 0.1, "max_length": 40, "max_new_tokens": 64},
    # A student too small for every mode: 5 modes per task, a 1-layer width-16 student (base: 3, 2 x 48).
    "small": {"hidden_size": 16, "num_layers": 1, "mode_weights": (0.3, 0.25, 0.2, 0.15, 0.1)},
    # Prompts from tasks never seen in training: 6 tasks, the last 2 held out; mode k of every task
    # shares half of its logits' variance, so there is something to generalise.
    "ood": {"num_tasks": 6, "heldout_tasks": 2, "task_sharing": 0.5},
    # The cross-entropy temperature, at the official sampling temperature 0.8 (rollout and measurement):
    # plain cross-entropy ...
    "t0.8-ce1.0": {"temperature": 0.8, "sft_temperature": 1.0},
    # ... against the official code's (the warmup's and SeqKD's log-probs at the rollout temperature).
    "t0.8-ce0.8": {"temperature": 0.8, "sft_temperature": 0.8},
}
"""The regimes, each a set of ``SyntheticConfig`` changes from :data:`SWEEP_BASE`."""

CE_PAIR = ("t0.8-ce1.0", "t0.8-ce0.8")
"""The two regimes that differ only in the cross-entropy temperature (same seeds = same teacher,
data and starting student: a paired comparison)."""

METRICS: dict[str, tuple[str, str]] = {
    "precision_late": ("late", "precision_per_token"),
    "precision_final": ("final", "precision_per_token"),
    "coverage": ("final", "coverage_per_token"),
    "length": ("final", "length_mean"),
}
"""The numbers a cell reports per method: (which measurement, which key)."""

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)
"""Student's t 0.975 quantiles for 1…30 degrees of freedom."""


def t_interval(xs: Sequence[float]) -> dict[str, float]:
    """Mean and 95% t-interval across seeds: ``mean ± t_{0.975, n-1} · sd / sqrt(n)``."""
    n = len(xs)
    if n < 2:
        raise ValueError(f"an interval across seeds needs at least 2 seeds, got {n}")
    mean, sd = statistics.fmean(xs), statistics.stdev(xs)
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def verdict(interval: dict[str, float]) -> str:
    """``beats`` / ``loses`` when the paired interval excludes 0, ``ties`` otherwise."""
    return "beats" if interval["lo"] > 0 else "loses" if interval["hi"] < 0 else "ties"


def cell_config(regime: str, seed: int, out: Path, scale: dict[str, Any] | None = None) -> SyntheticConfig:
    """The config of one cell: the regime's changes over :data:`SWEEP_BASE`, then ``scale`` (smaller
    sizes for tests) on top."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; known: {', '.join(REGIMES)}")
    kw = {**SWEEP_BASE, **REGIMES[regime], **(scale or {})}
    return SyntheticConfig(out_dir=str(out / "cells" / f"{regime}-seed{seed}"), seed=seed, **kw)


def _jsonable(cfg: SyntheticConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg)))


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two configs train the same cell (where its folder is does not matter: a moved sweep resumes)."""
    return {**a, "out_dir": None} == {**b, "out_dir": None}


def run_cell(cfg: SyntheticConfig) -> dict[str, Any]:
    """One cell, or its saved result when the config matches (the run folders are removed after)."""
    path = Path(str(cfg.out_dir) + ".json")
    if path.exists():
        saved = json.loads(path.read_text())
        if _same_run(saved.get("config", {}), _jsonable(cfg)):
            return saved
    r = run_synthetic(cfg)
    cell = {
        "config": _jsonable(cfg), "seconds": r["seconds"], "teacher": r["teacher"], "init": r["init"],
        "warmup": r.get("warmup"),
        "methods": {m: {k: v[k] for k in ("final", "late", "curve", "disc_accuracy_final", "reward_trend")}
                    for m, v in r["methods"].items()},
    }
    path.write_text(json.dumps(cell, indent=1) + "\n")
    shutil.rmtree(str(cfg.out_dir), ignore_errors=True)
    return cell


def value(cell: dict[str, Any], method: str, metric: str) -> float:
    """A cell's number: ``method`` is ``seqkd``, ``gad`` or ``warmup`` (the student GAD starts from)."""
    where, key = METRICS[metric]
    if method == "warmup":
        if metric == "precision_late":
            raise ValueError("the warmup has one measurement, not a late average")
        return float(cell["warmup"][key])
    return float(cell["methods"][method][where][key])


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]], get_a: Callable[[dict[str, Any]], float],
           get_b: Callable[[dict[str, Any]], float] | None = None) -> dict[str, Any]:
    """Per-seed differences ``get_a(a_i) - get_b(b_i)`` (cells in seed order; ``get_b`` defaults to
    ``get_a``) and their interval."""
    seeds_a, seeds_b = [c["config"]["seed"] for c in a], [c["config"]["seed"] for c in b]
    if seeds_a != seeds_b:
        raise ValueError(f"paired cells must have the same seeds, got {seeds_a} and {seeds_b}")
    diffs = [get_a(x) - (get_b or get_a)(y) for x, y in zip(a, b)]
    return {"per_seed": diffs, **t_interval(diffs)}


def summarize(cells: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per regime: each method's mean and interval per metric, the paired GAD − SeqKD differences,
    the verdict; plus the paired CE-temperature comparison when both of :data:`CE_PAIR` ran."""
    out: dict[str, Any] = {"regimes": {}, "interval": "95% Student-t across seeds", "verdict_on": "precision_late"}
    for regime, cs in cells.items():
        row: dict[str, Any] = {"seeds": [c["config"]["seed"] for c in cs],
                               "teacher": t_interval([c["teacher"]["precision_per_token"] for c in cs]),
                               "seconds": sum(c["seconds"] for c in cs)}
        for method in ("seqkd", "gad", "warmup"):
            row[method] = {m: t_interval([value(c, method, m) for c in cs])
                           for m in METRICS if not (method == "warmup" and m == "precision_late")}
        row["gad_minus_seqkd"] = {m: paired(cs, cs, lambda c, m=m: value(c, "gad", m),
                                            lambda c, m=m: value(c, "seqkd", m)) for m in METRICS}
        row["verdict"] = verdict(row["gad_minus_seqkd"][out["verdict_on"]])
        out["regimes"][regime] = row
    if all(r in cells for r in CE_PAIR):
        lo, hi = (cells[r] for r in CE_PAIR)
        out["ce_temperature"] = {
            f"{method}_{m}": paired(hi, lo, lambda c, method=method, m=m: value(c, method, m))
            for method in ("warmup", "gad", "seqkd") for m in ("precision_final", "coverage")
        }
    return out


def _ci(i: dict[str, float], digits: int = 2) -> str:
    return f"{i['mean']:.{digits}f} [{i['lo']:.{digits}f}, {i['hi']:.{digits}f}]"


def sweep_table(summary: dict[str, Any]) -> str:
    """The markdown tables of ``sweep.md``."""
    lines = [
        f"Mean over seeds [{summary['interval']}]; nats per token on held-out prompts (EOS included).",
        "",
        "| regime | seeds | method | precision (late) | precision (final) | coverage | length |",
        "|---|---|---|---|---|---|---|",
    ]
    for regime, r in summary["regimes"].items():
        n = len(r["seeds"])
        for method, name in (("seqkd", "SeqKD"), ("warmup", "GAD's start (warmup)"), ("gad", "GAD")):
            cells = [_ci(r[method][m]) if m in r[method] else "" for m in METRICS]
            lines.append(f"| {regime} | {n} | {name} | " + " | ".join(cells) + " |")
        d = r["gad_minus_seqkd"]
        lines.append(f"| {regime} | {n} | **GAD − SeqKD (paired)** | " + " | ".join(f"**{_ci(d[m])}**" for m in METRICS) + " |")
    lines += ["", "| regime | GAD − SeqKD, precision (late), per seed | verdict |", "|---|---|---|"]
    for regime, r in summary["regimes"].items():
        per = ", ".join(f"{x:+.2f}" for x in r["gad_minus_seqkd"]["precision_late"]["per_seed"])
        phrase = {"beats": "GAD beats SeqKD", "ties": "GAD ties with SeqKD", "loses": "GAD loses to SeqKD"}[r["verdict"]]
        lines.append(f"| {regime} | {per} | {phrase} |")
    if "ce_temperature" in summary:
        lines += ["", f"Cross-entropy temperature 0.8 − 1.0 (paired: {CE_PAIR[1]} − {CE_PAIR[0]}, sampling at 0.8):", "",
                  "| student | precision (final) | coverage |", "|---|---|---|"]
        ce = summary["ce_temperature"]
        for method, name in (("warmup", "GAD's start (warmup)"), ("gad", "GAD"), ("seqkd", "SeqKD")):
            lines.append(f"| {name} | {_ci(ce[f'{method}_precision_final'])} | {_ci(ce[f'{method}_coverage'])} |")
    return "\n".join(lines) + "\n"


def plot_sweep(summary: dict[str, Any], path: Path) -> None:
    """GAD − SeqKD per regime (mean, interval, each seed) for precision (late, final) and coverage."""
    regimes = list(summary["regimes"])
    panels = (("precision_late", "precision / token, late average"), ("precision_final", "precision / token, last checkpoint"),
              ("coverage", "coverage / token"))
    with figure(path, 1, 3, figsize=(12, 3.8), dpi=80) as (fig, axes):
        for ax, (metric, title) in zip(axes, panels):
            for x, regime in enumerate(regimes):
                d = summary["regimes"][regime]["gad_minus_seqkd"][metric]
                ax.plot([x] * len(d["per_seed"]), d["per_seed"], ".", color="gray", ms=5)
                ax.errorbar([x], [d["mean"]], yerr=[[d["mean"] - d["lo"]], [d["hi"] - d["mean"]]], fmt="o",
                            color="tab:red", capsize=4)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(range(len(regimes)), regimes, rotation=30, fontsize=8)
            ax.set_title(f"GAD − SeqKD: {title}", fontsize=9)
        axes[0].set_ylabel("nats / token (> 0: GAD better)\nred: mean, 95% t-interval; gray: seeds", fontsize=8)


def run_sweep(out: str | Path, seeds: int = 5, regimes: Sequence[str] | None = None, jobs: int = 1,
              scale: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or reuse) every cell, then write ``sweep.json``, ``sweep.md`` and ``sweep.png`` to ``out``.

    ``jobs`` > 1 runs that many cells at once, each in its own process (one thread each)."""
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    names = list(regimes or REGIMES)
    # Seed-major: an interrupted sweep has every regime at nearly the same number of seeds.
    configs = {(r, s): cell_config(r, s, out, scale) for s in range(seeds) for r in names}
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_cell, cfg): key for key, cfg in configs.items()}
            for fut in as_completed(futures):
                key = futures[fut]
                done[key] = fut.result()
                log(f"cell {key[0]} seed {key[1]}: {done[key]['seconds']:.0f}s ({len(done)}/{len(configs)})")
    else:
        for key, cfg in configs.items():
            done[key] = run_cell(cfg)
            log(f"cell {key[0]} seed {key[1]}: {done[key]['seconds']:.0f}s ({len(done)}/{len(configs)})")
    cells = {r: [done[(r, s)] for s in range(seeds)] for r in names}
    summary = summarize(cells)
    summary["command"] = f"gad synthetic --sweep --seeds {seeds} --out {out}"
    summary["settings"] = {"base": SWEEP_BASE, "regimes": {r: REGIMES[r] for r in names}, "scale": scale or {}}
    (out / "sweep.json").write_text(json.dumps(summary, indent=1, default=list) + "\n")
    (out / "sweep.md").write_text(sweep_table(summary))
    plot_sweep(summary, out / "sweep.png")
    return summary
