"""Folder-safe names for models, judges and sets in an eval output folder."""

from __future__ import annotations

from gad.eval.names import slug


def test_slug_replaces_everything_but_letters_digits_dash_underscore_dot():
    assert slug("gpt-4o/mini v2.1_x") == "gpt-4o_mini_v2.1_x"
    assert slug("Qwen/Qwen2.5:7b") == "Qwen_Qwen2.5_7b"
