"""``gad demo``: the whole pipeline on the embedded default, offline, on a CPU."""

from __future__ import annotations

import argparse
import sys

HELP = ("run the embedded demo: teacher → SeqKD → warmup → GAD → evaluation → report, on SmolLM2-135M-Instruct, "
        "offline, about 15 minutes on a 2-core CPU")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="demo folder (default: runs/demo, or runs/demo-quick); "
                        "running again with the same folder continues where it stopped")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every phase, under 3 minutes")
    parser.add_argument("--model", default="", help="student model instead of the embedded default "
                        "(also the base of the default hidden-context teacher)")
    parser.add_argument("--teacher-model", default=None, metavar="NAME",
                        help="an OpenAI-compatible API model as the teacher (key from --api-key-env)")
    parser.add_argument("--teacher-base-url", default=None, metavar="URL",
                        help="the teacher's endpoint, e.g. http://localhost:8000/v1 (default: OpenAI)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                        help="environment variable holding the teacher's API key (never taken from the command line)")


def run(args: argparse.Namespace) -> int:
    from gad.demo import DemoError, run_demo

    if args.teacher_base_url and not args.teacher_model:
        raise DemoError("--teacher-base-url needs --teacher-model")
    page = run_demo(args.out, args.model, args.quick, args.teacher_model, args.teacher_base_url, args.api_key_env)
    print(f"gad demo: done; report {page.resolve()} (and {page.with_suffix('.md').name} beside it)", file=sys.stderr)
    return 0
