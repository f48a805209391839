"""What gad/cli.py's docstring promises: building the parser (every command's arguments) imports no
heavy library, so `gad --help` is instant and `gad teacher` never imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "numpy", "matplotlib", "sklearn", "openai", "aiohttp", "yaml")


def test_building_the_parser_imports_every_command_and_no_heavy_library():
    code = ("import sys; from gad.cli import COMMANDS, build_parser; build_parser(); "
            "missing = [m for m in set(COMMANDS.values()) if m not in sys.modules]; "
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
            "print(missing, heavy)")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[] []"
