"""The LLM judge (the GAD paper's protocol, after MiniLLM): reference answer, then pairwise scores.

For every prompt the judge model first writes its own reference answer. Then it rates the
student's answer and that reference 1–10 with the MiniLLM / Vicuna pairwise prompt, once with the
student shown first and once second; the two passes are averaged (position bias cancels) and a
prompt's score is ``s_student / (s_student + s_ref) × 100`` (see
:func:`gad.eval.metrics.combine_orders` and :func:`gad.eval.metrics.aggregate_judge_scores`).

Every call goes through the client of ``gad teacher`` (:func:`gad.teacher.collect`,
:class:`gad.teacher.OpenAIBackend`, :class:`gad.teacher.ResponseStore`), into stores under
``OUT/judge/<judge model>/``:

- ``references.jsonl`` — one row per prompt, id ``<set>/<item id>/<hash of the messages>``;
- ``scores.jsonl`` — one row per (prompt, order, attempt), id
  ``<set>/<item id>/<order>/<hash of question, student answer, reference>[/retryK]``.

Ids name content, not models: a rerun, a second student with an identical answer, or a new metric
pays for nothing twice, and a regenerated answer gets a fresh id instead of a stale score.

A reply whose first line is not two scores in 1–10 is asked again (``parse_retries`` times): the
first prompt, a bounded part of the bad reply (its head and tail, :data:`QUOTE_CHARS`, so the re-ask
cannot grow past the judge's context) and a one-line reminder of the format; each attempt is its own
row, so a rerun replays them for free. A prompt whose reference, or either order, never parses, whose
request failed after the client's retries, or which the judge's server refused (too long for its
context, a content policy; logged in the store's ``.rejected.jsonl`` and not sent again) is a
*failure*: reported with its reason, left out of the mean, never scored. Only what would hit every
request (a bad key, an unknown model, the same refusal on several items in a row; both orders and
the re-asks of one item are one item, and a prompt too long by itself never counts) stops the judge.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gad.errors import UserError
from gad.eval.metrics import combine_orders
from gad.eval.names import slug
from gad.eval.sets import EvalItem, Message

# The pairwise prompt of Vicuna's GPT-4 review ("general" category), used by MiniLLM (Gu et al. 2023,
# arXiv 2306.08543, App. C) and by the GAD paper's GPT-4o evaluation.
SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."
PAIRWISE_PROMPT = """[Question]
{question}

[The Start of Assistant 1's Answer]
{answer_1}

[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
{answer_2}

[The End of Assistant 2's Answer]

[System]
We would like to request your feedback on the performance of two AI assistants in response to the user question displayed above.
Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.
Please first output a single line containing only two values indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space. In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in which the responses were presented does not affect your judgment."""
RETRY_PROMPT = (
    "I could not read the scores in your reply. Answer again: the first line must contain only the two "
    "scores (1 to 10) for Assistant 1 and Assistant 2, separated by a space, e.g. \"7 5\"."
)
PROMPT_VERSION = "minillm-pairwise-v1"
"""Part of the stores' fingerprint: changing the prompt text must not mix old and new scores."""

QUOTE_CHARS = (400, 200)
"""Characters of an unparseable reply quoted back in a re-ask: its first and its last."""

ORDERS = ("sr", "rs")
"""``sr``: the student is Assistant 1 and the reference Assistant 2; ``rs``: the other way round."""

# First line: two numbers separated by a space (or a comma, slash, semicolon), optionally
# after "Score(s):" and with markdown emphasis around it.
_SCORE_LINE = re.compile(
    r"^(?:scores?\s*[:=]?\s*)?(\d+(?:\.\d+)?)\s*(?:[,;/]\s*|\s+)(\d+(?:\.\d+)?)\s*\.?$", re.IGNORECASE
)


class JudgeError(UserError, RuntimeError):
    """The judge cannot go on (bad key, unknown model, a store written with other settings)."""


@dataclass(frozen=True)
class JudgeConfig:
    """How to reach and ask the judge."""

    model: str
    """The judge's model name at the endpoint (the paper: GPT-4o)."""
    base_url: str | None = None
    """OpenAI-compatible endpoint (vLLM, SGLang, a proxy); None = OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the key; keys are never taken from the command line."""
    temperature: float | None = 0.0
    """0 for repeatable judgments; None leaves the provider's default (reasoning models need it)."""
    max_tokens: int = 1024
    """Budget of the judge's reference answers and of its score explanations."""
    parse_retries: int = 2
    """Extra attempts for a reply whose scores cannot be read, before it counts as a failure."""
    concurrency: int = 16
    max_retries: int = 8
    """Transport retries per request (429, 5xx, timeouts), as in ``gad teacher``."""
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.model:
            raise JudgeError("judge model: empty; pass --judge-model NAME")
        if self.parse_retries < 0:
            raise JudgeError(f"judge parse_retries: must be >= 0, got {self.parse_retries}")
        if self.max_tokens < 1:
            raise JudgeError(f"judge max_tokens: must be >= 1, got {self.max_tokens}")
        if self.concurrency < 1:
            raise JudgeError(f"judge concurrency: must be >= 1, got {self.concurrency}")


@dataclass
class Verdict:
    """One prompt's judgment. ``pair`` is ``(s_student, s_ref)`` averaged over both orders, or
    ``None`` with the ``failure`` reason."""

    pair: tuple[float, float] | None
    orders: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    failure: str | None = None


def parse_scores(reply: str | None) -> tuple[float, float] | None:
    """The two scores on the first non-empty line of a judge reply, or ``None``.

    Accepts ``"8 6"``, ``"8, 6"``, ``"8/6"``, ``"**8 6**"``, ``"Scores: 8 6"``; both scores must
    lie in 1–10 (what the prompt asks for). Anything else is unparseable, never guessed at.
    """
    if not reply:
        return None
    line = next((ln for ln in reply.splitlines() if ln.strip()), "")
    line = line.strip().strip("*#`_ ").strip()
    m = _SCORE_LINE.match(line)
    if m is None:
        return None
    a, b = float(m.group(1)), float(m.group(2))
    if not (1 <= a <= 10 and 1 <= b <= 10):
        return None
    return (a, b)


def render_question(messages: Sequence[Message]) -> str:
    """The question as the judge sees it: the user's turn, or the whole chat when there is more."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def pairwise_messages(question: str, answer_1: str, answer_2: str) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": PAIRWISE_PROMPT.format(question=question, answer_1=answer_1, answer_2=answer_2)},
    ]


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()[:12]


class Judge:
    """The judge over a resumable store folder: :meth:`references`, then :meth:`score`.

    Args:
        config: endpoint and settings.
        out_dir: the eval output folder; stores go to ``out_dir/judge/<model>/``.
        api_key: the key; by default read from ``$config.api_key_env`` (optional with a
            ``base_url``: self-hosted servers usually need none).
        progress: show the client's progress bars.
    """

    def __init__(self, config: JudgeConfig, out_dir: str | os.PathLike, *, api_key: str | None = None,
                 progress: bool = True):
        from gad.teacher import api_key_from_env

        self.config = config
        self.dir = Path(out_dir) / "judge" / slug(config.model)
        self.progress = progress
        self.refused: dict[str, str] = {}
        """Request id -> why the judge's server refused it (from the stores' rejected sidecars)."""
        self._no_reference: dict[tuple[str, str], str] = {}
        if api_key is None:
            api_key = api_key_from_env(config.api_key_env, required=config.base_url is None)
        else:
            from gad.teacher import register_secret

            register_secret(api_key)
        self._api_key = api_key

    @property
    def references_path(self) -> Path:
        return self.dir / "references.jsonl"

    @property
    def scores_path(self) -> Path:
        return self.dir / "scores.jsonl"

    # ------------------------------------------------------------------------------------------------
    def _collect(self, kind: str, requests: list, path: Path, item_of: dict[str, str] | None = None) -> dict[str, str]:
        """Sends what ``path`` does not hold yet; returns every stored reply of the store by id, and
        notes in :attr:`refused` the requests the server refused. ``item_of`` maps request ids to
        their item, for the stop rule (one item's orders and re-asks are one prompt)."""
        from gad.teacher import (
            GenerationSettings,
            OpenAIBackend,
            ResponseStore,
            RetryPolicy,
            SettingsChanged,
            collect,
            read_rows,
        )
        from gad.teacher.store import sidecar

        c = self.config
        if requests:
            backend = OpenAIBackend(
                GenerationSettings(model=c.model, max_tokens=c.max_tokens, temperature=c.temperature),
                api_key=self._api_key, base_url=c.base_url, concurrency=c.concurrency, timeout_s=c.timeout_s,
                retry=RetryPolicy(max_retries=c.max_retries),
            )
            store = ResponseStore(path, response_field="judgment")
            try:
                summary = collect(requests, backend, store, progress=self.progress, desc=f"judge {kind}",
                                  fingerprint_extra={"prompt": PROMPT_VERSION, "kind": kind},
                                  prompt_of=(lambda r: item_of[r.id]) if item_of else None)
            except SettingsChanged:
                raise JudgeError(
                    f"{path} holds judgments made with other judge settings (model, temperature, max tokens "
                    "or prompt): rerun with the same --judge-* options, or use a new --out"
                ) from None
            if summary.stopped and summary.stopped != "interrupted":
                raise JudgeError(
                    f"the judge stopped: {summary.stopped}\nFix the judge's setup (--judge-max-tokens, "
                    "--judge-model, the server at --judge-base-url) and rerun the same command: what was "
                    "judged is kept and the requests it stopped on are sent again; or use a new --out")
            if summary.stopped == "interrupted":
                raise KeyboardInterrupt
        replies: dict[str, str] = {}
        for file in (path, sidecar(path, ".dropped.jsonl")):  # empty replies sit in the sidecar
            for row in read_rows(file):
                replies[str(row["id"])] = row.get("judgment") or ""
        for row in read_rows(sidecar(path, ".rejected.jsonl")):
            if str(row["id"]) not in replies:
                self.refused[str(row["id"])] = str(row.get("reason") or "refused")
        return replies

    def references(self, items: Sequence[tuple[str, EvalItem]]) -> dict[tuple[str, str], str | None]:
        """The judge's own answer to each ``(set name, item)``; ``None`` where it gave none."""
        from gad.teacher import ChatRequest

        ids = {(s, it.id): f"{s}/{it.id}/{_digest(it.messages)}" for s, it in items}
        requests = [ChatRequest(id=ids[(s, it.id)], messages=list(it.messages)) for s, it in items]
        replies = self._collect("references", requests, self.references_path)
        for key, rid in ids.items():
            if rid in self.refused:
                self._no_reference[key] = f"the judge refused the request: {self.refused[rid]}"
        return {key: (replies.get(rid) or None) for key, rid in ids.items()}

    def score(
        self, items: Sequence[tuple[str, EvalItem, str]], references: dict[tuple[str, str], str | None]
    ) -> dict[tuple[str, str], Verdict]:
        """Judges each ``(set name, item, student response)`` against the judge's reference answer.

        Both orders are asked; unparseable replies are asked again up to ``parse_retries`` times.
        """
        from gad.teacher import ChatRequest

        verdicts: dict[tuple[str, str], Verdict] = {}
        # (key, order) -> (base id, first-attempt messages); the order decides who is Assistant 1.
        open_: dict[tuple[tuple[str, str], str], tuple[str, list[Message]]] = {}
        for set_name, item, response in items:
            key = (set_name, item.id)
            ref = references.get(key)
            if not ref:
                why_not = self._no_reference.get(key)
                verdicts[key] = Verdict(None, failure="the judge gave no reference answer"
                                        + (f" ({why_not})" if why_not else ""))
                continue
            question = render_question(item.messages)
            base = f"{set_name}/{item.id}/{{order}}/{_digest(question, response, ref)}"
            open_[(key, "sr")] = (base.format(order="sr"), pairwise_messages(question, response, ref))
            open_[(key, "rs")] = (base.format(order="rs"), pairwise_messages(question, ref, response))

        parsed: dict[tuple[tuple[str, str], str], tuple[float, float]] = {}
        why: dict[tuple[tuple[str, str], str], str] = {}
        asked: dict[tuple[tuple[str, str], str], list[Message]] = {k: m for k, (_, m) in open_.items()}
        pending = list(open_)
        for attempt in range(self.config.parse_retries + 1):
            if not pending:
                break
            rid = {k: open_[k][0] + (f"/retry{attempt}" if attempt else "") for k in pending}
            requests = [ChatRequest(id=rid[k], messages=asked[k]) for k in pending]
            item_of = {rid[k]: repr(k[0]) for k in pending}  # k[0]: (set name, item id)
            replies = self._collect("scores", requests, self.scores_path, item_of)
            still = []
            for k in pending:
                reply = replies.get(rid[k])
                if reply is None and rid[k] in self.refused:  # too long for the judge, a content policy
                    why[k] = f"the judge refused the request: {self.refused[rid[k]]}"
                    continue
                if reply is None:  # the request failed after the client's retries: the next run asks again
                    why[k] = "the judge request failed after retries (rerun to ask again)"
                    continue
                scores = parse_scores(reply)
                if scores is not None:
                    parsed[k] = scores
                    continue
                why[k] = f"unparseable after {attempt + 1} attempts (last reply: {_excerpt(reply)})"
                # the first prompt and a bounded quote of the last bad reply: never longer than that
                asked[k] = open_[k][1] + [
                    {"role": "assistant", "content": quote(reply)},
                    {"role": "user", "content": RETRY_PROMPT},
                ]
                still.append(k)
            pending = still

        for set_name, item, _ in items:
            key = (set_name, item.id)
            if key in verdicts:
                continue
            orders: dict[str, tuple[float, float] | None] = {}
            for order in ORDERS:
                s = parsed.get((key, order))
                # back from positions to answers: (s_student, s_ref)
                orders[order] = None if s is None else (s if order == "sr" else (s[1], s[0]))
            pair = combine_orders([orders[o] for o in ORDERS])
            failure = None
            if pair is None:
                failure = "; ".join(f"order {o}: {why.get((key, o), 'no score')}" for o in ORDERS if orders[o] is None)
            verdicts[key] = Verdict(pair, orders, failure)
        return verdicts


def quote(reply: str, head: int = QUOTE_CHARS[0], tail: int = QUOTE_CHARS[1]) -> str:
    """``reply`` whole when short, else its first ``head`` and last ``tail`` characters with a note
    of what was left out: what a re-ask shows the judge of its unparseable reply."""
    left_out = len(reply) - head - tail
    if left_out <= 0:
        return reply
    return f"{reply[:head]}\n[... {left_out} characters left out ...]\n{reply[len(reply) - tail:]}"


def _excerpt(text: str, n: int = 60) -> str:
    one_line = " ".join(text.split())
    return repr(one_line if len(one_line) <= n else one_line[:n] + "…")
