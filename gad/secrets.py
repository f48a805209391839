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

# Prefixes of providers' keys and tokens, followed by a run of key characters with a digit in it
# (so that ``sk-learn-experiments`` is not a key): OpenAI / Anthropic ``sk-``, Hugging Face ``hf_``,
# GitHub ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``, AWS ``AKIA``, Google ``AIza``,
# Slack ``xox?-``.
_KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-|hf_|gh[pousr]_|github_pat_|AKIA|AIza|xox[abprs]-)"
    r"(?=[A-Za-z0-9_\-]*[0-9])[A-Za-z0-9_\-]{16,}"
)
# A long run of key characters with digits, lower- and upper-case letters, and the spread of a random
# string (bits per character): a key of a provider not listed above. A path or hub id is judged part
# by part (``/`` and ``.`` end a run); hex hashes (one case) and long names do not qualify.
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{32,}")
_MIN_BITS_PER_CHAR = 4.0


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
    if any(secret in value for secret in _SECRETS) or _KEY_SHAPES.search(value):
        return True
    return any(_random_looking(m.group()) for m in _TOKEN.finditer(value))


def _random_looking(word: str) -> bool:
    if not (any(c.isdigit() for c in word) and any(c.islower() for c in word) and any(c.isupper() for c in word)):
        return False
    counts = Counter(word)
    bits = -sum(n / len(word) * math.log2(n / len(word)) for n in counts.values())
    return bits >= _MIN_BITS_PER_CHAR
