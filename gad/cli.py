"""The ``gad`` command: a thin layer over the library.

Each subcommand lives in its own module under :mod:`gad.commands`. Building the parser imports every
one of them (each adds its own arguments), so a command module imports only the standard library at
its top and the library it drives inside ``run``: ``gad --help`` stays instant and ``gad teacher``
never imports torch. A command module provides::

    HELP: str | dict[str, str]                  # one line for `gad --help` (per name, if shared)
    ON_INTERRUPT: str                           # optional: how to continue after Ctrl-C
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # exit code; raises on errors, :func:`main` reports them
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

# name -> module. Order is the order shown by `gad --help`.
COMMANDS: dict[str, str] = {
    "teacher": "gad.commands.teacher",
    "seqkd": "gad.commands.stages",
    "warmup": "gad.commands.stages",
    "train": "gad.commands.stages",
    "offpolicy": "gad.commands.stages",
    "demo": "gad.commands.demo",
    "report": "gad.commands.report",
    "export": "gad.commands.export",
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
    """Run one subcommand; every error ends here, decided once for all commands.

    Exit codes: 0 done; 1 a bug (a traceback, secrets scrubbed) or work left incomplete (the
    command says which); 2 bad input (one line naming it: a file and line, an option, a path);
    130 interrupted by Ctrl-C or SIGTERM (rerun the same command to continue).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    prog = f"gad {args.command}"
    try:
        module = importlib.import_module(args._module)
        with _sigterm_as_interrupt():
            return int(module.run(args) or 0)
    except KeyboardInterrupt:
        module = sys.modules.get(args._module)
        hint = getattr(module, "ON_INTERRUPT", "run the same command again to continue where it stopped")
        _say(f"\n{prog}: interrupted; {hint}")
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        message = user_error_message(exc)
        if message is None:
            from gad.secrets import scrub

            _say(scrub(traceback.format_exc()))
            return 1
        _say(f"{prog}: error: {message}")
        return 2


def user_error_message(exc: BaseException) -> str | None:
    """One line for an error caused by the user's input, secrets scrubbed; None for anything else
    (a bug, shown with its traceback)."""
    from gad.errors import UserError
    from gad.secrets import scrub

    if isinstance(exc, UserError):
        return scrub(str(exc))
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)) and exc.filename:
        return scrub(f"{exc.filename}: {exc.strerror}")  # a path the user gave that cannot be opened
    return None


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler, ``kill``, ``docker stop``) stops a command as Ctrl-C does: what is done is
    kept and the exit code is 130. (The training stages install their own handler while they run.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # a further Ctrl-C while saying it: the exit code still tells
        pass


if __name__ == "__main__":
    sys.exit(main())
