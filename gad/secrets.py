"""What counts as a secret, for everything gad prints or writes: values, never field names.

Two sources: values the program was given as secrets (:func:`register_secret`; the teacher and the
judge register the API keys they read from the environment), and values shaped like an API key
(:func:`looks_like_secret`), which catches a key pasted into the wrong place. The bottom layer, so
the config (``config.yaml``) and the teacher (summaries, logs) use the same rules.
"""

from __future__ import annotations

import math
import re
from collections import Counter

_SECRETS: set[str] = set()

# Prefixes of providers' keys and tokens: OpenAI / Anthropic ``sk-`` (``sk-proj-``, ``sk-ant-api03-``),
# Hugging Face ``hf_``, GitHub ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``, Google
# ``AIza``. What follows is random: 20 or more key characters, mixed case with digits (so that
# ``sk-learn-baseline-2024`` or ``hf_train_set_v2`` is not a key). AWS access key ids have a fixed shape.
_KEY_PREFIX = re.compile(r"(?<![A-Za-z0-9])(?:sk-|hf_|gh[pousr]_|github_pat_|AIza)([A-Za-z0-9_\-]{20,})")
_AWS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])AKIA[0-9A-Z]{16}(?![A-Za-z0-9])")
# Any other key: an unbroken run of 32 or more letters and digits, mixed case with digits, with the
# spread of a random string (bits per character). ``-``, ``_``, ``/`` and ``.`` break a run, so a hub
# id, a path or a descriptive run name is judged piece by piece and never qualifies; a hex hash is
# one case.
_TOKEN = re.compile(r"[A-Za-z0-9]{32,}")
_MIN_BITS_PER_CHAR = 4.0


def _mixed(text: str) -> bool:
    return any(c.isdigit() for c in text) and any(c.islower() for c in text) and any(c.isupper() for c in text)


def register_secret(value: str | None) -> None:
    """Remember a secret so :func:`scrub` and :func:`looks_like_secret` know it. Short values are
    ignored (too many false hits)."""
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


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` holds a registered secret or something shaped like an API key or token."""
    if any(secret in value for secret in _SECRETS) or _AWS_KEY_ID.search(value):
        return True
    if any(_mixed(m.group(1)) for m in _KEY_PREFIX.finditer(value)):
        return True
    return any(_random_looking(m.group()) for m in _TOKEN.finditer(value))


def _random_looking(word: str) -> bool:
    if not _mixed(word):
        return False
    counts = Counter(word)
    bits = -sum(n / len(word) * math.log2(n / len(word)) for n in counts.values())
    return bits >= _MIN_BITS_PER_CHAR
