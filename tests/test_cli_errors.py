"""Errors are decided in one place (``gad.cli.main``): bad input → one line naming it, exit 2;
an interrupt → 130; anything else → a traceback with secrets scrubbed, exit 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gad import cli
from tests.test_trainer import overrides


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().err


def one_line_error(err: str, command: str) -> str:
    """The error of ``gad COMMAND``: one line (a config's list of problems follows it indented),
    progress chatter before it allowed, never a traceback."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    starts = [i for i, x in enumerate(lines) if x.startswith(f"gad {command}: error: ")]
    assert len(starts) == 1, err
    rest = lines[starts[0] + 1:]
    assert all(x.startswith("  ") for x in rest), err
    return "\n".join(lines[starts[0]:])


def test_wrong_model_path_in_a_stage_is_one_line(capsys, teacher_set, tmp_path):
    rc, err = run_main(capsys, "seqkd", *overrides(tmp_path / "no-such-model", teacher_set, tmp_path / "run"))
    assert rc == 2
    assert str(tmp_path / "no-such-model") in one_line_error(err, "seqkd")
    assert "no such model folder" in err


def test_a_folder_that_is_not_a_model_is_one_line(capsys, teacher_set, tmp_path):
    (tmp_path / "notamodel").mkdir()
    rc, err = run_main(capsys, "seqkd", *overrides(tmp_path / "notamodel", teacher_set, tmp_path / "run"))
    assert rc == 2 and "not a model folder (no config.json)" in one_line_error(err, "seqkd")


def test_unknown_hub_id_is_one_line(capsys, teacher_set, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here either way; offline answers at once
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import, so set it too
    rc, err = run_main(capsys, "seqkd", *overrides("nobody-xyz/not-a-model", teacher_set, tmp_path / "run"))
    assert rc == 2 and "nobody-xyz/not-a-model: cannot load it as a model" in one_line_error(err, "seqkd")


def test_eval_with_a_wrong_model_path_is_one_line(capsys, teacher_set, tmp_path):
    rc, err = run_main(capsys, "eval", "--model", str(tmp_path / "nope"), "--data", str(teacher_set),
                       "--out", str(tmp_path / "e"), "--no-progress")
    assert rc == 2 and f"{tmp_path / 'nope'}: no such model folder" in one_line_error(err, "eval")


def test_demo_with_a_wrong_model_path_is_one_line(capsys, tmp_path):
    rc, err = run_main(capsys, "demo", "--quick", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "d"))
    assert rc == 2 and f"{tmp_path / 'nope'}: no such model folder" in one_line_error(err, "demo")


def test_demo_config_error_is_one_line(capsys, tmp_path):
    rc, err = run_main(capsys, "demo", "--teacher-base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "d"))
    assert rc == 2 and "--teacher-base-url needs --teacher-model" in one_line_error(err, "demo")


@pytest.mark.parametrize(("argv", "message"), [
    (["toy", "--group-size", "1"], "group_size must be at least 2"),
    (["toy", "--init-std", "0"], "init_std (0.0) must exceed min_std"),
    (["synthetic", "--gad-steps", "0"], "gad_steps must be at least 1, got 0"),
    (["synthetic", "--group-size", "1"], "group_size must be at least 2"),
])
def test_bad_option_values_are_one_line(capsys, tmp_path, argv, message):
    rc, err = run_main(capsys, *argv, "--out", str(tmp_path / "o"), "--no-plot")
    assert rc == 2 and message in one_line_error(err, argv[0])
    assert not (tmp_path / "o").exists()  # stopped before any work


def test_bad_config_key_in_a_stage_is_one_line(capsys, tiny_model, teacher_set, tmp_path):
    rc, err = run_main(capsys, "train", *overrides(tiny_model, teacher_set, tmp_path / "r"), "rollout.temprature=0.7")
    assert rc == 2 and "did you mean 'rollout.temperature'" in one_line_error(err, "train")


def test_teacher_bad_extra_body_is_one_line(capsys, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    rc, err = run_main(capsys, "teacher", "--prompts", str(prompts), "--out", str(tmp_path / "t.jsonl"),
                       "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--extra-body", "{oops")
    assert rc == 2 and "--extra-body: not valid JSON" in one_line_error(err, "teacher")


@pytest.mark.parametrize("command", ["teacher", "seqkd", "eval", "report", "humaneval-score", "eval-compare"])
def test_a_missing_file_is_one_line(capsys, tiny_model, tmp_path, command):
    missing = tmp_path / "missing.jsonl"
    argv = {
        "teacher": ["--prompts", str(missing), "--out", str(tmp_path / "t.jsonl"), "--model", "m",
                    "--base-url", "http://127.0.0.1:9/v1"],
        "seqkd": overrides(tiny_model, missing, tmp_path / "run"),
        "eval": ["--model", str(tiny_model), "--data", str(missing), "--out", str(tmp_path / "e")],
        "report": [str(missing)],
        "humaneval-score": [str(missing)],
        "eval-compare": [str(missing)],
    }[command]
    rc, err = run_main(capsys, command, *argv)
    assert rc == 2 and str(missing) in one_line_error(err, command)


def test_a_bug_is_a_traceback_without_secrets(capsys, monkeypatch, tmp_path):
    from gad.commands import report
    from gad.teacher.redact import register_secret

    secret = "sk-test-" + "k" * 24
    register_secret(secret)

    def broken(*_args, **_kwargs):
        raise RuntimeError(f"unexpected state while holding {secret}")

    monkeypatch.setattr("gad.report.write_run_report", broken)
    rc, err = run_main(capsys, "report", str(tmp_path))
    assert rc == 1 and "Traceback" in err and "RuntimeError: unexpected state while holding ***" in err
    assert secret not in err and report.HELP  # the command module was the one that ran


def test_second_ctrl_c_stops_at_once_without_a_traceback(tiny_model, teacher_set, tmp_path):
    """The first Ctrl-C asks the step to finish and save; a second one, during that step, stops at once."""
    out = tmp_path / "c"
    argv = ["train", *overrides(tiny_model, teacher_set, out, train__max_steps=400, train__save_every=1000,
                                train__batch_size=16, rollout__n=8, rollout__max_new_tokens=160)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "gad.cli", *argv], stderr=subprocess.PIPE, text=True, env=env)
    assert p.stderr is not None
    seen: list[str] = []
    deadline = time.time() + 240
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip()):
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    for line in p.stderr:  # the second Ctrl-C once the first is acknowledged, while the step runs
        seen.append(line)
        if "interrupt received" in line:
            p.send_signal(signal.SIGINT)
            break
    err = "".join(seen) + p.communicate(timeout=120)[1]
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "gad train: interrupted; add --resume to the same command" in err


def test_a_non_utf8_file_is_one_line_naming_file_and_line(capsys, tiny_model, teacher_set, tmp_path):
    lines = teacher_set.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b"".join(lines[:2]) + lines[2].replace(b'"content": "', b'"content": "caf\xe9 ') + b"".join(lines[3:]))
    rc, err = run_main(capsys, "seqkd", *overrides(tiny_model, bad, tmp_path / "run"))
    assert rc == 2 and f"{bad}:3: not UTF-8" in one_line_error(err, "seqkd")
    rc, err = run_main(capsys, "teacher", "--prompts", str(bad), "--out", str(tmp_path / "t.jsonl"), "--model", "m",
                       "--base-url", "http://127.0.0.1:9/v1")
    assert rc == 2 and f"{bad}:3: not UTF-8" in one_line_error(err, "teacher")
    config = tmp_path / "c.yaml"
    config.write_bytes(b"train:\n  max_steps: 2  # \xe9tapes\n")
    rc, err = run_main(capsys, "seqkd", str(config))
    assert rc == 2 and f"{config}:2: not UTF-8" in one_line_error(err, "seqkd")


def test_a_file_with_a_byte_order_mark_is_read(capsys, tiny_model, teacher_set, tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + teacher_set.read_bytes())
    out = tmp_path / "e"
    rc, err = run_main(capsys, "eval", "--model", str(tiny_model), "--data", str(bom), "--out", str(out), "--limit", "2",
                       "--max-new-tokens", "4", "--no-distinguish", "--no-plots", "--no-progress")
    assert rc == 0, err
    assert (out / "results.json").is_file()


@pytest.mark.parametrize(("option", "message"), [
    (["--judge-model", "j", "--judge-concurrency", "0"], "judge concurrency: must be >= 1, got 0"),
    (["--top-p", "1.5"], "top_p: must be in (0, 1], got 1.5"),
    (["--batch-size", "0"], "batch_size: must be >= 1, got 0"),
])
def test_eval_bad_option_values_are_one_line(capsys, teacher_set, tmp_path, option, message):
    rc, err = run_main(capsys, "eval", "--data", str(teacher_set), "--out", str(tmp_path / "e"), *option)
    assert rc == 2 and message in one_line_error(err, "eval")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("text", ['{"not": "results"}', "{oops", "\xe9"])
def test_eval_compare_on_a_file_that_is_not_results_is_one_line(capsys, tmp_path, text):
    path = tmp_path / "results.json"
    path.write_bytes(text.encode("latin-1"))
    rc, err = run_main(capsys, "eval-compare", str(path))
    assert rc == 2 and str(path) in one_line_error(err, "eval-compare")


@pytest.mark.parametrize("value", ["rollout.n=[", "generator.model=@x"])
def test_an_override_value_that_is_not_yaml_is_one_line(capsys, teacher_set, tmp_path, value):
    rc, err = run_main(capsys, "train", f"data.train_file={teacher_set}", value)
    assert rc == 2 and f"override '{value}': the value is not valid YAML" in one_line_error(err, "train")


def test_humaneval_errors_are_one_line(capsys, tmp_path):
    import json

    from gad.eval.generations import Generation, append_generations
    from gad.eval.humaneval import RESULTS_FORMAT

    for name, set_name in (("a", "vicuna"), ("b", "dolly")):  # no (set, id) in common
        append_generations(tmp_path / name, [Generation(set_name, "1", [{"role": "user", "content": "q"}], "r")])
    rc, err = run_main(capsys, "humaneval", "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"),
                       "--out", str(tmp_path / "p.html"))
    assert rc == 2 and "have no (set, id) in common" in one_line_error(err, "humaneval")
    export = tmp_path / "results.json"
    export.write_text(json.dumps({"format": RESULTS_FORMAT, "a": "x", "b": "y", "judgments": []}))
    rc, err = run_main(capsys, "humaneval-score", str(export))
    assert rc == 2 and "humaneval-score: error:" in one_line_error(err, "humaneval-score")


def test_a_model_folder_under_home_is_found(tiny_model, monkeypatch):
    from gad.models import resolve_model

    monkeypatch.setenv("HOME", str(tiny_model.parent))
    assert resolve_model("~/model") == str(tiny_model)


def test_sigterm_stops_a_teacher_collection_like_ctrl_c(fake_api, tmp_path):
    """SIGTERM keeps what was answered and exits 130, as Ctrl-C does; the rerun asks for the rest."""
    from tests.teacher.harness import env, stored_ids, subprocess_cmd, teacher_argv, write_prompts

    api = fake_api(latency=0.3)
    prompts, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_prompts(prompts, 40)
    argv = teacher_argv(api, prompts, out, "--concurrency", "2", "--no-progress")
    p = subprocess.Popen(subprocess_cmd(argv), stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.time() + 60
    while len(stored_ids(out)) < 2:
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "STOPPED: interrupted" in err
    kept = stored_ids(out)
    assert 2 <= len(kept) < 40
    p = subprocess.run(subprocess_cmd(argv), capture_output=True, text=True, env=env())
    assert p.returncode == 0, p.stderr
    assert sorted(stored_ids(out)) == [f"p{i:05d}" for i in range(40)]
    assert all(api.count(f"prompt {int(i[1:])}") == 1 for i in kept)  # nothing answered was asked again


def test_a_multi_process_launch_is_refused_before_anything_is_touched(tiny_model, teacher_set, tmp_path):
    """Under torchrun with 2 processes, each process stops with one line, exit 2, before the run
    folder exists or a model loads (each process's stderr is kept apart by torchrun's --redirects)."""
    out, logs = tmp_path / "run", tmp_path / "logs"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "--log-dir", str(logs), "--redirects", "2",
                        "-m", "gad.cli", "seqkd", *overrides(tiny_model, teacher_set, out)],
                       capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode != 0
    texts = [err.read_text() for err in sorted(logs.rglob("stderr.log"))]
    assert len(texts) == 2, p.stderr  # one per process
    # The first process to stop makes torchrun end the other (SIGTERM), which may not have got
    # there yet: it says it was interrupted, or nothing if it was still starting.
    refused = [t for t in texts if "gad seqkd: error: launched as 2 processes (WORLD_SIZE=2)" in t]
    assert refused, texts
    for t in refused:
        one_line_error(t, "seqkd")
    assert all("Traceback" not in t for t in texts)
    assert "exitcode  : 2" in p.stderr  # torchrun's report of its children
    assert not out.exists()
