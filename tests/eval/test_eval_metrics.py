"""Metrics against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
import random

import pytest

from gad import stats
from gad.eval import metrics as M


def test_default_tokenize_lowercases_and_drops_punctuation():
    assert M.default_tokenize("Hello, World! It's 2 o'clock.") == [
        "hello",
        "world",
        "it",
        "s",
        "2",
        "o",
        "clock",
    ]


def test_ngrams_counts():
    assert M.ngrams(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert M.ngrams(["a"], 2) == {}
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        M.ngrams(["a"], 0)


def test_ngram_f1_clips_counts():
    # candidate a b a, reference a a: unigram overlap min(2,2)=2; P=2/3, R=2/2 → F1 = 2·(2/3)·1/(5/3) = 0.8
    assert M.ngram_f1("a b a".split(), "a a".split(), 1) == pytest.approx(0.8)
    # candidate a a a a, reference a: overlap clipped to 1; P=1/4, R=1 → F1 = 2·0.25/1.25 = 0.4
    assert M.ngram_f1("a a a a".split(), ["a"], 1) == pytest.approx(0.4)


def test_ngram_f1_bigrams():
    # cand "the cat sat on the mat" bigrams: the-cat, cat-sat, sat-on, on-the, the-mat (5)
    # ref  "the cat is on the mat"  bigrams: the-cat, cat-is, is-on, on-the, the-mat (5)
    # overlap 3 → P = R = 3/5 → F1 = 0.6
    cand, ref = "the cat sat on the mat".split(), "the cat is on the mat".split()
    assert M.ngram_f1(cand, ref, 2) == pytest.approx(0.6)
    # trigrams: cand {the-cat-sat, cat-sat-on, sat-on-the, on-the-mat}, ref shares only on-the-mat → 1/4, 1/4
    assert M.ngram_f1(cand, ref, 3) == pytest.approx(0.25)


def test_ngram_f1_edge_cases():
    assert M.ngram_f1(["a"], ["b"], 2) == 1.0  # neither has a bigram
    assert M.ngram_f1(["a", "b"], ["a"], 2) == 0.0  # only one side has one
    assert M.ngram_f1(["a"], ["b"], 1) == 0.0


def test_ngram_f1_by_n_averages_over_items():
    # item 1 identical → 1.0 for n=1,2; item 2: "x y" vs "y z": unigram overlap 1 → P=R=1/2 → 0.5; bigram 0
    out = M.ngram_f1_by_n(["A b", "x y"], ["a b", "y z"], ns=(1, 2))
    assert out == {1: pytest.approx(0.75), 2: pytest.approx(0.5)}
    with pytest.raises(ValueError, match="1 candidates but 0 references"):
        M.ngram_f1_by_n(["a"], [], ns=(1,))


def _lcs_table(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def test_lcs_length_by_hand_and_against_the_table():
    assert M.lcs_length("ABCBDAB", "BDCABA") == 4  # BCBA, the textbook example (CLRS 15.4)
    assert M.lcs_length("", "abc") == 0
    assert M.lcs_length("abc", "abc") == 3
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        assert M.lcs_length(a, b) == _lcs_table(a, b)


def test_rouge_l():
    # cand "the cat sat on the mat" (6), ref "the cat is on the mat" (6): LCS the cat on the mat = 5
    # P = R = 5/6 → F1 = 5/6
    cand, ref = "the cat sat on the mat".split(), "the cat is on the mat".split()
    assert M.rouge_l(cand, ref) == pytest.approx(5 / 6)
    # cand "a b" ref "a c d e": LCS 1, P = 1/2, R = 1/4 → F1 = 2·(1/8)/(3/4) = 1/3
    assert M.rouge_l("a b".split(), "a c d e".split()) == pytest.approx(1 / 3)
    # β = 2 weights recall: (1+4)·(1/8)/(1/4 + 4·1/2) = 0.625/2.25
    assert M.rouge_l("a b".split(), "a c d e".split(), beta=2) == pytest.approx(0.625 / 2.25)
    assert M.rouge_l([], []) == 1.0
    assert M.rouge_l(["a"], []) == 0.0
    assert M.rouge_l_scores(["The cat."], ["the CAT"]) == [pytest.approx(1.0)]


def test_percentile_and_length_stats():
    assert M.percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)  # position 2.7 → 3 + 0.7·(4-3)
    assert M.percentile([5], 90) == 5
    stats = M.length_stats(["a b c", "a", "a b c d e f", "a b"])  # lengths 3, 1, 6, 2
    # sorted 1 2 3 6: mean 3, median 2.5, p90 at position 2.7 → 3 + 0.7·3 = 5.1
    assert stats == {"n": 4, "mean": 3.0, "median": 2.5, "p90": pytest.approx(5.1), "max": 6, "min": 1}
    # any tokenize callable: characters here
    assert M.length_stats(["abc", "a"], tokenize=list)["mean"] == 2.0


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    est = M.bootstrap_ci(values, seed=1)
    assert est.value == pytest.approx(4.0)
    assert est.low < 4.0 < est.high
    assert 1.0 <= est.low and est.high <= 10.0
    assert M.bootstrap_ci(values, seed=1) == est
    assert M.bootstrap_ci(values, seed=2) != est
    # a constant sample has a zero-width interval; a custom statistic is used as given
    assert M.bootstrap_ci([3.0, 3.0, 3.0]).low == M.bootstrap_ci([3.0, 3.0, 3.0]).high == 3.0
    assert M.bootstrap_ci(values, statistic=lambda x: float(max(x)), n_resamples=50).value == 10.0
    with pytest.raises(ValueError, match="no values to bootstrap"):
        M.bootstrap_ci([])


def test_wilson_interval_by_hand():
    # 8/10, z = 1.959964: centre (0.8 + z²/20)/(1 + z²/10) ± z·sqrt(0.016 + z²/400)/(1 + z²/10)
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-5)
    assert high == pytest.approx(0.94332, abs=1e-5)
    assert stats.wilson_interval(0, 10)[0] == 0.0
    assert stats.wilson_interval(10, 10)[1] == 1.0


def test_binomial_two_sided_p():
    # 8 of 10 at p = 1/2: P(X ≥ 8) = (45 + 10 + 1)/1024 = 56/1024, doubled by symmetry
    assert stats.binomial_two_sided_p(8, 10) == pytest.approx(112 / 1024)
    assert stats.binomial_two_sided_p(5, 10) == pytest.approx(1.0)
    assert stats.binomial_two_sided_p(0, 0) == 1.0
    # large n (1,610 responses) must not overflow; scipy's exact test agrees
    from scipy.stats import binomtest

    for k, n in ((805, 1610), (880, 1610), (3, 20)):
        assert stats.binomial_two_sided_p(k, n) == pytest.approx(binomtest(k, n).pvalue, rel=1e-6)
    assert stats.binomial_two_sided_p(2, 10, p=0.3) == pytest.approx(binomtest(2, 10, 0.3).pvalue, rel=1e-6)


def test_judge_aggregation_by_hand():
    # (8, 8) → 50; (6, 2) → 75; None → failure; (0, 0) → cannot be combined → failure
    score = M.aggregate_judge_scores([(8, 8), (6, 2), None, (0, 0)])
    assert score.score == pytest.approx(62.5)
    assert (score.n_scored, score.n_failed) == (2, 2)
    assert 50 <= score.low <= score.score <= score.high <= 75
    assert score.per_item == (50.0, 75.0, None, None)
    assert M.judge_ratio(3, 1) == 75.0
    assert M.judge_ratio(float("nan"), 1) is None
    empty = M.aggregate_judge_scores([None])
    assert math.isnan(empty.score) and empty.n_failed == 1


def test_combine_orders():
    assert M.combine_orders([(8, 6), (6, 6)]) == (7.0, 6.0)
    assert M.combine_orders([(8, 6), None]) is None
    assert M.combine_orders([]) is None
