"""Text metrics for evaluation: small pure functions over strings and lists of numbers.

Every function takes plain Python values (no models, no I/O) so that ``gad eval`` can call it on
``(prompt, student response, reference response)`` lists; they are unit-tested against
hand-computed values in ``tests/eval/test_eval_metrics.py``.

Tokenization: the overlap metrics use :func:`default_tokenize` (lower-cased ``\\w+`` runs, as
``rouge_score`` does for ASCII); lengths default to whitespace words. Both accept any
``tokenize: Callable[[str], list]`` instead, e.g. a Hugging Face tokenizer's ``tokenize``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

Tokenize = Callable[[str], Sequence]

_WORD = re.compile(r"\w+")


def default_tokenize(text: str) -> list[str]:
    """Lower-cased word tokens: ``"Hello, World!" -> ["hello", "world"]``."""
    return _WORD.findall(text.lower())


def whitespace_tokenize(text: str) -> list[str]:
    """Whitespace-separated words, the default unit of response length."""
    return text.split()


# ---------------------------------------------------------------------------------------------------
# N-gram overlap (the GAD paper's Fig. 4) and ROUGE-L


def ngrams(tokens: Sequence, n: int) -> Counter:
    """Counts of the contiguous n-grams of ``tokens`` (empty when ``len(tokens) < n``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: float, n_candidate: int, n_reference: int) -> float:
    if n_candidate == 0 and n_reference == 0:
        return 1.0  # nothing to compare at this order on either side: identical
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_candidate, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def ngram_f1(candidate: Sequence, reference: Sequence, n: int) -> float:
    """F1 of the n-gram overlap between two token sequences, with clipped counts.

    ``overlap = Σ_g min(count_c(g), count_r(g))``; precision = overlap / #candidate n-grams, recall =
    overlap / #reference n-grams. When neither side has an n-gram (both shorter than n) the score is
    1; when only one side has none it is 0.

    Example: candidate ``a b a``, reference ``a a``, n = 1: overlap = min(2, 2) = 2, P = 2/3, R = 1,
    F1 = 0.8.
    """
    c, r = ngrams(candidate, n), ngrams(reference, n)
    overlap = sum(min(count, r[g]) for g, count in c.items())
    return _f1(overlap, sum(c.values()), sum(r.values()))


NGRAM_NS = tuple(range(1, 7))
"""The n of the n-gram overlap F1: 1…6, as in the paper's Fig. 4."""


def ngram_f1_by_n(
    candidates: Sequence[str],
    references: Sequence[str],
    ns: Iterable[int] = NGRAM_NS,
    tokenize: Tokenize = default_tokenize,
) -> dict[int, float]:
    """Mean over items of :func:`ngram_f1` for each n (default 1…6, as in the paper's Fig. 4)."""
    _check_pairs(candidates, references)
    toks = [(tokenize(c), tokenize(r)) for c, r in zip(candidates, references)]
    return {n: sum(ngram_f1(c, r, n) for c, r in toks) / len(toks) for n in ns}


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``.

    Bit-parallel (Crochemore et al. 2001, "A fast and practical bit-vector algorithm for the longest
    common subsequence problem"): one big-integer add/or/and per token of ``b`` instead of a
    ``len(a) × len(b)`` table, so 1,500-token responses cost microseconds, not a second.
    Bit i of ``v`` is 0 where the LCS so far "used" position i of ``a``.
    """
    if not a or not b:
        return 0
    match: dict = {}
    for i, token in enumerate(a):
        match[token] = match.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & match.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l(candidate: Sequence, reference: Sequence, beta: float = 1.0) -> float:
    """ROUGE-L F-measure (Lin 2004) of two token sequences.

    ``P = LCS / len(candidate)``, ``R = LCS / len(reference)``,
    ``F = (1 + β²) P R / (R + β² P)``; β = 1 (the F1 that ``rouge_score`` reports) by default.
    Both empty gives 1, one empty gives 0.
    """
    if not candidate and not reference:
        return 1.0
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(candidate), lcs / len(reference)
    return (1 + beta**2) * p * r / (r + beta**2 * p)


def rouge_l_scores(
    candidates: Sequence[str], references: Sequence[str], tokenize: Tokenize = default_tokenize
) -> list[float]:
    """Per-item :func:`rouge_l` of tokenized strings."""
    _check_pairs(candidates, references)
    return [rouge_l(tokenize(c), tokenize(r)) for c, r in zip(candidates, references)]


def _check_pairs(candidates: Sequence, references: Sequence) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    if not candidates:
        raise ValueError("no items")


# ---------------------------------------------------------------------------------------------------
# Lengths


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between closest ranks (numpy's default).

    Example: ``percentile([1, 2, 3, 4], 90)``: position 0.9 × 3 = 2.7, so 3 + 0.7 × (4 − 3) = 3.7.
    """
    if not values:
        raise ValueError("no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def length_stats(texts: Sequence[str], tokenize: Tokenize = whitespace_tokenize) -> dict[str, float]:
    """Response lengths in tokens: ``{"n", "mean", "median", "p90", "max", "min"}``."""
    lengths = [len(tokenize(t)) for t in texts]
    return summarize_lengths(lengths)


def summarize_lengths(lengths: Sequence[int]) -> dict[str, float]:
    """:func:`length_stats` of precomputed lengths."""
    if not lengths:
        raise ValueError("no lengths")
    return {
        "n": len(lengths),
        "mean": sum(lengths) / len(lengths),
        "median": percentile(lengths, 50),
        "p90": percentile(lengths, 90),
        "max": max(lengths),
        "min": min(lengths),
    }


# ---------------------------------------------------------------------------------------------------
# Intervals


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float] | None = None,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile-bootstrap interval for ``statistic`` (default: the mean) of ``values``.

    Resamples the items with replacement ``n_resamples`` times from ``numpy.random.default_rng(seed)``,
    so the same inputs and seed always give the same interval. One value gives a zero-width interval.
    """
    import numpy as np

    if len(values) == 0:
        raise ValueError("no values to bootstrap")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))  # (R, n)
    if statistic is None:
        point = float(x.mean())
        stats = x[idx].mean(axis=1)  # (R,)
    else:
        point = float(statistic(x))
        stats = np.array([statistic(x[i]) for i in idx])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Estimate(point, float(low), float(high), len(x))


# ---------------------------------------------------------------------------------------------------
# Judge score aggregation (the paper's protocol; the judge client lives elsewhere)


@dataclass(frozen=True)
class JudgeScore:
    """``s_student / (s_student + s_ref) × 100`` averaged over prompts, with a bootstrap interval.

    50 means the judge rates the student like the reference. ``n_failed`` counts prompts whose judge
    replies could not be parsed (after retries): they are left out of the mean, never scored.
    """

    score: float
    low: float
    high: float
    n_scored: int
    n_failed: int
    per_item: tuple[float | None, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_item"] = list(self.per_item)
        return d


def judge_ratio(s_student: float, s_ref: float) -> float | None:
    """``s_student / (s_student + s_ref) × 100``; ``None`` for scores that cannot be combined
    (negative, NaN, or both zero)."""
    total = s_student + s_ref
    if any(math.isnan(s) or s < 0 for s in (s_student, s_ref)) or total <= 0:
        return None
    return 100.0 * s_student / total


def combine_orders(orders: Sequence[tuple[float, float] | None]) -> tuple[float, float] | None:
    """One prompt's ``(s_student, s_ref)`` from the judge's passes in different presentation orders.

    Each entry is that pass's ``(s_student, s_ref)`` (already mapped back from positions to answers),
    or ``None`` where the pass failed. Scores are averaged over the passes, which cancels the judge's
    position bias; if any pass failed the prompt fails (``None``), since a one-sided score keeps the
    bias.

    Example: ``[(8, 6), (6, 6)]`` (student shown first, then second) → ``(7.0, 6.0)``.
    """
    if not orders or any(o is None for o in orders):
        return None
    return (sum(o[0] for o in orders) / len(orders), sum(o[1] for o in orders) / len(orders))


def aggregate_judge_scores(
    pairs: Sequence[tuple[float, float] | None],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> JudgeScore:
    """Aggregates per-prompt judge scores into the reported score.

    Args:
        pairs: one entry per prompt: ``(s_student, s_ref)`` (each already averaged over the two
            presentation orders by the judge), or ``None`` where the judge failed.

    Returns a :class:`JudgeScore`; with no scorable prompt, ``score`` and the interval are NaN.

    Example: pairs ``[(8, 8), (6, 2), None]`` → ratios 50 and 75, score 62.5, ``n_failed`` 1.
    """
    ratios = [None if p is None else judge_ratio(float(p[0]), float(p[1])) for p in pairs]
    scored = [r for r in ratios if r is not None]
    n_failed = len(ratios) - len(scored)
    if not scored:
        nan = float("nan")
        return JudgeScore(nan, nan, nan, 0, n_failed, tuple(ratios))
    est = bootstrap_ci(scored, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return JudgeScore(est.value, est.low, est.high, len(scored), n_failed, tuple(ratios))
