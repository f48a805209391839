"""benchmarks/step.py and benchmarks/gpu_check.py run and report what they promise (timing decides nothing)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PHASES = ["rollout", "score", "disc_update", "reference", "policy_update"]


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env() -> dict[str, str]:
    """This checkout's gad first (a script's own folder, not the working directory, heads sys.path)."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_step_benchmark_tiny_reports_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    prompts, n, prompt_len, response_len = 2, 3, 8, 6
    p = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), "--shape", "tiny", "--device", "cpu", "--steps", "1",
         "--prompts", str(prompts), "--n", str(n), "--prompt-length", str(prompt_len),
         "--response-length", str(response_len), "--micro-batch-size", "4", "--json", str(out)],
        capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {line.split()[0] for line in p.stdout.splitlines() if line.strip()}
    assert set(PHASES) | {"step"} <= rows, p.stdout
    assert "GAD step / frozen-D step = " in p.stdout
    assert "Full-mode memory per process" in p.stdout and "K=8 (FSDP2)" in p.stdout

    r = json.loads(out.read_text())
    for key in ["shape", "device", "device_name", "torch", "date", "params", "gad", "frozen", "ratio_gad_over_frozen",
                "disc_update_share_of_gad_step", "memory_method", "memory_computed", "flop_formula", "raw"]:
        assert key in r, key
    assert set(r["memory_computed"]) == {"K=1", "K=2", "recipe_7b"}
    assert len(r["raw"]["gad"]) == len(r["raw"]["frozen"]) == 1  # the warm-up pair is not kept
    for kind in ("gad", "frozen"):
        assert set(r[kind]["phases"]) == set(PHASES)
        for p_name, fig in r[kind]["phases"].items():
            assert {"seconds", "tokens", "tokens_per_s", "peak_bytes", "flops", "mfu"} <= set(fig), p_name
    gad, frozen = r["gad"]["phases"], r["frozen"]["phases"]
    # Fixed lengths: every sample has exactly response_len tokens, so the work is known exactly.
    assert gad["rollout"]["tokens"] == frozen["rollout"]["tokens"] == prompts * n * response_len
    assert gad["score"]["tokens"] == prompts * (n + 1) * (prompt_len + response_len)
    assert gad["policy_update"]["tokens"] == gad["reference"]["tokens"] == prompts * n * (prompt_len + response_len)
    assert gad["disc_update"]["seconds"] > 0 and frozen["disc_update"]["seconds"] == 0
    assert all(gad[p]["peak_bytes"] > 0 for p in PHASES)
    assert r["ratio_gad_over_frozen"] == pytest.approx(r["gad"]["step_s"] / r["frozen"]["step_s"])


def test_step_benchmark_under_two_processes_measures_each_process(tmp_path: Path) -> None:
    """--processes 2 relaunches under torchrun; the trainer's FSDP2 path splits the batch, the figures
    cover all processes' tokens (the same exact counts as one process) and name the mode."""
    out = tmp_path / "step.json"
    prompts, n, prompt_len, response_len = 2, 3, 8, 6
    p = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), "--shape", "tiny", "--device", "cpu", "--steps", "1",
         "--prompts", str(prompts), "--n", str(n), "--prompt-length", str(prompt_len),
         "--response-length", str(response_len), "--micro-batch-size", "4", "--json", str(out),
         "--processes", "2", "--parallel", "fsdp2"],
        capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=180,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 processes, train.parallel=fsdp2" in p.stdout and p.stdout.count("GAD step / frozen-D step") == 1
    r = json.loads(out.read_text())
    assert r["processes"] == 2 and r["parallel"] == "fsdp2"
    gad = r["gad"]["phases"]
    assert gad["rollout"]["tokens"] == prompts * n * response_len
    assert gad["score"]["tokens"] == prompts * (n + 1) * (prompt_len + response_len)
    assert all(gad[p]["peak_bytes"] > 0 for p in PHASES)


def test_gpu_check_runs_its_stages_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--shapes", "tiny",
                        "--out", str(out)], capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert {"date", "device", "device_name", "torch", "stages"} <= set(r)
    [stage] = r["stages"]
    assert stage["shape"] == "tiny" and "error" not in stage, stage.get("output_tail")
    assert stage["result"]["ratio_gad_over_frozen"] > 0


def test_gpu_check_keeps_going_past_a_stage_that_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage past its time limit is killed and recorded; the JSON is still written."""
    check = load_module("gpu_check")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setitem(check.STAGES, "cpu", [("tiny", ["--steps", "1"], 1)])  # cannot even import torch in 1 s
    out = tmp_path / "check.json"
    assert check.main(["--device", "cpu", "--out", str(out)]) == 0
    [stage] = json.loads(out.read_text())["stages"]
    assert stage["timed_out"] and stage["error"] == "killed at its 1 s limit"


def test_out_of_memory_names_the_phase_and_keeps_what_was_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    step = load_module("step")

    def fake_step(batch, roles, timer, update_discriminator):
        with timer.phase("rollout"):
            pass
        with timer.phase("score"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(step, "gad_step", fake_step)
    with pytest.raises(step.StepOutOfMemory) as e:
        step.timed_step(None, None, True, cuda=False, response_length=4)
    assert e.value.phase == "score" and "rollout" in e.value.partial["seconds"]
    assert "out of memory in phase score" in str(e.value)


# The published parameter counts (model cards: SmolLM2-135M; Qwen2.5 0.49B, 1.54B, 7.61B), and the
# Qwen2.5 cards' non-embedding counts (0.36B, 1.31B, 6.53B): N in the benchmark's FLOP formula.
DOCUMENTED = {"smollm2-135m": 135e6, "qwen2.5-0.5b": 494e6, "qwen2.5-1.5b": 1.54e9, "qwen2.5-7b": 7.61e9}
NON_EMBEDDING = {"qwen2.5-0.5b": 0.36e9, "qwen2.5-1.5b": 1.31e9, "qwen2.5-7b": 6.53e9}


@pytest.mark.parametrize("shape", sorted(DOCUMENTED))
def test_shapes_have_their_documented_parameter_counts(shape: str) -> None:
    step = load_module("step")
    counts = step.param_counts(step.shape_config(shape))  # built on the meta device: no memory used
    assert counts["generator"] == pytest.approx(DOCUMENTED[shape], rel=0.02)
    if shape in NON_EMBEDDING:
        assert counts["non_embedding"] == pytest.approx(NON_EMBEDDING[shape], rel=0.02)
    assert counts["non_embedding"] < counts["discriminator"] <= counts["generator"] + step.SHAPES[shape]["hidden_size"] + 1
