"""``gad report RUN_DIR [RUN_DIR ...] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys

HELP = ("write report.html/report.md: training curves and adversarial-balance warnings of run folders; for a demo "
        "folder also the held-out comparison of the untrained, SeqKD and GAD students and their answers side by side")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (with metrics.jsonl), or a folder of them such as a demo folder")
    parser.add_argument("--out", default=None, help="where to write the report (default: the first folder given)")


def run(args: argparse.Namespace) -> int:
    from gad.report import write_run_report

    page = write_run_report(args.runs, args.out)
    print(f"gad report: wrote {page} and {page.with_suffix('.md')}", file=sys.stderr)
    return 0
