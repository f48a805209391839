"""`gad report`: the balance warnings fire on the patterns they name, and the files are written."""

import json

from gad.report import balance_warnings, write_run_report


def rows(n, **series):
    return [{"step": i + 1, **{k.replace("__", "/"): f(i) for k, f in series.items()}} for i in range(n)]


def test_balanced_run_has_no_warnings():
    r = rows(10, disc__accuracy=lambda i: 0.7, reward__mean=lambda i: 0.1 * i,
             gen__response_length_mean=lambda i: 100 + i, policy__entropy=lambda i: 2.0)
    assert balance_warnings(r) == []


def test_strong_discriminator():
    w = balance_warnings(rows(10, disc__accuracy=lambda i: 0.5 if i < 5 else 0.99))
    assert len(w) == 1 and "D accuracy stuck above 0.95" in w[0]


def test_reward_rising_with_fast_length_growth():
    w = balance_warnings(rows(10, reward__mean=lambda i: float(i), gen__response_length_mean=lambda i: 50.0 * (1 + i)))
    assert len(w) == 1 and "possible reward hacking" in w[0]
    # length growing with a *falling* reward is not that pattern
    assert balance_warnings(rows(10, reward__mean=lambda i: -float(i), gen__response_length_mean=lambda i: 50.0 * (1 + i))) == []


def test_entropy_collapse():
    w = balance_warnings(rows(10, policy__entropy=lambda i: 3.0 if i < 5 else 0.1))
    assert len(w) == 1 and "entropy collapse" in w[0]


def test_report_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(
        8, disc__accuracy=lambda i: 1.0, reward__mean=lambda i: 0.5, time__rollout=lambda i: 1.0)))
    (run / "config.yaml").write_text("stage: train\n")
    page = write_run_report([run], tmp_path / "out")
    text = page.read_text()
    assert "D accuracy stuck above" in text and "run-curves.png" in text
    assert (tmp_path / "out" / "run-curves.png").stat().st_size > 1000
    assert "## run (stage train, 8 steps)" in (tmp_path / "out" / "report.md").read_text()


def test_report_states_the_live_monitor_either_way(tmp_path):
    """The monitor's flags (``balance/*``) in the report: when each condition held, or that none did."""
    for name, flag in (("quiet", lambda i: 0.0), ("loud", lambda i: float(i >= 3))):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(
            6, reward__mean=lambda i: 0.5, balance__d_too_strong=flag, balance__d_lost=lambda i: 0.0)))
        (run / "config.yaml").write_text("stage: train\n")
    text = write_run_report([tmp_path / "quiet", tmp_path / "loud"], tmp_path / "out").read_text()
    assert "checked at each of the 6 steps, no condition held" in text
    assert "d_too_strong held for 3 steps from step 4 (still at the end)" in text


def test_short_runs_still_get_trend_warnings():
    # 8 steps: the trend windows shrink to 4 steps each instead of never firing
    w = balance_warnings(rows(8, policy__entropy=lambda i: 3.0 if i < 4 else 0.1))
    assert len(w) == 1 and "entropy collapse" in w[0]
    assert balance_warnings(rows(3, policy__entropy=lambda i: 3.0 if i < 1 else 0.1)) == []  # no trend in 3 steps


def metrics(acc, f1, rl, length):
    return {"n": 10, "distinguishability": {"accuracy": acc, "low": acc - 0.1, "high": acc + 0.1},
            "ngram_f1": {"1": f1, "2": f1 / 2}, "rouge_l": {"value": rl}, "length": {"mean": length},
            "reference_length": {"mean": 20.0}, "n_truncated": 1}


def test_comparison_shows_precision_coverage_and_paired_differences():
    from gad.report.comparison import comparison, paired_rows

    def est(v, paired=None):
        return {"value": v, "low": v - 0.1, "high": v + 0.1, "n": 10, "n_tokens": 80, "paired": paired or {}}

    results = {"untrained": metrics(0.95, 0.20, 0.10, 80.0), "gad": metrics(0.70, 0.30, 0.15, 30.0)}
    results["untrained"].update(precision=est(-3.0), coverage=est(-2.5))
    results["gad"].update(precision=est(-2.0, {"untrained": {"value": 1.0, "low": 0.4, "high": 1.6, "n": 10}}),
                          coverage=est(-2.4, {"untrained": {"value": 0.1, "low": -0.2, "high": 0.3, "n": 10}}))
    head, table, nums = comparison(results, {}, ["a"] * 4, None)
    p, c = (next(i for i, h in enumerate(head) if h.startswith(k)) for k in ("precision", "coverage"))
    assert table[1][p] == "-2.000 [-2.100, -1.900]" and table[0][c] == "-2.500 [-2.600, -2.400]"
    assert table[2][p] == table[2][c] == "–" and table[1][-1] == "1/10"  # the teacher row; truncation still last
    assert nums["gad"]["precision"] == -2.0
    assert paired_rows(results) == [["precision", "gad − untrained", "+1 [+0.4, +1.6]", "10", "yes"],
                                    ["coverage", "gad − untrained", "+0.1 [-0.2, +0.3]", "10", "no"]]
    # without the measures, the table is as before
    del results["gad"]["precision"], results["gad"]["coverage"], results["untrained"]["precision"], results["untrained"]["coverage"]
    assert not any(h.startswith(("precision", "coverage")) for h in comparison(results, {}, ["a"], None)[0])


def test_comparison_and_verdict_by_hand():
    from gad.report.comparison import closer, comparison, style_rate

    assert style_rate([" in short: yes", "No.", "In short: no"], "In short:") == 2 / 3
    results = {"untrained": metrics(0.95, 0.20, 0.10, 80.0), "gad": metrics(0.70, 0.30, 0.15, 30.0)}
    answers = {"untrained": ["Well..."] * 4, "gad": ["In short: x"] * 3 + ["No"]}
    head, table, nums = comparison(results, answers, ["In short: a"] * 4, "In short:")
    assert table[0][:2] == ["untrained", "0%"] and table[1][:2] == ["gad", "75%"] and table[2][:2] == ["teacher", "100%"]
    assert table[1][2] == "0.700 [0.600, 0.800]" and table[1][-1] == "1/10"
    better, worse, tied = closer(nums, "gad", "untrained")
    assert sorted(better) == sorted(["distinguishability", "F1@1", "F1@2", "ROUGE-L", "length", "style"])
    assert not worse and not tied
    # closeness in length and style is distance to the teacher's value, not "more is better";
    # differences inside the tie margins are ties
    results["gad"]["length"]["mean"] = 200.0
    results["gad"]["rouge_l"]["value"] = 0.105
    better, worse, tied = closer(comparison(results, answers, ["In short: a"] * 4, "In short:")[2], "gad", "untrained")
    assert worse == ["length"] and tied == ["ROUGE-L"]


def test_live_monitor_names_each_condition_once_when_it_starts():
    """The conditions the run checks as it goes: D lost the student, and one phrase repeated across
    samples far more than in the teacher's responses; each reported once, flagged while it holds."""
    from gad.trainer.balance import BalanceMonitor, imbalances, repetition_stats

    assert "d_lost" in imbalances(rows(10, disc__accuracy=lambda i: 0.3))
    assert "d_lost" not in imbalances(rows(9, disc__accuracy=lambda i: 0.3))  # two windows needed
    same = repetition_stats([[1, 2, 3, 4, 9]] * 6 + [[5, 6, 7, 8]] * 2, [[7, 7, 7, 7, 7]] * 4)
    assert same["balance/repeated_ngram_frac"] == 0.75 and same["balance/teacher_ngram_frac"] == 0.0
    shared = repetition_stats([[1, 2, 3, 4, i] for i in range(8)], [[1, 2, 3, 4, 0]] * 2)
    assert shared["balance/repeated_ngram_frac"] == 1.0 and shared["balance/teacher_ngram_frac"] == 1.0
    assert shared["balance/repeated_length_frac"] == 1.0 and shared["balance/teacher_length_frac"] == 1.0

    monitor = BalanceMonitor()
    said = []
    for step in range(1, 13):
        repeat = 0.95 if step > 4 else 0.2
        flags, started = monitor.update(step, {"balance/repeated_ngram_frac": repeat, "balance/teacher_ngram_frac": 0.1,
                                               "balance/repeated_length_frac": 0.2, "balance/teacher_length_frac": 0.2})
        said += [(step, m) for m in started]
        assert flags["balance/repetition"] == float(step >= 9)  # the last window's mean above 0.8 from step 9
    assert len(said) == 1 and said[0][0] == 9 and "repeats one phrase" in said[0][1]
    # a phrase the teacher uses as often (a house style) is no warning
    assert not imbalances(rows(6, balance__repeated_ngram_frac=lambda i: 1.0, balance__teacher_ngram_frac=lambda i: 0.9))
