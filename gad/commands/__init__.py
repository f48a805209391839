"""CLI subcommands, one module each (see gad/cli.py)."""
