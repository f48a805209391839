"""Precision and coverage (gad.eval.likelihood): per-token log-likelihoods against a hand computation,
the hidden context, aggregation, and ``gad eval --teacher-model`` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from gad.eval.likelihood import (
    Scoring,
    answer_logprobs,
    likelihood_estimate,
    paired_difference,
    per_token_mean,
    score_answers,
)
from gad.models import load_causal_lm, make_tiny_llama
from tests.conftest import WORDS, make_teacher_set

CONTEXT = [
    {"role": "system", "content": "answer very short and good"},
    {"role": "user", "content": "what is the sun"},
    {"role": "assistant", "content": "yes the sun is a big fire good"},
]
CHAT = [{"role": "user", "content": "tell me about the moon"}]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return load_causal_lm(str(make_tiny_llama(tmp_path_factory.mktemp("teacher") / "m", WORDS, seed=3)))


def test_per_token_logprobs_equal_a_hand_computation(teacher):
    model, tok = teacher
    # The exact sequence, token by token, as the tiny chat template writes it: context + prompt,
    # the generation prompt, then the answer's words and EOS.
    prompt = ["<|system|>", "answer", "very", "short", "and", "good", "<eos>",
              "<|user|>", "what", "is", "the", "sun", "<eos>",
              "<|assistant|>", "yes", "the", "sun", "is", "a", "big", "fire", "good", "<eos>",
              "<|user|>", "tell", "me", "about", "the", "moon", "<eos>", "<|assistant|>"]
    answer = ["the", "moon", "is", "small", "<eos>"]
    ids = tok.convert_tokens_to_ids(prompt + answer)
    assert tok.unk_token_id not in ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    expected = [logp[len(prompt) + t - 1, ids[len(prompt) + t]].item() for t in range(len(answer))]

    got = answer_logprobs(model, tok, CONTEXT + CHAT, "the moon is small")
    assert len(got) == 5  # four words + EOS: the answer ended
    assert got == pytest.approx(expected, abs=1e-5)
    cut = answer_logprobs(model, tok, CONTEXT + CHAT, "the moon is small", ended=False)
    assert len(cut) == 4 and cut == pytest.approx(expected[:4], abs=1e-5)  # cut at the budget: no EOS
    assert per_token_mean(got) == pytest.approx(sum(expected) / 5, abs=1e-5)


def test_batches_score_like_single_answers_and_too_long_is_skipped(teacher):
    model, tok = teacher
    items = [Scoring(CHAT, "the moon is small"), Scoring(CONTEXT + CHAT, "yes good", ended=False),
             Scoring([{"role": "user", "content": "why"}], "because the sun is a big fire and the moon is not"),
             Scoring(CHAT, "", ended=False)]
    batched = score_answers(model, tok, items, batch_size=3)
    for item, lp in zip(items[:3], batched[:3]):
        assert lp == pytest.approx(answer_logprobs(model, tok, item.messages, item.answer, item.ended), abs=1e-5)
    assert batched[3] is None  # no token to score
    assert score_answers(model, tok, items[:1], max_length=8) == [None]  # longer than the model can read


def test_the_hidden_context_changes_precision(teacher):
    model, tok = teacher
    with_context = answer_logprobs(model, tok, CONTEXT + CHAT, "yes the moon is small good")
    without = answer_logprobs(model, tok, CHAT, "yes the moon is small good")
    assert len(with_context) == len(without) == 7
    assert abs(per_token_mean(with_context) - per_token_mean(without)) > 1e-4


def test_aggregation_by_hand():
    est = likelihood_estimate([-1.0, None, -3.0], [4, None, 2])
    assert est["value"] == pytest.approx(-2.0) and est["n"] == 2 and est["n_tokens"] == 6 and est["n_skipped"] == 1
    assert -3.0 <= est["low"] <= est["value"] <= est["high"] <= -1.0
    assert likelihood_estimate([None], [None]) == {"value": None, "low": None, "high": None, "n": 0, "n_tokens": 0,
                                                  "n_skipped": 1}
    d = paired_difference([-1.0, -2.0, None, -4.0], [-1.5, -2.5, -9.0, None])
    assert d["value"] == pytest.approx(0.5) and d["n"] == 2 and d["low"] == d["high"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1.0], [1.0, 2.0])


def test_gad_eval_reports_precision_coverage_and_paired_differences(tmp_path, capsys, monkeypatch):
    from gad.cli import main

    students = [make_tiny_llama(tmp_path / f"student{s}", WORDS, seed=s) for s in (1, 2)]
    teacher_dir = make_tiny_llama(tmp_path / "teacher", WORDS, seed=3)
    context = tmp_path / "context.json"
    context.write_text(json.dumps(CONTEXT))
    data = make_teacher_set(tmp_path / "teach.jsonl", rows=6)
    out = tmp_path / "eval"
    # The students' answers, cached as `gad eval` caches them (a random tiny model mostly says special
    # tokens, which decode to nothing): words, and one answer cut at the token budget.
    items = [json.loads(x) for x in data.read_text().splitlines()]
    for name, spec, answer in (("a", students[0], "yes the sun is good"), ("b", students[1], "no the moon is small")):
        (out / name).mkdir(parents=True)
        (out / name / "generations.jsonl").write_text("".join(json.dumps(
            {"set": "teach", "id": it["id"], "messages": it["messages"], "response": " ".join(answer.split()[: 2 + i % 4]),
             "model": str(spec), "sampling": {"temperature": 0.0, "max_new_tokens": 8}, "truncated": i == 5}) + "\n"
            for i, it in enumerate(items)))
    argv = ["eval", "--model", str(students[0]), "--model", str(students[1]), "--name", "a", "--name", "b",
            "--data", str(data), "--out", str(out), "--max-new-tokens", "8", "--no-progress", "--no-plots",
            "--no-distinguish", "--teacher-model", str(teacher_dir), "--teacher-context", str(context)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["models"]
    for name in ("a", "b"):
        m = results[name]["teach"]
        for kind in ("precision", "coverage"):
            e = m[kind]
            assert e["n"] == 6 and e["low"] <= e["value"] <= e["high"] < 0 and e["n_tokens"] >= 6
            assert len(m["per_item"][kind]) == 6
        assert m["precision"]["scorer"] == f"{teacher_dir} + hidden context (3 messages)"
        assert m["coverage"]["scorer"] == str(students[0] if name == "a" else students[1])
    # the precision of a's first answer, recomputed from its cached answer
    gens = [json.loads(x) for x in (out / "a" / "generations.jsonl").read_text().splitlines()]
    teacher_model, teacher_tok = load_causal_lm(str(teacher_dir))
    first = next(g for g in gens if g["id"] == "q0")
    lp = answer_logprobs(teacher_model, teacher_tok, CONTEXT + first["messages"], first["response"],
                         ended=not first["truncated"])
    assert results["a"]["teach"]["per_item"]["precision"][0] == pytest.approx(sum(lp) / len(lp), abs=1e-5)
    # paired: b − a on the same prompts, the mean of the per-prompt differences
    pa, pb = (results[n]["teach"]["per_item"]["precision"] for n in ("a", "b"))
    d = results["b"]["teach"]["precision"]["paired"]["a"]
    assert d["value"] == pytest.approx(sum(y - x for x, y in zip(pa, pb)) / 6) and d["low"] <= d["value"] <= d["high"]
    assert results["a"]["teach"]["precision"]["paired"] == {}
    assert "coverage" in results["b"]["teach"] and results["b"]["teach"]["coverage"]["paired"]["a"]["n"] == 6
    report = (out / "report.md").read_text()
    assert "## Precision and coverage" in report and "a − b" not in report
    assert "| teach | precision | b − a |" in report and "| teach | coverage | b − a |" in report
    assert "precision and coverage" in printed and "paired differences" in printed

    # Rerun: every likelihood cached, nothing scored again; another context rescores precision only.
    import gad.eval.likelihood as lik

    real = lik.score_answers
    monkeypatch.setattr(lik, "score_answers", lambda *a, **k: pytest.fail("scored a cached answer"))
    before = (out / "results.json").read_text()
    assert main(argv) == 0
    assert (out / "results.json").read_text() == before
    calls = []
    monkeypatch.setattr(lik, "score_answers", lambda m, t, items, **k: calls.append(len(items)) or real(m, t, items, **k))
    context.write_text(json.dumps(CONTEXT[:1]))
    assert main(argv) == 0
    assert calls == [12]  # both students' answers, by the teacher; coverage was cached
    assert json.loads((out / "results.json").read_text())["models"]["a"]["teach"]["coverage"] == results["a"]["teach"]["coverage"]


def test_without_a_teacher_nothing_changes_and_bad_context_files_are_named(tiny_model, tmp_path, capsys):
    from gad.cli import main

    data = make_teacher_set(tmp_path / "teach.jsonl", rows=3)
    out = tmp_path / "eval"
    base = ["eval", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--max-new-tokens", "4",
            "--no-progress", "--no-plots", "--no-distinguish"]
    assert main(base) == 0
    m = json.loads((out / "results.json").read_text())["models"]["model"]["teach"]
    assert "precision" not in m and "coverage" not in m and not (out / "model" / "likelihoods.jsonl").exists()
    assert "Precision and coverage" not in (out / "report.md").read_text()
    capsys.readouterr()
    bad = tmp_path / "ctx.json"
    bad.write_text(json.dumps([{"role": "narrator", "content": "x"}]))
    assert main(base + ["--teacher-model", str(tiny_model), "--teacher-context", str(bad)]) == 2
    assert f"{bad}: message 0" in capsys.readouterr().err
    assert main(base + ["--coverage"]) == 0  # coverage alone: no teacher needed
    m = json.loads((out / "results.json").read_text())["models"]["model"]["teach"]
    assert m["coverage"]["n"] == 3 and "precision" not in m
