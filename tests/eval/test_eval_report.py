"""The two-sample test, evaluate_responses, results.json / report.md / plots, the generations cache."""

from __future__ import annotations

import json
import random

import pytest

from gad.distinguish import two_sample_test
from gad.eval.evaluate import evaluate_responses
from gad.eval.generations import Generation, append_generations, read_generations
from gad.eval.report import write_eval_report
from gad.eval.results import read_results, write_results
from gad.eval.sets import EvalDataError

TOPICS = ["weather", "football", "cooking", "physics", "music", "travel", "history", "gardening"]


def _texts(rng: random.Random, style: str, n: int) -> list[str]:
    """Paired responses to n prompts: the topic follows the prompt, the style marks the writer."""
    filler = ["it", "is", "a", "the", "of", "and", "to", "in", "that", "this"]
    out = []
    for i in range(n):
        words = [TOPICS[i % len(TOPICS)]] * 3 + rng.choices(filler, k=20)
        if style == "hedging":
            words += ["perhaps", "arguably", "maybe"]
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def test_two_sample_test_separates_different_styles():
    rng = random.Random(0)
    result = two_sample_test(_texts(rng, "plain", 40), _texts(rng, "hedging", 40), seed=0)
    assert result.accuracy > 0.9
    assert result.low > 0.5 and result.p_value < 1e-6
    assert (result.n, result.folds) == (80, 5)


def test_two_sample_test_is_near_chance_for_one_distribution():
    rng = random.Random(1)
    result = two_sample_test(_texts(rng, "plain", 60), _texts(rng, "plain", 60), seed=0)
    assert result.low < 0.5 < result.high
    assert 0.3 < result.accuracy < 0.7


def test_two_sample_test_input_checks():
    with pytest.raises(ValueError, match="at least 2"):
        two_sample_test(["a"], ["b"])
    with pytest.raises(ValueError, match="equal lengths"):
        two_sample_test(["a", "b", "c"], ["d", "e"], paired=True)
    assert two_sample_test(["a b", "a c", "a d"], ["x y", "x z"]).folds == 2  # unpaired, folds shrink
    assert two_sample_test(["", ""], ["", ""]).accuracy == 0.5  # nothing to learn from: chance


def test_evaluate_responses_and_report(tmp_path):
    rng = random.Random(0)
    refs = _texts(rng, "hedging", 12)
    prompts = [f"prompt {i}" for i in range(12)]
    student = _texts(rng, "plain", 12)
    results = {
        "teacher-copy": {"toy": evaluate_responses(prompts, refs, refs, judge_pairs=[(5, 5)] * 12)},
        "student": {
            "toy": evaluate_responses(prompts, student, refs, judge_pairs=[(4, 6)] * 11 + [None]),
            "no-refs": evaluate_responses(prompts[:3], ["a b", "c", "d e f"], [None] * 3),
        },
    }
    copy, s = results["teacher-copy"]["toy"], results["student"]["toy"]
    assert copy["ngram_f1"] == {str(n): 1.0 for n in range(1, 7)}
    assert copy["rouge_l"]["value"] == 1.0 and copy["judge"]["score"] == 50.0
    assert s["judge"]["score"] == pytest.approx(40.0) and s["judge"]["n_failed"] == 1
    assert 0 < s["ngram_f1"]["1"] < 1 and s["ngram_f1"]["6"] < s["ngram_f1"]["1"]
    assert s["distinguishability"]["accuracy"] > 0.8
    assert s["length"]["mean"] == 23 and s["reference_length"]["mean"] == 26  # whitespace words
    nr = results["student"]["no-refs"]
    assert nr["ngram_f1"] is None and nr["distinguishability"] is None and nr["length"]["max"] == 3

    results["student"]["all-failed"] = evaluate_responses(
        ["p", "q"], ["a", "b"], ["a", "c"], judge_pairs=[None, None]
    )
    path = write_results(results, tmp_path)
    back = read_results(path)
    assert back["student"]["toy"] == json.loads(json.dumps(results["student"]["toy"]))
    assert back["student"]["all-failed"]["judge"]["score"] is None  # NaN is written as null
    report = write_eval_report(results, tmp_path)
    text = report.read_text()
    assert "## Comparison" in text and "## toy (12 prompts)" in text and "## no-refs (3 prompts)" in text
    assert "| student | 40.0 [40.0, 40.0] (1 failed) |" in text
    assert "*reference*" in text
    assert "| student | – (2 failed) |" in text
    for png in ("toy-lengths.png", "toy-ngram-f1.png", "no-refs-lengths.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    assert not (tmp_path / "no-refs-ngram-f1.png").exists()


def test_evaluate_responses_checks_lengths():
    with pytest.raises(ValueError, match="need one each"):
        evaluate_responses(["p"], ["a", "b"], [None])
    with pytest.raises(ValueError, match="judge scores"):
        evaluate_responses(["p"], ["a"], ["a"], judge_pairs=[])


def test_generations_cache_roundtrip(tmp_path):
    msgs = [{"role": "user", "content": "q"}]
    append_generations(
        tmp_path / "m", [Generation("vicuna80", "1", msgs, "first"), Generation("vicuna80", "2", msgs, "x")]
    )
    append_generations(
        tmp_path / "m", [Generation("vicuna80", "1", msgs, "again", model="ckpt", sampling={"t": 0})]
    )
    gens = read_generations(tmp_path / "m")
    assert list(gens) == [("vicuna80", "1"), ("vicuna80", "2")]
    assert gens[("vicuna80", "1")].response == "again" and gens[("vicuna80", "1")].model == "ckpt"
    (tmp_path / "bad.jsonl").write_text('{"set": "s", "id": 1, "response": "r"}\n')
    with pytest.raises(EvalDataError, match=r"bad.jsonl:1: field 'messages'"):
        read_generations(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match=r"no generations at .*none/generations.jsonl"):
        read_generations(tmp_path / "none")


def test_pending_and_evaluate_generations(tmp_path):
    from gad.eval.evaluate import evaluate_generations, pending_items
    from gad.eval.sets import load_eval_set

    rows = [
        {
            "id": str(i),
            "messages": [{"role": "user", "content": f"q{i}"}],
            "teacher_response": f"answer {i} ok",
        }
        for i in range(4)
    ]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    eval_set = load_eval_set(tmp_path / "toy.jsonl")
    gens = [Generation("toy", str(i), rows[i]["messages"], f"answer {i}") for i in range(3)]
    gens.append(Generation("toy", "3", [{"role": "user", "content": "old prompt"}], "x"))
    append_generations(tmp_path / "m", gens)
    cache = read_generations(tmp_path / "m")
    assert [it.id for it in pending_items(eval_set, cache)] == ["3"]
    with pytest.raises(ValueError, match="1 generated for a different prompt \\(first: 3\\)"):
        evaluate_generations(eval_set, cache)
    append_generations(tmp_path / "m", [Generation("toy", "3", rows[3]["messages"], "answer 3 ok")])
    cache = read_generations(tmp_path / "m")
    assert pending_items(eval_set, cache) == []
    m = evaluate_generations(eval_set, cache, distinguish=False)
    # items 0-2: "answer i" vs "answer i ok": unigram P = 1, R = 2/3 → F1 = 0.8; item 3 identical → 1
    assert m["ngram_f1"]["1"] == pytest.approx((3 * 0.8 + 1) / 4)
    assert m["per_item"]["id"] == ["0", "1", "2", "3"]
