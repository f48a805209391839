"""The ``gad`` command: a thin layer over the library.

Each subcommand lives in its own module under :mod:`gad.commands`. Building the parser imports every
one of them (each adds its own arguments), so a command module imports only the standard library at
its top and the library it drives inside ``run``: ``gad --help`` stays instant and ``gad teacher``
never imports torch. A command module provides::

    HELP: str                                   # one line for `gad --help`
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # exit code
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module. Order is the order shown by `gad --help`.
COMMANDS: dict[str, str] = {
    "teacher": "gad.commands.teacher",
    "seqkd": "gad.commands.stages",
    "warmup": "gad.commands.stages",
    "train": "gad.commands.stages",
    "offpolicy": "gad.commands.stages",
    "demo": "gad.commands.demo",
    "report": "gad.commands.report",
    "eval": "gad.commands.eval",
    "eval-compare": "gad.commands.eval_compare",
    "humaneval": "gad.commands.humaneval",
    "humaneval-score": "gad.commands.humaneval_score",
    "toy": "gad.commands.toy",
    "synthetic": "gad.commands.synthetic",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gad",
        description="Black-box on-policy distillation of LLMs with Generative Adversarial Distillation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        help_text = module.HELP[name] if isinstance(module.HELP, dict) else module.HELP
        help_text = help_text.replace("%", "%%")  # argparse %-formats help strings
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
