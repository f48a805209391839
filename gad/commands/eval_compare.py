"""``gad eval-compare``: one side-by-side table from the results of separate ``gad eval`` runs."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "compare models evaluated in separate `gad eval` runs: one table (optionally a merged report)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="DIR", help="gad eval output folders (or their results.json)")
    p.add_argument("--out", default=None, metavar="DIR", help="also write the merged results.json and report.md here")


def run(args: argparse.Namespace) -> int:
    from gad.commands.eval import format_tables
    from gad.errors import InputNotFound
    from gad.eval.report import write_eval_report
    from gad.eval.results import read_results, write_results

    merged: dict = {}
    for run_dir in args.runs:
        path = Path(run_dir)
        path = path / "results.json" if path.is_dir() else path
        if not path.is_file():
            raise InputNotFound(f"{path}: no results.json (run `gad eval --out {run_dir}` first)")
        for model, per_set in read_results(path).items():
            name = model if model not in merged else f"{path.parent.name}/{model}"
            merged[name] = per_set
    print(format_tables(merged))
    if args.out:
        write_results(merged, args.out)
        print(f"report: {write_eval_report(merged, args.out)}")
    return 0
