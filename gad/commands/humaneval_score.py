"""`gad humaneval-score`: win / tie / loss rates from the JSON that the humaneval page exports."""

from __future__ import annotations

import argparse
import json

HELP = "score humaneval page exports: win/tie/loss rates of A vs B with 95% intervals"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", nargs="+", metavar="RESULTS_JSON", help="one or more exports (e.g. one per rater)"
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from gad.eval.humaneval import read_export, score_results

    score = score_results([read_export(p) for p in args.results])
    print(json.dumps(score.to_dict(), indent=1) if args.json else score.format())
    return 0
