"""`gad humaneval-score`: win / tie / loss rates from the JSON that the humaneval page exports."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "score humaneval page exports: win/tie/loss rates of A vs B with 95% intervals"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", nargs="+", metavar="RESULTS_JSON", help="one or more exports (e.g. one per rater)"
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from gad.eval.humaneval import read_export, score_results

    try:
        score = score_results([read_export(p) for p in args.results])
    except (ValueError, FileNotFoundError) as e:  # not an export, or exports of different pages
        print(f"gad humaneval-score: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(score.to_dict(), indent=1) if args.json else score.format())
    return 0
