"""``gad demo``: warmup then GAD on the embedded default, offline, on a CPU."""

from __future__ import annotations

import argparse
import sys

HELP = "run the embedded demo: warmup then GAD on SmolLM2-135M-Instruct with a shipped teacher set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="run folder (default: runs/demo, or runs/demo-quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few tiny steps")
    parser.add_argument("--model", default="", help="student model instead of the embedded default")
    parser.add_argument("--teacher-set", default=None, help="teacher set instead of the shipped one")


def run(args: argparse.Namespace) -> int:
    from gad.demo import run_demo

    out = run_demo(args.out, args.model, args.teacher_set, args.quick)
    print(f"gad demo: done; report {out / 'report.html'}; generator checkpoints under "
          f"{out / 'gad' / 'checkpoints'}", file=sys.stderr)
    return 0
