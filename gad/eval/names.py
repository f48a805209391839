"""Folder- and file-safe names for what ``gad eval`` writes: model folders, judge stores, plot files."""

from __future__ import annotations


def slug(name: str) -> str:
    """``name`` with every character but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``:
    ``"gpt-4o/mini v2"`` → ``"gpt-4o_mini_v2"``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
