"""The LLM judge against a loopback chat-completions server serving scripted scores and garbage."""

from __future__ import annotations

import pytest

from gad.eval.judge import Judge, JudgeConfig, parse_scores
from gad.eval.metrics import aggregate_judge_scores
from gad.eval.sets import EvalItem
from tests.eval.scripted_judge import ScriptedJudge
from tests.teacher.fake_api import FakeChatAPI

KEY = "sk-judge-test-0123456789abcdef"


def local_judge(api: FakeChatAPI, folder, **settings) -> Judge:
    """A judge on the loopback server (no key needed), no progress bar."""
    return Judge(JudgeConfig(model="j", base_url=api.url, **settings), folder, api_key="none-needed", progress=False)


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
        judge = local_judge(api, tmp_path)
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


def test_one_refused_item_is_its_failure_the_rest_is_judged(tmp_path):
    """A judge with a small context refuses one item's reference (the question is too long) and
    another item's pairwise prompt (the answer is too long): those two are failures with the
    server's reason, the other items are judged, nothing stops."""
    long_question, long_answer = "why " * 700, "because " * 700
    items = _items() + [EvalItem(id="long-q", messages=[{"role": "user", "content": long_question}])]
    answers = {"a": "x" * 40, "b": "y" * 10, "c": long_answer, "d": "w" * 10, "long-q": "short"}
    with FakeChatAPI(reply=ScriptedJudge(), context_tokens=600) as api:
        judge = local_judge(api, tmp_path, max_tokens=50)
        refs = judge.references([("s", it) for it in items])
        verdicts = judge.score([("s", it, answers[it.id]) for it in items], refs)
        assert refs[("s", "long-q")] is None and api.count(long_question) == 1  # refused once, not retried
        hits = len(api.hits)
        # a rerun does not send the refused requests again
        again = local_judge(api, tmp_path, max_tokens=50)
        again.score([("s", it, answers[it.id]) for it in items], again.references([("s", it) for it in items]))
        assert len(api.hits) == hits
    assert all(verdicts[("s", k)].pair is not None for k in "abd")
    assert "no reference answer" in verdicts[("s", "long-q")].failure
    assert "maximum context length is 600 tokens" in verdicts[("s", "long-q")].failure
    c = verdicts[("s", "c")]
    assert c.pair is None and "order sr: the judge refused the request" in c.failure and "order rs" in c.failure
    assert "context length exceeded" in c.failure


def test_reask_quotes_a_bounded_part_of_the_bad_reply(tmp_path):
    """A long unparseable reply is quoted back in part (head and tail), so the re-ask fits the
    judge's context; quoting it whole would not (the original prompt plus 3,000 words)."""
    items = _items()[:2]
    script = ScriptedJudge(garbage_first={items[0].prompt}, garbage_reply="I cannot decide. " + "hmm " * 3000)
    with FakeChatAPI(reply=script, context_tokens=600) as api:
        judge = local_judge(api, tmp_path, max_tokens=50)
        verdicts = judge.score([("s", it, "answer") for it in items], judge.references([("s", it) for it in items]))
        refused = [h for h in api.hits if h.fault == "400"]
    assert not refused
    assert verdicts[("s", items[0].id)].pair is not None  # the re-ask parsed
    assert script.calls["retry"] == 2
    assert max(script.prompt_chars["retry"]) <= max(script.prompt_chars["pairwise"]) + 1500


def test_quote_keeps_head_and_tail_of_a_long_reply():
    from gad.eval.judge import quote

    assert quote("short reply") == "short reply"
    long = "A" * 500 + "B" * 1000 + "C" * 300
    q = quote(long, head=400, tail=200)
    assert q == "A" * 400 + "\n[... 1200 characters left out ...]\n" + "C" * 200
    assert quote(long, head=10, tail=0) == "A" * 10 + "\n[... 1790 characters left out ...]\n"


def test_the_same_refusal_on_every_item_stops_the_judge(tmp_path):
    """A max_tokens larger than the judge's whole context: every request is refused the same way;
    that is the setup, so the judge stops with the server's reason instead of failing every item,
    says what to do (no --retry-rejected in gad eval) and sets nothing aside: a rerun asks again."""
    from gad.eval.judge import JudgeError

    with FakeChatAPI(reply=ScriptedJudge(), context_tokens=40) as api:
        judge = local_judge(api, tmp_path, max_tokens=50)
        with pytest.raises(JudgeError, match=r"3 different prompts in a row.*maximum context length is 40 tokens") as e:
            judge.references([("s", it) for it in _items()])
        assert "--judge-max-tokens" in str(e.value) and "new --out" in str(e.value)
        assert "--retry-rejected" not in str(e.value)
        api.context_tokens = 4096  # the judge's setup fixed
        again = local_judge(api, tmp_path, max_tokens=50)
        refs = again.references([("s", it) for it in _items()])
    assert all(refs.values())


def test_adjacent_answers_over_the_context_do_not_stop_the_judge(tmp_path):
    """Two over-long student answers next to each other: four refused requests in a row (two items,
    two orders), each too long by itself; those two items are failures, the rest is judged."""
    items = _items() + [EvalItem(id="e", messages=[{"role": "user", "content": "say hi"}])]
    long_answer = "because " * 700
    answers = {"a": "x" * 40, "b": long_answer, "c": long_answer + "again", "d": "w" * 10, "e": "hi"}
    with FakeChatAPI(reply=ScriptedJudge(), context_tokens=600) as api:
        judge = local_judge(api, tmp_path, max_tokens=50, concurrency=1)
        verdicts = judge.score([("s", it, answers[it.id]) for it in items], judge.references([("s", it) for it in items]))
    assert all(verdicts[("s", k)].pair is not None for k in "ade")
    assert all("context length exceeded" in verdicts[("s", k)].failure for k in "bc")


def test_a_refusal_streak_counts_items_not_orders_or_retries(tmp_path):
    """The same refusal (a content policy) on both orders of two adjacent items is two prompts, not
    four: the judge goes on; on three adjacent items it is the setup and stops."""
    from gad.eval.judge import JudgeError, pairwise_messages, render_question

    items = _items() + [EvalItem(id="e", messages=[{"role": "user", "content": "say hi"}])]
    refs = {it.prompt: f"reference {it.id}" for it in items}

    def refused(ids):  # the pairwise prompts (both orders) of these items, as the server sees them
        keys = set()
        for it in items:
            if it.id in ids:
                q, ref = render_question(it.messages), refs[it.prompt]
                keys |= {pairwise_messages(q, "answer", ref)[-1]["content"],
                         pairwise_messages(q, ref, "answer")[-1]["content"]}
        return keys

    with FakeChatAPI(reply=ScriptedJudge(references=refs), policy=refused({"b", "c"})) as api:
        judge = local_judge(api, tmp_path, concurrency=1)
        verdicts = judge.score([("s", it, "answer") for it in items], judge.references([("s", it) for it in items]))
        assert all(verdicts[("s", k)].pair is not None for k in "ade")
        assert all("content policy" in verdicts[("s", k)].failure for k in "bc")

        api.policy = refused({"b", "c", "d"})
        judge = local_judge(api, tmp_path / "new", concurrency=1)
        refs_new = judge.references([("s", it) for it in items])
        with pytest.raises(JudgeError, match="3 different prompts in a row.*content policy"):
            judge.score([("s", it, "answer") for it in items], refs_new)
