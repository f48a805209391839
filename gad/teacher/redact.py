"""Keep API keys out of everything gad prints or writes.

Providers echo keys back in error bodies ("Incorrect API key provided: sk-..."), and exception
text travels into summaries and logs, so every such string passes through :func:`scrub` first.
"""

from __future__ import annotations

import os

from gad.errors import UserError

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so :func:`scrub` removes it. Short values are ignored (too many false hits)."""
    if value and len(value) >= 8:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    """``text`` with every registered secret (and its 8-character-or-longer halves) masked."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
        # A masked echo such as "sk-abcd****wxyz" is fine; a half of the key is not.
        half = len(secret) // 2
        if half >= 8:
            for part in (secret[:half], secret[half:]):
                text = text.replace(part, "***")
    return text


def api_key_from_env(var: str, *, required: bool = True) -> str | None:
    """Read the key from ``$var`` only (never from argv or a config file) and register it."""
    value = os.environ.get(var) if var else None
    if not value and required:
        raise FatalKeyError(
            f"environment variable {var or '(none)'} is not set: export it with your API key, "
            "or name another variable with --api-key-env VAR"
        )
    register_secret(value)
    return value


class FatalKeyError(UserError, RuntimeError):
    pass
