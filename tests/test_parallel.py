"""Data-parallel and sharded training under real multi-process launches (torchrun, gloo on CPU):
K processes make the update one process makes on the same global batch, write one run folder,
and resume under any number of processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gad import stages
from gad.config import load_config
from gad.errors import UserError
from gad.trainer import parallel
from gad.trainer.shards import SafeReader, UnsafeCheckpointError
from gad.trainer.tracking import read_metrics
from tests.parallel import step_worker
from tests.test_trainer import overrides, wait_for_rows

TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(*args: object, nproc: int = 2, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node", str(nproc), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def finish(p: subprocess.Popen, timeout: float = 300) -> str:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-4000:]
    return err


def descendants(pid: int) -> list[int]:
    """A process and all its descendants (torchrun starts its workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def kill_tree(pid: int) -> None:
    for q in descendants(pid):
        try:
            os.kill(q, signal.SIGKILL)
        except ProcessLookupError:
            pass


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# --- one step: K processes == one process ---------------------------------------------------------


@pytest.fixture(scope="module")
def step_inputs(tiny_model, tmp_path_factory):
    """The one-process results a 2-process step must equal: full fine-tuning and LoRA (shared base)."""
    from tests.conftest import make_teacher_set

    root = tmp_path_factory.mktemp("step")
    data = make_teacher_set(root / "teacher.jsonl")
    one = {}
    for kind in ("", "+lora"):  # in this process: the worker's main() as one process runs it
        one[kind] = root / f"one{kind}"
        step_worker.main(str(tiny_model), str(data), str(one[kind]), f"none{kind}")
    return data, one


@pytest.mark.parametrize("mode", ["ddp", "fsdp2", "ddp+lora", "fsdp2+lora"])
def test_one_gad_step_on_two_processes_equals_one_process(mode, tiny_model, step_inputs, tmp_path):
    """The same global batch of 4 prompts x 4 replayed responses, 2 optimizer steps for G (mini-batch
    of 2 prompts), micro-batches of 2, KL to a reference; rank 1's responses are shorter than rank
    0's, so the processes hold different token counts and a per-process normaliser would differ.
    ``+lora``: G and D are adapters on one shared backbone (D's head trains whole); under DDP their
    gradients are averaged without a DDP wrapper, under FSDP2 they are sharded with the backbone."""
    data, ones = step_inputs
    one = ones["+lora" if mode.endswith("+lora") else ""]
    out = tmp_path / mode
    finish(torchrun("-m", "tests.parallel.step_worker", tiny_model, data, out, mode))
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, out))
    assert m2["processes"] == 2 and m2["local_prompts"] == 2 and m1["local_prompts"] == 4
    rank0_len, rank1_len = m2["local_response_length"]
    assert rank1_len < rank0_len / 2
    for name in ("gen", "disc"):
        a, b = load_file(str(one / f"{name}.safetensors")), load_file(str(out / f"{name}.safetensors"))
        assert max_diff(a, b) < 1e-5, name
    gen = load_file(str(one / "gen.safetensors"))
    if mode.endswith("+lora"):  # a fresh adapter's B starts at 0: the step moved it
        assert all(".lora_" in k for k in gen) and max(float(v.abs().max()) for k, v in gen.items() if "lora_B" in k) > 1e-4
    else:
        initial = load_file(str(tiny_model / "model.safetensors"))
        assert max_diff({k: gen[k] for k in initial}, initial) > 1e-5  # the step did move the weights
    logged = [k for k in m1 if not k.startswith(("time/", "throughput/", "local_", "processes"))]
    assert {"disc/loss", "policy/loss", "policy/kl", "reward/mean", "gen/response_length_mean"} <= set(logged)
    for k in logged:
        assert abs(m1[k] - m2[k]) <= 1e-5 * max(1.0, abs(m1[k])), (k, m1[k], m2[k])


# --- whole runs through the CLI -------------------------------------------------------------------


def test_two_process_cli_run_writes_one_run_folder(tiny_model, teacher_set, tmp_path):
    """GAD under FSDP2 with 2 processes: one run folder, one row per step, a servable generator,
    sharded optimizer state, no temporary folders."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "runs" / "gad"
    err = finish(torchrun("-m", "gad.cli", "train", *overrides(tiny_model, teacher_set, out, train__parallel="fsdp2",
                                                                 eval__every=1, data__eval_fraction=0.25)))
    assert "2 processes (fsdp2, cpu)" in err
    assert err.count("gad train: finished step 2") == 1  # rank 0 alone reports
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["gad"]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(len(r["batch_ids"]) == 4 for r in rows)  # the global batch, not one process's half
    # validation: each process answers half the 4 held-out prompts, all logged once, sharded D in step
    assert all(r["val/prompts"] == 4 and 0 <= r["val/d_accuracy"] <= 1 and "val/distinguish_accuracy" in r for r in rows)
    ckpt = out / "checkpoints" / "step-000002"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]
    assert not [p for p in out.rglob("*") if p.name.startswith((".tmp-", ".old-"))]
    model = AutoModelForCausalLM.from_pretrained(ckpt / "generator")
    assert max_diff(model.state_dict(), AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()) > 0
    assert (ckpt / "discriminator.safetensors").exists() and (ckpt / "shards" / ".metadata").exists()
    assert json.loads((ckpt / "meta.json").read_text())["processes"] == 2


STEPS = 30


def test_two_process_seqkd_run_matches_the_one_process_run(tiny_model, teacher_set, tmp_path):
    """Without sampling (SeqKD), a whole 2-step run under DDP with 2 processes ends with the weights and
    the logged losses of the one-process run. (GAD's samples differ per process by design: each
    process has its own seed; the GAD step itself is compared on replayed samples above.)"""
    one = stages.seqkd(load_config(None, overrides(tiny_model, teacher_set, tmp_path / "one", train__micro_batch_size=1)))
    two = tmp_path / "two"
    finish(torchrun("-m", "gad.cli", "seqkd",
                    *overrides(tiny_model, teacher_set, two, train__micro_batch_size=1, train__parallel="ddp")))
    rows1, rows2 = read_metrics(one.run_dir), read_metrics(two)
    assert [r["step"] for r in rows2] == [1, 2]
    for r1, r2 in zip(rows1, rows2):
        assert r1["batch_ids"] == r2["batch_ids"]
        assert r2["sft/nll"] == pytest.approx(r1["sft/nll"], abs=1e-5)
    got = load_file(str(two / "checkpoints" / "step-000002" / "generator" / "model.safetensors"))
    assert max_diff(got, load_file(str(one.checkpoint / "generator" / "model.safetensors"))) < 1e-5


def seqkd_args(tiny_model, teacher_set, out, mode):
    return ["seqkd", *overrides(tiny_model, teacher_set, out, train__max_steps=STEPS, train__save_every=3,
                                train__micro_batch_size=1, train__parallel=mode)]


def test_killed_two_process_run_resumes_under_two_and_one_process(tiny_model, teacher_set, tmp_path):
    """A 2-process FSDP2 run is SIGKILLed mid-run; its last checkpoint resumes under 2 processes and,
    resharded, under 1 (a one-process FSDP2 group), and both end with the weights of an uninterrupted
    one-process run."""
    full = stages.seqkd(load_config(None, seqkd_args(tiny_model, teacher_set, tmp_path / "full", "none")[1:]))
    expected = load_file(str(full.checkpoint / "generator" / "model.safetensors"))

    killed = tmp_path / "killed"
    p = torchrun("-m", "gad.cli", *seqkd_args(tiny_model, teacher_set, killed, "fsdp2"))
    wait_for_rows(p, killed, 4)
    kill_tree(p.pid)  # torchrun and both workers, mid-step
    p.communicate(timeout=60)
    last = sorted((killed / "checkpoints").glob("step-*"))[-1]
    assert 1 <= int(last.name.split("-")[1]) < STEPS
    single = tmp_path / "single"
    shutil.copytree(killed, single)

    finish(torchrun("-m", "gad.cli", *seqkd_args(tiny_model, teacher_set, killed, "fsdp2"), "--resume"))
    p = subprocess.run([sys.executable, "-m", "gad.cli", *seqkd_args(tiny_model, teacher_set, single, "fsdp2"), "--resume"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "saved by 2 processes, resumed by 1" in p.stderr
    for run in (killed, single):
        assert [r["step"] for r in read_metrics(run)] == list(range(1, STEPS + 1))
        got = load_file(str(run / "checkpoints" / f"step-{STEPS:06d}" / "generator" / "model.safetensors"))
        assert max_diff(got, expected) < 1e-5, run.name
        assert not [q for q in run.rglob("*") if q.name.startswith((".tmp-", ".old-"))]


LORA_FSDP2 = {"generator__lora_r": 4, "discriminator__lora_r": 4, "lora__share_base": True,
              "generator__lora_lr": 1e-2, "discriminator__lora_lr": 1e-2, "lora__base_dtype": "bf16",
              "train__mixed_precision": "bf16", "train__gradient_checkpointing": True, "train__micro_batch_size": 4,
              "train__parallel": "fsdp2"}


def test_lora_shared_base_under_fsdp2_warmup_gad_and_exact_resume(tiny_model, teacher_set, tmp_path):
    """LoRA on one shared bf16 backbone, sharded with FSDP2 over 2 processes (fp32 adapters, bf16
    compute, gradient checkpointing, micro-batches): a warmup, then GAD from it, whose reference is the
    warmup's adapter (KL 0 at the first step); the GAD run resumed from its step-2 checkpoint ends
    at exactly the step-3 adapters, head and metrics of the uninterrupted run."""
    warm = tmp_path / "warm"
    finish(torchrun("-m", "gad.cli", "warmup", *overrides(tiny_model, teacher_set, warm, **LORA_FSDP2)))
    args = ["train", *overrides(tiny_model, teacher_set, tmp_path / "gad", **LORA_FSDP2, train__max_steps=3,
                                 train__save_every=1, train__keep_last=3, algorithm__kl_coef=0.1,
                                 train__init_from=warm)]
    finish(torchrun("-m", "gad.cli", *args))
    gad, resumed = tmp_path / "gad", tmp_path / "resumed"
    rows = read_metrics(gad)
    assert rows[0]["policy/kl"] == 0 and rows[-1]["policy/kl"] > 0
    shutil.copytree(gad, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-000003")
    finish(torchrun("-m", "gad.cli", *[a.replace(str(gad), str(resumed)) for a in args], "--resume"))
    def logged(rs):
        return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rs]
    assert logged(read_metrics(resumed)) == logged(rows)
    end, before = gad / "checkpoints" / "step-000003", gad / "checkpoints" / "step-000002"
    for f in ("generator/adapter_model.safetensors", "discriminator.safetensors"):
        got, expected = load_file(str(resumed / "checkpoints" / "step-000003" / f)), load_file(str(end / f))
        assert max_diff(got, expected) == 0, f
        assert max_diff(expected, load_file(str(before / f))) > 1e-4, f  # the last step did move them


# --- refusals -------------------------------------------------------------------------------------


def test_a_batch_that_does_not_split_into_whole_groups_is_refused():
    world = parallel.World(rank=0, size=3)
    with pytest.raises(parallel.LaunchError, match="whole prompt groups over 3 processes"):
        world.check_batch(4, 4)
    assert parallel.World(rank=1, size=2).share(list(range(8)), 4) == [2, 3, 6, 7]


def test_a_one_process_checkpoint_is_not_resumed_sharded(tiny_model, teacher_set, tmp_path):
    out = tmp_path / "run"
    stages.seqkd(load_config(None, overrides(tiny_model, teacher_set, out)))
    cfg = load_config(None, overrides(tiny_model, teacher_set, out, train__max_steps=3, train__parallel="fsdp2"))
    with pytest.raises(UserError, match="saved by a one-process run"):
        stages.seqkd(cfg, resume=True)


def test_checkpoint_metadata_that_names_other_code_is_not_loaded(tmp_path):
    """DCP's metadata is a pickle: one that names anything but DCP's own records is refused unread."""
    import pickle

    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(print))
    with pytest.raises(UnsafeCheckpointError, match="builtins.print"):
        SafeReader(str(folder)).read_metadata()



def test_accelerate_launch_with_the_shipped_config_runs_the_same_code(tiny_model, teacher_set, tmp_path):
    """`accelerate launch` (configs/accelerate/8gpu.yaml, 2 processes here) ends in the same trainer."""
    out = tmp_path / "run"
    config = Path(__file__).parents[1] / "configs" / "accelerate" / "8gpu.yaml"
    p = subprocess.run([str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(config),
                        "--num_processes", "2", "-m", "gad.cli", "seqkd",
                        *overrides(tiny_model, teacher_set, out, train__parallel="ddp")],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "on 2 processes (ddp, cpu)" in p.stderr
    assert [r["step"] for r in read_metrics(out)] == [1, 2]


def test_a_signal_to_one_process_stops_every_process_after_the_same_step(tiny_model, teacher_set, tmp_path):
    """SIGTERM reaches rank 1 only: both processes finish that step, save one checkpoint together
    and stop; the run folder holds exactly the steps of that checkpoint."""
    out, logs = tmp_path / "run", tmp_path / "logs"
    p = torchrun("--log-dir", logs, "--redirects", "2", "-m", "gad.cli",
                 *seqkd_args(tiny_model, teacher_set, out, "ddp")[:-1], "train.max_steps=400", "train.parallel=ddp")
    wait_for_rows(p, out, 3)
    rank1 = [pid for pid in descendants(p.pid) if b"RANK=1\x00" in Path(f"/proc/{pid}/environ").read_bytes()
             and b"gad.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGTERM)
    p.communicate(timeout=120)
    errs = {f.parent.name: f.read_text() for f in logs.rglob("stderr.log")}
    assert "interrupt received" in errs["1"] and "interrupt received" not in errs["0"]
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    step = int(ckpts[-1].name.split("-")[1])
    assert 3 <= step < 400
    assert f"gad seqkd: interrupted at step {step};" in errs["0"], errs["0"][-2000:]  # rank 0 reports
    assert [r["step"] for r in read_metrics(out)] == list(range(1, step + 1))
    assert (ckpts[-1] / "shards" / ".metadata").exists() and (ckpts[-1] / "rng-rank1.pt").exists()
    assert not [q for q in out.rglob("*") if q.name.startswith((".tmp-", ".old-"))]


def test_a_world_size_without_a_launcher_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(parallel.LaunchError, match="no RANK/MASTER_ADDR: launch with torchrun"):
        parallel.setup("ddp", "train")
    with pytest.raises(parallel.LaunchError, match="train.parallel is 'none'"):
        parallel.setup("none", "train")
