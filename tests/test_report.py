"""`gad report`: the balance warnings fire on the patterns they name, and the files are written."""

import json

from gad.report import balance_warnings, write_report


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
    page = write_report([run], tmp_path / "out")
    text = page.read_text()
    assert "D accuracy stuck above" in text and "run-curves.png" in text
    assert (tmp_path / "out" / "run-curves.png").stat().st_size > 1000
    assert "stage `train`" in (tmp_path / "out" / "report.md").read_text()
