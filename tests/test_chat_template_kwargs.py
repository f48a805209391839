"""``data.chat_template_kwargs`` (e.g. ``enable_thinking: false``) reaches the student's chat template
in training, rollouts and ``gad eval``, on a tiny tokenizer whose template reads ``enable_thinking``
as Qwen3's does (thinking off: the generation prompt carries a marker, here the word ``no``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gad import stages
from gad.cli import main
from gad.config import load_config
from gad.data import encode_teacher_set, read_teacher_set, template_prompt
from tests.conftest import make_teacher_set

THINKING_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> "
    "{% if enable_thinking is defined and not enable_thinking %}no {% endif %}{% endif %}"
)
OFF = {"enable_thinking": False}


@pytest.fixture(scope="module")
def thinking_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a template that reads ``enable_thinking``."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("thinking") / "model"
    shutil.copytree(tiny_model, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = THINKING_TEMPLATE
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tok(thinking_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(thinking_model)


def generation_prompt_end(tok, ids: list[int]) -> list[str]:
    return tok.convert_ids_to_tokens(ids[-2:])


def test_template_prompt_passes_the_variables(tok):
    chat = [{"role": "user", "content": "tell me about the sun"}]
    assert generation_prompt_end(tok, template_prompt(tok, chat)) == ["sun", "<|assistant|>"]
    assert generation_prompt_end(tok, template_prompt(tok, chat, OFF)) == ["<|assistant|>", "no"]
    assert template_prompt(tok, chat, {"enable_thinking": True}) == template_prompt(tok, chat)


def test_teacher_set_prompts_carry_the_configs_variables(tok, thinking_model, teacher_set):
    cfg = load_config(None, [f"data.train_file={teacher_set}", f"generator.model={thinking_model}",
                             "data.chat_template_kwargs={enable_thinking: false}"], stage="seqkd")
    rows, _ = read_teacher_set(teacher_set)
    on, _ = encode_teacher_set(rows, tok, tok.eos_token_id, 64, 64)
    off, _ = encode_teacher_set(rows, tok, tok.eos_token_id, 64, 64,
                                chat_template_kwargs=cfg.data.chat_template_kwargs)
    assert {tuple(tok.convert_ids_to_tokens(e.prompt_ids[-1:])) for e in on} == {("<|assistant|>",)}
    assert {tuple(tok.convert_ids_to_tokens(e.prompt_ids[-1:])) for e in off} == {("no",)}
    assert [e.response_ids for e in on] == [e.response_ids for e in off]  # the answers are untouched


@pytest.mark.parametrize("stage", ["seqkd", "train"])
def test_a_training_run_feeds_the_model_prompts_made_with_them(stage, thinking_model, teacher_set, tmp_path,
                                                               monkeypatch, tok):
    """What reaches the model in a real run (SeqKD's teacher-forced batch; GAD's rollouts, policy
    update and validation answers): the token right before each response is the template's marker."""
    from gad.rollout import HFRollout
    from gad.trainer import steps

    before_response: list[int] = []
    prompts: list[list[int]] = []
    real_logprobs, real_generate = steps.sequence_logprobs, HFRollout.generate

    def spy_logprobs(model, seqs, *args, **kwargs):
        before_response.extend(seqs.input_ids[:, -seqs.response_ids.shape[1] - 1].tolist())
        return real_logprobs(model, seqs, *args, **kwargs)

    def spy_generate(self, prompt_ids, *args, **kwargs):
        prompts.extend(prompt_ids)
        return real_generate(self, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(steps, "sequence_logprobs", spy_logprobs)
    monkeypatch.setattr(HFRollout, "generate", spy_generate)
    cfg = load_config(None, [
        f"data.train_file={teacher_set}", f"generator.model={thinking_model}", f"train.output_dir={tmp_path / 'r'}",
        "data.chat_template_kwargs={enable_thinking: false}", "train.batch_size=2", "rollout.n=2",
        "rollout.max_new_tokens=4", "train.micro_batch_size=4", "train.max_steps=1", "train.report_to=[]",
        *(["eval.every=1", "data.eval_fraction=0.25"] if stage == "train" else []),
    ], stage=stage)
    result = getattr(stages, stage)(cfg)
    assert before_response and set(tok.convert_ids_to_tokens(before_response)) == {"no"}
    card = (Path(result.checkpoint) / "generator" / "README.md").read_text()  # its users are told
    assert '| chat template variables | `{"enable_thinking": false}`' in card
    assert """--chat-template-kwargs '{"enable_thinking": false}'""" in card
    if stage == "train":
        from gad.trainer.tracking import read_metrics

        held_out = int(read_metrics(tmp_path / "r")[-1]["val/prompts"])
        assert held_out >= 2 and len(prompts) == 2 + held_out  # one step's 2 prompts, then validation's
        assert {tok.convert_ids_to_tokens(p[-1]) for p in prompts} == {"no"}


def test_gad_eval_generates_and_scores_coverage_with_them(thinking_model, tmp_path, monkeypatch, tok, capsys):
    from gad.eval import likelihood
    from gad.rollout import HFRollout

    teacher = make_teacher_set(tmp_path / "teach.jsonl", rows=3)
    prompts: list[list[int]] = []
    scored: list[list[int]] = []
    real_generate, real_answer_ids = HFRollout.generate, likelihood.answer_ids

    def spy_generate(self, prompt_ids, *args, **kwargs):
        prompts.extend(prompt_ids)
        return real_generate(self, prompt_ids, *args, **kwargs)

    def spy_answer_ids(*args, **kwargs):
        prompt, answer = real_answer_ids(*args, **kwargs)
        scored.append(prompt)
        return prompt, answer

    monkeypatch.setattr(HFRollout, "generate", spy_generate)
    monkeypatch.setattr(likelihood, "answer_ids", spy_answer_ids)
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(thinking_model), "--name", "tiny", "--data", str(teacher), "--out", str(out),
            "--max-new-tokens", "4", "--no-progress", "--no-plots", "--no-distinguish", "--coverage",
            "--chat-template-kwargs", '{"enable_thinking": false}']
    assert main(argv) == 0
    assert len(prompts) == 3 and {tok.convert_ids_to_tokens(p[-1]) for p in prompts} == {"no"}
    assert len(scored) == 3 and {tok.convert_ids_to_tokens(p[-1]) for p in scored} == {"no"}
    rows = [json.loads(line) for line in (out / "tiny" / "generations.jsonl").read_text().splitlines()]
    assert all(r["sampling"]["chat_template_kwargs"] == OFF for r in rows)
    # The same answers asked for without the variables are not taken from the cache.
    capsys.readouterr()
    assert main(argv[:-2]) != 0 and "cached answers were made by" in capsys.readouterr().err
    assert main([*argv[:-1], "[1]"]) != 0
    assert "--chat-template-kwargs: expected a JSON object such as" in capsys.readouterr().err


def test_local_teacher_has_its_own_template_variables(thinking_model, tmp_path, capsys):
    """``gad teacher --backend local --chat-template-kwargs``: the teacher's template, not the
    student's; part of the settings a resumed collection must share. An API server applies its own
    template: the option is refused there."""
    from tests.teacher.harness import run_cli, write_prompts

    prompts = tmp_path / "p.jsonl"
    write_prompts(prompts, 2)

    def collect(out: Path, *extra: str) -> int:
        return run_cli(["--prompts", str(prompts), "--out", str(out), "--backend", "local", "--model",
                        str(thinking_model), "--max-tokens", "3", "--no-progress", *extra])

    def prompt_tokens(out: Path) -> list[int]:  # kept and set-aside (empty) answers alike, by id
        files = [f for f in (out, out.with_suffix(".dropped.jsonl")) if f.exists()]
        found = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        return [r["meta"]["usage"]["prompt_tokens"] for r in sorted(found, key=lambda r: r["id"])]

    off = tmp_path / "off.jsonl"
    assert collect(off, "--chat-template-kwargs", '{"enable_thinking": false}') == 0
    assert collect(tmp_path / "on.jsonl") == 0
    assert [n - 1 for n in prompt_tokens(off)] == prompt_tokens(tmp_path / "on.jsonl")  # the template's marker
    capsys.readouterr()
    assert collect(off) == 2 and "other generation settings" in capsys.readouterr().err
    assert run_cli(["--prompts", str(prompts), "--out", str(tmp_path / "api.jsonl"), "--model", "m",
                    "--chat-template-kwargs", '{"enable_thinking": false}']) == 2
    assert "--extra-body" in capsys.readouterr().err
