"""Distinguishability: can an independent classifier tell the student's responses from the teacher's?

A classifier two-sample test (Lopez-Paz & Oquab 2017, "Revisiting Classifier Two-Sample Tests"):
label teacher responses 1 and student responses 0, train TF-IDF + logistic regression, and measure
cross-validated accuracy on held-out prompts. About 50% means the two sets cannot be told apart —
GAD's own objective, measured by a judge that was never trained against the student. It needs no
API and runs on CPU in seconds.

Reading it: at or below 50% (within the interval) means indistinguishable. Cross-validated accuracy
on indistinguishable data scatters a little *below* 50% (holding a text out tilts the training set
against it), so a few points under chance is not a sign of anything.

When the responses are paired (the same prompts answered by both), a prompt's two responses always
land in the same fold, so the classifier never sees the test prompt's topic during training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from gad.stats import binomial_two_sided_p, wilson_interval


@dataclass(frozen=True)
class DistinguishResult:
    """Cross-validated accuracy of telling set A (label 1) from set B (label 0).

    ``accuracy`` pools the held-out predictions of all folds; ``low``/``high`` is its 95% Wilson
    interval; ``p_value`` the exact two-sided binomial test of accuracy = 50% (predictions treated as
    independent, an approximation). ``n`` is the number of responses classified (both sets).
    """

    accuracy: float
    low: float
    high: float
    p_value: float
    n: int
    folds: int

    def to_dict(self) -> dict:
        return asdict(self)


def two_sample_test(
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    *,
    paired: bool | None = None,
    folds: int = 5,
    seed: int = 0,
    max_features: int = 20000,
) -> DistinguishResult:
    """Classifier two-sample test between two lists of texts.

    Args:
        texts_a: e.g. the teacher's (reference) responses.
        texts_b: e.g. the student's responses.
        paired: whether ``texts_a[i]`` and ``texts_b[i]`` answer the same prompt (kept in one fold).
            Default: ``True`` when the lists have the same length.
        folds: number of cross-validation folds (reduced to what the data allows, at least 2).
        seed: fold shuffling seed.
        max_features: vocabulary cap (the most frequent word uni- and bigrams over all texts).
    """
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if paired is None:
        paired = len(texts_a) == len(texts_b)
    if paired and len(texts_a) != len(texts_b):
        raise ValueError(f"paired texts need equal lengths, got {len(texts_a)} and {len(texts_b)}")
    k = min(folds, len(texts_a), len(texts_b))
    if k < 2:
        raise ValueError(f"need at least 2 texts on each side, got {len(texts_a)} and {len(texts_b)}")

    texts = list(texts_a) + list(texts_b)
    y = np.array([1] * len(texts_a) + [0] * len(texts_b))
    if paired:
        groups = np.concatenate([np.arange(len(texts_a)), np.arange(len(texts_b))])
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(texts, y, groups)
    else:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(texts, y)

    # Counting word uni- and bigrams is the slow part (seconds for 1,600 long responses), so it runs
    # once: the vocabulary is picked by frequency over all texts, which sees no label. The IDF weights
    # and the classifier are fit per fold on the training texts only.
    try:
        # \w+ keeps one-character tokens ("a", "I", digits) that the default pattern drops.
        counts = CountVectorizer(
            ngram_range=(1, 2), max_features=max_features, token_pattern=r"(?u)\b\w+\b"
        ).fit_transform(texts)  # (n, V) sparse
    except ValueError:  # not one word in any text (e.g. all empty): nothing to learn from
        counts = None

    correct = 0
    for train, test in splits:
        if counts is None or len(set(y[train])) < 2:
            predicted = np.full(len(test), np.bincount(y[train], minlength=2).argmax())
        else:
            tfidf = TfidfTransformer(sublinear_tf=True).fit(counts[train])
            model = LogisticRegression(solver="liblinear").fit(tfidf.transform(counts[train]), y[train])
            predicted = model.predict(tfidf.transform(counts[test]))
        correct += int((predicted == y[test]).sum())

    n = len(texts)
    low, high = wilson_interval(correct, n)
    return DistinguishResult(correct / n, low, high, binomial_two_sided_p(correct, n), n, k)
