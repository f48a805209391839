"""A scripted LLM judge for the loopback chat server (``tests/teacher/fake_api.py``'s ``reply`` hook).

It answers the two kinds of request :mod:`gad.eval.judge` sends:

- a reference request (the prompt itself): the scripted reference for that question, or
  ``"reference answer: <question>"``;
- a pairwise request (the MiniLLM prompt): ``"<s1> <s2>\\n<explanation>"`` with the scores from
  ``score(question, answer, reference)``, plus ``position_bias`` for Assistant 1 (so tests can see
  the two orders cancel it), or garbage for the questions in ``garbage`` (every attempt) and
  ``garbage_first`` (the first attempt only; a retry then parses).

Used by the tests and by ``benchmarks/eval_acceptance.py``; nothing here is a real judgment.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from gad.eval.judge import SYSTEM_PROMPT

_PAIR = re.compile(
    r"\[Question\]\n(?P<q>.*?)\n\n\[The Start of Assistant 1's Answer\]\n(?P<a1>.*?)\n\n"
    r"\[The End of Assistant 1's Answer\]\n\n\[The Start of Assistant 2's Answer\]\n(?P<a2>.*?)\n\n"
    r"\[The End of Assistant 2's Answer\]",
    re.S,
)
GARBAGE = "I think both answers have merits, and it is hard to say which is better."


def length_score(question: str, answer: str, reference: str) -> float:
    """Default: 8 for an answer at least as long as the reference, less for a shorter one."""
    if answer == reference:
        return 8.0
    return float(max(1, min(8, round(8 * len(answer) / max(1, len(reference))))))


@dataclass
class ScriptedJudge:
    references: dict[str, str] = field(default_factory=dict)
    """Question -> the judge's reference answer."""
    score: Callable[[str, str, str], float] = length_score
    """(question, answer, reference) -> a score in 1-10 for one answer."""
    position_bias: float = 0.0
    garbage: set[str] = field(default_factory=set)
    garbage_first: set[str] = field(default_factory=set)
    garbage_reply: str = GARBAGE
    """What a garbage answer says (a long one shows whether the re-ask quotes it whole)."""
    calls: dict[str, int] = field(default_factory=lambda: {"reference": 0, "pairwise": 0, "retry": 0})
    prompt_chars: dict[str, list[int]] = field(default_factory=lambda: {"pairwise": [], "retry": []})
    """Characters in all the messages of each pairwise request and each re-ask, as received."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict) -> str:
        messages = body["messages"]
        if messages[0]["role"] != "system" or messages[0]["content"] != SYSTEM_PROMPT:
            question = messages[-1]["content"]
            self._count("reference")
            return self.references.get(question, f"reference answer: {question}")
        m = _PAIR.search(messages[1]["content"])
        if m is None:
            return GARBAGE
        question, a1, a2 = m.group("q"), m.group("a1"), m.group("a2")
        retry = len(messages) > 2
        self._count("retry" if retry else "pairwise", sum(len(m["content"]) for m in messages))
        if question in self.garbage or (question in self.garbage_first and not retry):
            return self.garbage_reply
        reference = self.references.get(question, f"reference answer: {question}")
        s1 = min(10.0, self.score(question, a1, reference) + self.position_bias)
        s2 = self.score(question, a2, reference)
        return f"{_fmt(s1)} {_fmt(s2)}\nAssistant 1 is rated {_fmt(s1)} and Assistant 2 {_fmt(s2)} (scripted)."

    def _count(self, kind: str, chars: int | None = None) -> None:
        with self._lock:
            self.calls[kind] += 1
            if chars is not None:
                self.prompt_chars[kind].append(chars)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
