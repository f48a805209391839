"""Keep API keys out of everything gad prints or writes.

Providers echo keys back in error bodies ("Incorrect API key provided: sk-..."), and exception
text travels into summaries and logs, so every such string passes through :func:`scrub` first
(:mod:`gad.secrets`, where the config's redaction finds the same secrets).
"""

from __future__ import annotations

import os

from gad.errors import UserError
from gad.secrets import register_secret, scrub

__all__ = ["FatalKeyError", "api_key_from_env", "register_secret", "scrub"]


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
