"""``gad report RUN_DIR [RUN_DIR ...] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys

HELP = "write report.html/report.md with training curves and adversarial-balance warnings for run folders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (with metrics.jsonl)")
    parser.add_argument("--out", default=None, help="where to write the report (default: the first run folder)")


def run(args: argparse.Namespace) -> int:
    from gad.report import write_report

    try:
        page = write_report(args.runs, args.out)
    except FileNotFoundError as e:
        print(f"gad report: error: {e}", file=sys.stderr)
        return 1
    print(f"gad report: wrote {page} and {page.with_suffix('.md')}", file=sys.stderr)
    return 0
