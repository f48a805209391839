"""``gad eval`` end to end on a tiny random model: files, cache reuse, the judge, eval-compare."""

from __future__ import annotations

import json

import pytest

from gad.cli import main
from gad.errors import UserError
from tests.conftest import make_teacher_set
from tests.eval.scripted_judge import ScriptedJudge
from tests.teacher.fake_api import FakeChatAPI

KEY = "sk-eval-cli-secret-abcdef012345"


@pytest.fixture
def sets(tmp_path):
    teacher = make_teacher_set(tmp_path / "teach.jsonl", rows=6)
    vicuna = tmp_path / "mini_vicuna.jsonl"  # FastChat format: no references
    with vicuna.open("w") as f:
        for i, q in enumerate(["tell me about the sun", "write a short poem", "name two trees", "why is water blue"]):
            f.write(json.dumps({"question_id": i + 1, "category": "generic", "turns": [q]}) + "\n")
    return teacher, vicuna


def test_gad_eval_end_to_end(tiny_model, sets, tmp_path, capsys, monkeypatch):
    teacher, vicuna = sets
    out = tmp_path / "eval"
    monkeypatch.setenv("JUDGE_KEY", KEY)
    script = ScriptedJudge(garbage={"name two trees"})
    with FakeChatAPI(api_key=KEY, reply=script) as api:
        argv = ["eval", "--model", str(tiny_model), "--name", "tiny", "--data", str(teacher), "--data", str(vicuna),
                "--out", str(out), "--max-new-tokens", "12", "--batch-size", "4", "--no-progress",
                "--judge-model", "fake-judge", "--judge-base-url", api.url, "--judge-api-key-env", "JUDGE_KEY",
                "--judge-retries", "1"]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        hits = len(api.hits)

        for name in ("results.json", "report.md", "teach-lengths.png", "teach-ngram-f1.png",
                     "mini_vicuna-lengths.png", "mini_vicuna-ngram-f1.png", "tiny/generations.jsonl",
                     "judge/fake-judge/references.jsonl", "judge/fake-judge/scores.jsonl"):
            assert (out / name).is_file(), name
        results = json.loads((out / "results.json").read_text())["models"]["tiny"]
        t, v = results["teach"], results["mini_vicuna"]
        assert t["n"] == 6 and t["reference_source"] == "set" and t["length_unit"] == "tokens"
        assert v["reference_source"] == "judge:fake-judge" and v["n_reference"] == 4  # judge's answers stand in
        assert set(t["ngram_f1"]) == {str(n) for n in range(1, 7)} and t["distinguishability"] is not None
        assert t["judge"]["n_scored"] == 6 and t["judge"]["n_failed"] == 0
        assert v["judge"]["n_failed"] == 1 and v["judge"]["failures"][0]["id"] == "3"
        rows = [json.loads(line) for line in (out / "tiny" / "generations.jsonl").read_text().splitlines()]
        teach_truncated = [r["truncated"] for r in rows if r["set"] == "teach"]
        assert len(teach_truncated) == 6 and all(isinstance(x, bool) for x in teach_truncated)
        assert t["n_truncated"] == sum(teach_truncated)
        assert "teach (6 prompts; reference: set)" in printed and "| tiny |" in printed
        assert "Judge failures" in (out / "report.md").read_text()
        assert printed.strip().splitlines()[-1].startswith("results: ")

        # Rerun: cached generations (no model call), cached judgments (no request).
        import gad.eval.generate as gen

        monkeypatch.setattr(gen, "generate_answers", lambda *a, **k: pytest.fail("regenerated a cached answer"))
        before = (out / "tiny/generations.jsonl").read_text()
        assert main(argv) == 0
        assert len(api.hits) == hits
        assert (out / "tiny/generations.jsonl").read_text() == before
        assert capsys.readouterr().out == printed

    # Other sampling settings in the same folder: refused, not mixed.
    assert main(argv[:argv.index("--judge-model")] + ["--temperature", "0.7"]) == 2
    assert "--regenerate" in capsys.readouterr().err

    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md"):
            assert KEY not in path.read_text(), path

    # eval-compare: the same results under two folder names, one table with both rows.
    assert main(["eval-compare", str(out), str(out), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "| tiny |" in table and "| eval/tiny |" in table
    assert (tmp_path / "cmp" / "report.md").is_file()


def test_greedy_generation_is_batch_independent_and_cached_rows_parse(tiny_model, sets, tmp_path):
    """Greedy answers do not depend on the batch size (left padding is masked)."""
    from gad.eval.generate import generate_answers
    from gad.eval.sets import load_eval_set
    from gad.models import load_causal_lm

    model, tok = load_causal_lm(str(tiny_model))
    items = load_eval_set(sets[0]).items
    one = generate_answers(model, tok, items, max_new_tokens=8, batch_size=1, progress=False)
    four = generate_answers(model, tok, items, max_new_tokens=8, batch_size=4, progress=False)
    assert {a.item.id: a.response for a in one} == {a.item.id: a.response for a in four}
    assert all(a.n_tokens <= 8 and a.truncated == (a.n_tokens == 8) for a in one)


@pytest.mark.parametrize("spec, name", [
    (None, "smollm2-135m-instruct"),
    ("runs/gad/checkpoints/step-000400/generator", "gad-step-000400"),
    ("runs/seqkd/final/", "final"),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M-Instruct"),
    ("models/tiny.gguf", "tiny"),
])
def test_model_names(spec, name):
    from gad.eval.run import model_name

    assert model_name(spec) == name


def test_config_errors_say_what_to_do(tmp_path):
    from gad.eval.run import EvalConfig

    with pytest.raises(UserError, match="--name"):
        EvalConfig(models=["runs/a/final", "runs/b/final"], data=["x"], out=tmp_path)
    with pytest.raises(UserError, match="one name per model"):
        EvalConfig(models=["a", "b"], data=["x"], out=tmp_path, names=["a"])
