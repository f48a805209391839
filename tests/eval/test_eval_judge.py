"""The LLM judge against a loopback chat-completions server serving scripted scores and garbage."""

from __future__ import annotations

import pytest

from gad.eval.judge import Judge, JudgeConfig, parse_scores
from gad.eval.metrics import aggregate_judge_scores
from gad.eval.sets import EvalItem
from tests.eval.scripted_judge import ScriptedJudge
from tests.teacher.fake_api import FakeChatAPI

KEY = "sk-judge-test-0123456789abcdef"


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("8 6\nbecause", (8.0, 6.0)),
        ("\n  7.5, 9\n", (7.5, 9.0)),
        ("**8 6**\nexplanation", (8.0, 6.0)),
        ("Scores: 10/1", (10.0, 1.0)),
        ("8\n6", None),  # one number on the first line
        ("Assistant 1: 8, Assistant 2: 6", None),  # not guessed at
        ("11 6", None),  # out of 1-10
        ("0 6", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_scores(reply, expected):
    assert parse_scores(reply) == expected


def _items():
    prompts = {"a": "what is the sun", "b": "name a tree", "c": "tell me a story", "d": "why is water blue"}
    return [EvalItem(id=k, messages=[{"role": "user", "content": q}]) for k, q in prompts.items()]


def test_judge_scores_both_orders_retries_garbage_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", KEY)
    items = _items()
    refs = {it.prompt: "x" * 40 for it in items}
    script = ScriptedJudge(references=refs, position_bias=2.0, garbage={"name a tree"},
                           garbage_first={"tell me a story"})
    answers = {"a": "x" * 40, "b": "y" * 10, "c": "z" * 20, "d": "w" * 10}
    with FakeChatAPI(api_key=KEY, reply=script) as api:
        config = JudgeConfig(model="judge-1", base_url=api.url, api_key_env="JUDGE_KEY", parse_retries=2,
                             concurrency=4)
        judge = Judge(config, tmp_path, progress=False)
        references = judge.references([("s", it) for it in items])
        assert references[("s", "a")] == "x" * 40
        verdicts = judge.score([("s", it, answers[it.id]) for it in items], references)
        hits = len(api.hits)

        # Position bias (+2 for Assistant 1) cancels: (8+2, 8) and (8, 8+2) average to (9, 9).
        assert verdicts[("s", "a")].pair == (9.0, 9.0)
        assert verdicts[("s", "a")].orders == {"sr": (10.0, 8.0), "rs": (8.0, 10.0)}
        # 10 of 40 characters -> 2; averaged over orders: (2+2+2)/2 = 3 vs (8 + 10)/2 = 9.
        assert verdicts[("s", "d")].pair == (3.0, 9.0)
        # garbage on the first attempt only: the retry parses
        assert verdicts[("s", "c")].pair is not None
        # garbage every time: a failure with its reason, never a score
        b = verdicts[("s", "b")]
        assert b.pair is None and "unparseable after 3 attempts" in b.failure and "order sr" in b.failure
        # 4 references + 8 first attempts + retries: b twice per order, c once per order
        assert script.calls == {"reference": 4, "pairwise": 8, "retry": 6}

        # A rerun (new Judge, same folder) sends nothing and gives the same verdicts.
        judge2 = Judge(config, tmp_path, progress=False)
        again = judge2.score([("s", it, answers[it.id]) for it in items], judge2.references([("s", it) for it in items]))
        assert len(api.hits) == hits
        assert {k: v.pair for k, v in again.items()} == {k: v.pair for k, v in verdicts.items()}

        # A changed answer is a new request (content-addressed ids), the others stay cached.
        judge2.score([("s", items[0], "x" * 20)], references)
        assert len(api.hits) == hits + 2

    score = aggregate_judge_scores([verdicts[("s", k)].pair for k in "abcd"])
    assert score.n_failed == 1 and score.n_scored == 3
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(), path


def test_judge_without_reference_answer_is_a_failure(tmp_path):
    items = _items()[:2]
    script = ScriptedJudge(references={items[0].prompt: ""})  # an empty reference answer
    with FakeChatAPI(reply=script) as api:
        judge = Judge(JudgeConfig(model="j", base_url=api.url), tmp_path, api_key="none-needed", progress=False)
        refs = judge.references([("s", it) for it in items])
        assert refs[("s", items[0].id)] is None
        verdicts = judge.score([("s", it, "answer") for it in items], refs)
    assert verdicts[("s", items[0].id)].failure == "the judge gave no reference answer"
    assert verdicts[("s", items[1].id)].pair is not None


def test_failed_requests_are_failures_and_a_bad_key_stops_without_leaking(tmp_path, monkeypatch):
    from gad.eval.judge import JudgeError

    items = _items()[:2]
    with FakeChatAPI(reply=ScriptedJudge()) as api:
        judge = Judge(JudgeConfig(model="j", base_url=api.url, max_retries=0), tmp_path, api_key="k" * 12,
                      progress=False)
        refs = judge.references([("s", it) for it in items])
        api.force_status = 503  # every scoring request fails; no transport retries configured
        verdicts = judge.score([("s", it, "answer") for it in items], refs)
    assert all(v.pair is None and "request failed" in v.failure for v in verdicts.values())

    monkeypatch.setenv("JUDGE_KEY", KEY)
    with FakeChatAPI(api_key="the-right-key-000000") as api:  # 401 echoing the key sent
        judge = Judge(JudgeConfig(model="j", base_url=api.url, api_key_env="JUDGE_KEY"), tmp_path / "b",
                      progress=False)
        with pytest.raises(JudgeError, match="401") as e:
            judge.references([("s", it) for it in items])
    assert "401" in str(e.value) and KEY not in str(e.value)
