"""`gad humaneval`: write a blind pairwise comparison page for two models' cached generations."""

from __future__ import annotations

import argparse

HELP = "write a blind pairwise comparison page (one HTML file) for two models' generations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--a", required=True, metavar="DIR", help="model A: a folder with generations.jsonl (or the file)"
    )
    parser.add_argument(
        "--b", required=True, metavar="DIR", help="model B: a folder with generations.jsonl (or the file)"
    )
    parser.add_argument("--out", required=True, metavar="HTML", help="where to write the page")
    parser.add_argument(
        "--name-a", help="model A's name in the exported results (default: the folder's name)"
    )
    parser.add_argument(
        "--name-b", help="model B's name in the exported results (default: the folder's name)"
    )
    parser.add_argument(
        "--set", action="append", dest="sets", metavar="NAME", help="only items of this set (repeatable)"
    )
    parser.add_argument("--limit", type=int, help="at most this many items (in A's order)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-item side shuffle (default 0)")
    parser.add_argument("--title", default="Which response is better?", help="the page's heading")


def run(args: argparse.Namespace) -> int:
    from gad.eval.humaneval import build_page

    path = build_page(args.a, args.b, args.out, name_a=args.name_a, name_b=args.name_b, sets=args.sets,
                      limit=args.limit, seed=args.seed, title=args.title)
    print("Open it in a browser; raters export their judgments as JSON for `gad humaneval-score`.")
    print(f"page: {path}")
    return 0
