"""Every stage end to end on a tiny model: weights move, metrics are logged, checkpoints load,
resume reproduces an uninterrupted run, interrupts and NaNs are handled."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gad import stages
from gad.config import load_config
from gad.models import Discriminator
from gad.trainer.loop import NonFiniteError, RunExistsError
from gad.trainer.tracking import read_metrics, read_samples


def overrides(model: Path, data: Path, out: Path, **extra: object) -> list[str]:
    base = {
        "data.train_file": data, "generator.model": model, "train.output_dir": out,
        "train.batch_size": 4, "rollout.n": 4, "rollout.max_new_tokens": 8, "train.micro_batch_size": 8,
        "train.max_steps": 2, "generator.lr": 1e-3, "discriminator.lr": 1e-3, "algorithm.disc_only_steps": 1,
        "train.report_to": "[]",
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


def cfg_for(stage, tiny_model, teacher_set, out, **extra):
    return load_config(None, overrides(tiny_model, teacher_set, out, **extra), stage=stage)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stage", ["seqkd", "warmup", "train", "offpolicy"])
def test_each_stage_trains_logs_and_checkpoints(stage, tiny_model, teacher_set, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / stage
    cfg = cfg_for(stage, tiny_model, teacher_set, out, train__report_to="[tensorboard]", algorithm__disc_pretrain_steps=1)
    result = getattr(stages, stage)(cfg)
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, result.step + 1))
    assert changed(weights(tiny_model), weights(result.checkpoint / "generator"))
    AutoModelForCausalLM.from_pretrained(result.checkpoint / "generator")  # a plain HF folder
    assert load_config(out / "config.yaml") == cfg  # the saved settings run again as they are
    assert any((out / "tensorboard").iterdir())
    if stage != "seqkd":
        assert all(0.0 <= r["disc/accuracy"] <= 1.0 for r in rows)
        assert (result.checkpoint / "discriminator.safetensors").exists()
        assert "disc/truncated_samples" in rows[-1] and "time/rollout" in rows[-1]
    if stage in ("train", "offpolicy"):
        last = rows[-1]
        for key in ("reward/mean", "reward/std", "policy/kl", "policy/clip_frac", "policy/entropy",
                    "gen/response_length_mean", "gen/truncation_rate", "time/policy_update", "time/score"):
            assert key in last, key
    if stage == "offpolicy":  # D trained on the frozen student first, then frozen
        assert "sft/nll" not in rows[0] and "reward/mean" not in rows[0] and "reward/mean" in rows[1]
        assert "disc/grad_norm" in rows[0] and "disc/grad_norm" not in rows[1]
    state = torch.load(result.checkpoint / "state.pt", weights_only=True)
    assert state["step"] == result.step and "rng" in state and "gen" in state["optimizers"]


def test_policy_update_scores_samples_at_the_sampling_temperature(tiny_model, teacher_set, tmp_path, monkeypatch):
    """Samples drawn at temperature T are scored under softmax(logits / T) by the policy, the old
    policy and the reference alike (as verl and TRL do); SFT stays at T = 1."""
    from gad.trainer import steps

    seen: list[float] = []
    real = steps.sequence_logprobs

    def spy(model, seqs, with_entropy=False, temperature=1.0):
        seen.append(temperature)
        return real(model, seqs, with_entropy, temperature)

    monkeypatch.setattr(steps, "sequence_logprobs", spy)
    stages.train(cfg_for("train", tiny_model, teacher_set, tmp_path / "t", rollout__temperature=0.7,
                         train__max_steps=1, algorithm__ppo_epochs=2))
    assert seen and set(seen) == {0.7}
    seen.clear()
    stages.seqkd(cfg_for("seqkd", tiny_model, teacher_set, tmp_path / "s", rollout__temperature=0.7, train__max_steps=1))
    assert seen and set(seen) == {1.0}


def test_warmup_output_starts_train(tiny_model, teacher_set, tmp_path):
    w = stages.warmup(cfg_for("warmup", tiny_model, teacher_set, tmp_path / "w"))
    t = stages.train(cfg_for("train", tiny_model, teacher_set, tmp_path / "t", train__init_from=tmp_path / "w"))
    assert t.step == 2
    state = torch.load(t.checkpoint / "state.pt", weights_only=True)
    assert state["initial_generator"] == str(w.checkpoint / "generator")  # KL reference = warmup's output
    d_w = load_file(str(w.checkpoint / "discriminator.safetensors"))
    d_t = load_file(str(t.checkpoint / "discriminator.safetensors"))
    assert d_w.keys() == d_t.keys() and changed(d_w, d_t)
    # the generator's model card chains the stages that made it, on its base model
    from gad.card import read_front_matter

    card = read_front_matter(t.checkpoint / "generator")
    assert card["base_model"] == str(tiny_model) and card["library_name"] == "transformers"
    assert [(s["stage"], s["steps"], s["examples"]) for s in card["gad_stages"]] == [("warmup", 2, 16), ("train", 2, 16)]
    text = (t.checkpoint / "generator" / "README.md").read_text()
    assert "| KL coefficient | 0.001 |" in text and "| train | 2 | 16 |" in text
    from gad.card import teacher_of
    from gad.demo import resource_path

    assert teacher_of(str(resource_path("demo_teacher.jsonl"))) == "smollm2-135m-instruct (local+hidden-context)"


def test_sft_temperature_is_the_cross_entropy_of_the_tempered_softmax(tiny_model, teacher_set, tmp_path):
    """``generator.sft_temperature`` T: SeqKD's loss is the mean NLL of the teacher tokens under
    softmax(logits / T) (computed here by hand before the update), and weight decay reaches AdamW."""
    from gad.data import encode_response, read_teacher_set, template_prompt
    from gad.models import load_causal_lm

    cfg = cfg_for("seqkd", tiny_model, teacher_set, tmp_path / "s", generator__sft_temperature=0.5,
                  generator__weight_decay=0.05, train__max_steps=1)
    result = stages.seqkd(cfg)
    [row] = read_metrics(result.run_dir)
    rows = {r.id: r for r in read_teacher_set(teacher_set)[0]}
    model, tok = load_causal_lm(str(tiny_model))
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in row["batch_ids"]:
            prompt = template_prompt(tok, rows[i].messages)
            response = encode_response(tok, rows[i].teacher_response, tok.eos_token_id, 1000)[0]
            logits = model(input_ids=torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1] / 0.5
            nll -= float(torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None]).sum())
            count += len(response)
    assert row["sft/nll"] == pytest.approx(nll / count, rel=1e-5)
    state = torch.load(result.checkpoint / "state.pt", weights_only=True)
    assert state["optimizers"]["gen"]["param_groups"][0]["weight_decay"] == 0.05


def test_init_state_all_continues_the_run_it_starts_from(tiny_model, teacher_set, tmp_path):
    """``train.init_state=all``: a GAD run of 2 steps continued to 4 equals one run of 4 steps (the
    same data order, AdamW moments, schedules and random streams; KL off, since the continued stage's
    reference is where it starts). From a warmup, the step count and both optimizers carry on."""
    from gad.data import batch_indices

    def gad(out, **extra):
        return stages.train(cfg_for("train", tiny_model, teacher_set, out, algorithm__kl_coef=0, **extra))

    whole = gad(tmp_path / "whole", train__max_steps=4)
    gad(tmp_path / "first", train__max_steps=2)
    rest = gad(tmp_path / "rest", train__max_steps=4, train__init_from=tmp_path / "first", train__init_state="all")
    assert [r["step"] for r in read_metrics(rest.run_dir)] == [3, 4]
    assert [r["batch_ids"] for r in read_metrics(rest.run_dir)] == [r["batch_ids"] for r in read_metrics(whole.run_dir)[2:]]
    for part in ("generator/model.safetensors", "discriminator.safetensors"):
        a, b = (load_file(str(r.checkpoint / part)) for r in (whole, rest))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), part
    fresh = gad(tmp_path / "fresh", train__max_steps=2, train__init_from=tmp_path / "first")  # weights only
    assert changed(*(weights(r.checkpoint / "generator") for r in (fresh, rest)))  # fresh AdamW: another update

    stages.warmup(cfg_for("warmup", tiny_model, teacher_set, tmp_path / "w"))  # D alone at step 1, G and D at 2
    cont = gad(tmp_path / "cont", train__max_steps=4, train__init_from=tmp_path / "w", train__init_state="all")
    rows = read_metrics(cont.run_dir)
    assert [r["step"] for r in rows] == [3, 4]
    assert rows[0]["batch_ids"] == [f"q{i}" for i in batch_indices(2, 4, 16, 0)]  # the warmup's data position
    optimizers = torch.load(cont.checkpoint / "state.pt", weights_only=True)["optimizers"]
    steps = {k: int(o["state"][0]["step"]) for k, o in optimizers.items()}
    assert steps == {"gen": 1 + 2, "disc": 2 + 2}  # a fresh optimizer would count 2 and 2


def gradients_at_each_update(monkeypatch, run) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Run ``run()`` and return, for every optimizer step, the role and its parameters' gradients
    as the optimizer receives them (summed over micro-batches, before clipping)."""
    from gad.trainer.roles import Roles

    seen: list[tuple[str, dict[str, torch.Tensor]]] = []
    real = Roles.step_optimizer

    def spy(self, name, loss_value):
        params = self.models()[name].named_parameters()
        seen.append((name, {k: p.grad.detach().clone() for k, p in params if p.grad is not None}))
        return real(self, name, loss_value)

    with monkeypatch.context() as m:
        m.setattr(Roles, "step_optimizer", spy)
        run()
    return seen


@pytest.mark.parametrize(("stage", "sizes"), [("seqkd", (1, 4)), ("train", (2, 16))])
def test_micro_batching_does_not_change_the_gradients(stage, sizes, tiny_model, teacher_set, tmp_path, monkeypatch):
    """The gradient of a step (SFT; D's Bradley-Terry and G's policy loss) is the same whether the
    batch goes through in small micro-batches or at once, up to float error: a scale error in how
    micro-batch losses are normalised shows here (one AdamW step with clipping cannot see it)."""
    runs = [gradients_at_each_update(monkeypatch, lambda m=m: getattr(stages, stage)(cfg_for(
        stage, tiny_model, teacher_set, tmp_path / f"{stage}{m}", train__micro_batch_size=m, train__max_steps=1)))
        for m in sizes]
    roles = {"seqkd": ["gen"], "train": ["disc", "gen"]}[stage]
    assert [name for name, _ in runs[0]] == [name for name, _ in runs[1]] == roles
    for (_, small), (_, whole) in zip(*runs):
        assert small.keys() == whole.keys() and small
        assert any(g.abs().max() > 0 for g in whole.values())
        torch.testing.assert_close(small, whole, rtol=1e-4, atol=1e-7)


def spy_roles(monkeypatch) -> list:
    """Record the Roles each stage builds (the models it trains), without changing them."""
    from gad.trainer import loop

    built, real = [], loop.build_roles

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(loop, "build_roles", spy)
    return built


def count_layer_calls(roles) -> dict[str, list[int]]:
    """Count calls to the first decoder layer's MLP of G and of D's backbone. Checkpointing runs it a
    second time in the backward pass (the recompute), so the count shows it is really on."""
    counts: dict[str, list[int]] = {}
    backbones = {"gen": roles.generator.model}
    if roles.discriminator is not None:
        backbones["disc"] = roles.discriminator.backbone
    for name, backbone in backbones.items():
        mlp, counts[name] = backbone.layers[0].mlp, [0]
        # the forward itself is wrapped: a recompute does not run the module's forward hooks

        def counted(*args, real=mlp.forward, c=counts[name], **kwargs):
            c[0] += 1
            return real(*args, **kwargs)

        mlp.forward = counted
    return counts


@pytest.mark.parametrize("stage", ["seqkd", "train"])
def test_gradient_checkpointing_does_not_change_the_update(stage, tiny_model, teacher_set, tmp_path, monkeypatch):
    """One step with train.gradient_checkpointing gives the weights of one step without it (G, and D
    in a GAD step), while the layers really are recomputed in the backward pass."""
    from gad.trainer import loop

    results, calls = {}, {}
    for on in (False, True):
        built: list = []
        real = loop.build_roles

        def spy(*args, built=built, real=real, **kwargs):
            roles = real(*args, **kwargs)
            built.append((roles, count_layer_calls(roles)))
            return roles

        with monkeypatch.context() as m:
            m.setattr(loop, "build_roles", spy)
            results[on] = getattr(stages, stage)(cfg_for(stage, tiny_model, teacher_set, tmp_path / f"{stage}{on}",
                                                         train__gradient_checkpointing=on, train__max_steps=1,
                                                         train__micro_batch_size=4))
        calls[on] = {k: v[0] for k, v in built[0][1].items()}
    for name in calls[False]:  # the recompute: one more layer call per training micro-batch
        assert calls[True][name] > calls[False][name], (name, calls)
    before, off, on = weights(tiny_model), weights(results[False].checkpoint / "generator"), weights(results[True].checkpoint / "generator")
    assert changed(before, off)
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-6)
    if stage == "train":
        d_off = load_file(str(results[False].checkpoint / "discriminator.safetensors"))
        d_on = load_file(str(results[True].checkpoint / "discriminator.safetensors"))
        torch.testing.assert_close(d_on, d_off, rtol=1e-5, atol=1e-6)
    assert read_metrics(tmp_path / f"{stage}True")[0].keys() == read_metrics(tmp_path / f"{stage}False")[0].keys()


def test_bf16_reference_and_chunked_rollout_in_a_gad_step(tiny_model, teacher_set, tmp_path, monkeypatch):
    """train.reference_dtype=bf16 loads the reference in bf16 and the KL metric stays finite;
    rollout.micro_batch_size splits the step's prompts over ceil(P / micro) generate calls."""
    built = spy_roles(monkeypatch)
    calls: list[int] = []
    from gad.rollout import HFRollout

    real = HFRollout._generate
    monkeypatch.setattr(HFRollout, "_generate", lambda self, prompts, n: calls.append(len(prompts)) or real(self, prompts, n))
    stages.train(cfg_for("train", tiny_model, teacher_set, tmp_path / "t", train__reference_dtype="bf16",
                         rollout__micro_batch_size=3, train__max_steps=1))
    [roles] = built
    assert {p.dtype for p in roles.reference.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in roles.generator.parameters()} == {torch.float32}  # only the reference
    assert calls == [3, 1]  # 4 prompts, 3 per call
    [row] = read_metrics(tmp_path / "t")
    assert math.isfinite(row["policy/kl"]) and math.isfinite(row["policy/loss"])


def test_sft_gradient_is_that_of_the_token_mean_nll(tiny_model, teacher_set, tmp_path, monkeypatch):
    """SeqKD's gradient equals the gradient of the mean NLL over every teacher-response token (EOS
    included) of the batch, computed here with the model's own Hugging Face loss: a scale error in
    the normaliser (the same at every micro-batch size) shows here."""
    from gad.data import encode_response, read_teacher_set, template_prompt
    from gad.models import load_causal_lm

    cfg = cfg_for("seqkd", tiny_model, teacher_set, tmp_path / "s", train__micro_batch_size=2, train__max_steps=1)
    [(_, grads)] = gradients_at_each_update(monkeypatch, lambda: stages.seqkd(cfg))
    rows = {r.id: r for r in read_teacher_set(teacher_set)[0]}
    model, tok = load_causal_lm(str(tiny_model))
    model.train()
    pairs = [(template_prompt(tok, rows[i].messages),
              encode_response(tok, rows[i].teacher_response, tok.eos_token_id, 1000)[0])
             for i in read_metrics(tmp_path / "s")[0]["batch_ids"]]
    total = sum(len(response) for _, response in pairs)
    for prompt, response in pairs:
        labels = torch.tensor([[-100] * len(prompt) + response])
        model(input_ids=torch.tensor([prompt + response]), labels=labels, num_items_in_batch=total).loss.backward()
    expected = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(grads, expected, rtol=1e-4, atol=1e-7)


def test_refuses_to_overwrite_a_run(tiny_model, teacher_set, tmp_path):
    stages.seqkd(cfg_for("seqkd", tiny_model, teacher_set, tmp_path / "r", train__max_steps=1))
    with pytest.raises(RunExistsError, match="--resume"):
        stages.seqkd(cfg_for("seqkd", tiny_model, teacher_set, tmp_path / "r", train__max_steps=1))


def test_nan_updates_are_skipped_then_the_run_stops(tiny_model, teacher_set, tmp_path):
    torch.manual_seed(0)
    D = Discriminator.from_backbone(str(tiny_model))
    with torch.no_grad():
        D.head.weight.fill_(float("nan"))
    D.save(tmp_path / "nan.safetensors")
    cfg = cfg_for("warmup", tiny_model, teacher_set, tmp_path / "n", discriminator__init=tmp_path / "nan.safetensors",
                  train__max_steps=10, train__save_every=1, train__max_bad_steps=2, algorithm__disc_only_steps=10)
    with pytest.raises(NonFiniteError, match="3 consecutive steps.*Last good checkpoint: .*step-000002"):
        stages.warmup(cfg)
    rows = read_metrics(tmp_path / "n")
    assert [r["disc/skipped_update"] for r in rows] == [1.0, 1.0, 1.0]
    ckpts = sorted(p.name for p in (tmp_path / "n" / "checkpoints").iterdir())
    assert ckpts == ["step-000001", "step-000002"]
    saved = load_file(str(tmp_path / "n" / "checkpoints" / "step-000002" / "discriminator.safetensors"))
    original = D.state_dict()
    assert saved.keys() == original.keys()
    # never stepped: every value as it was, the NaN head included (NaN == NaN here, nothing else is)
    torch.testing.assert_close(saved, dict(original), rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------- the CLI as a user runs it


def gad_cli(*args: object, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "gad.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_help_lists_the_stages():
    out = subprocess.run([sys.executable, "-m", "gad.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for stage in ("seqkd", "warmup", "train", "offpolicy", "demo"):
        assert stage in out


def test_cli_refuses_bad_config_and_bad_data_before_training(tiny_model, teacher_set, tmp_path):
    p = gad_cli("train", *overrides(tiny_model, teacher_set, tmp_path / "x"), "rollout.temprature=1")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "did you mean 'rollout.temperature'" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(teacher_set.read_text() + '{"id": "z", "messages": [{"role": "user", "content": "q"}]}\n')
    p = gad_cli("warmup", *overrides(tiny_model, bad, tmp_path / "y"))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and f"{bad}:17: field 'teacher_response': missing" in err
    assert not (tmp_path / "y" / "checkpoints").exists()
    p = gad_cli("seqkd", *overrides(tiny_model, bad, tmp_path / "z"), "--skip-bad-rows")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0 and "1 malformed rows skipped" in err


def run_to_end(args: list[str], timeout: float = 300) -> str:
    p = gad_cli(*args)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return err


def wait_for_rows(p: subprocess.Popen, run_dir: Path, rows: int, timeout: float = 240) -> None:
    """Until the running ``p`` has logged ``rows`` steps into ``run_dir`` (it must still be running)."""
    deadline = time.time() + timeout
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= rows):
        assert time.time() < deadline, f"no {rows} metric rows after {timeout} s"
        assert p.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.01)


def test_resume_after_kill_reproduces_the_uninterrupted_run(tiny_model, teacher_set, tmp_path):
    steps = 10
    args = lambda out: ["train", *overrides(tiny_model, teacher_set, out, train__max_steps=steps,  # noqa: E731
                                            train__save_every=1, rollout__max_new_tokens=24)]
    run_to_end(args(tmp_path / "full"))

    killed = tmp_path / "killed"
    p = gad_cli(*args(killed))
    wait_for_rows(p, killed, 4)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert len(read_metrics(killed)) < steps
    run_to_end([*args(killed), "--resume"])

    full, resumed = read_metrics(tmp_path / "full"), read_metrics(killed)
    assert [r["step"] for r in resumed] == list(range(1, steps + 1))
    assert [r["batch_ids"] for r in resumed] == [r["batch_ids"] for r in full]  # same data order
    a = weights(tmp_path / "full" / "checkpoints" / f"step-{steps:06d}" / "generator")
    b = weights(killed / "checkpoints" / f"step-{steps:06d}" / "generator")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # same RNG, optimizer and data position
    assert [r["step"] for r in read_samples(killed)] == [10, 10]  # logged once, at step 10 (every 10 steps)


def test_ctrl_c_saves_then_resume_finishes(tiny_model, teacher_set, tmp_path):
    out = tmp_path / "c"
    args = ["train", *overrides(tiny_model, teacher_set, out, train__max_steps=16, train__save_every=100,
                                rollout__max_new_tokens=24)]
    p = gad_cli(*args)
    deadline = time.time() + 240
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip()):
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupt received" in err
    done = len(read_metrics(out))
    assert done < 16 and (out / "checkpoints" / f"step-{done:06d}" / "state.pt").exists()
    run_to_end([*args, "--resume"])
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 17))


def test_an_imbalanced_run_is_told_as_it_goes_and_can_stop_with_a_checkpoint(tiny_model, teacher_set, tmp_path, capsys):
    """D far faster than G (lr 300x): D's accuracy pins at 1 within a few steps. The run says so once,
    when it starts, flags it in its metrics; with train.stop_on_imbalance it saves and stops (exit 1)."""
    from gad.cli import main as gad_main

    def run(out, *extra):
        return gad_main(["train", *overrides(tiny_model, teacher_set, out, train__max_steps=14, discriminator__lr=3e-3,
                                             generator__lr=1e-5, train__save_every=100), *extra])

    assert run(tmp_path / "watch") == 0
    err = capsys.readouterr().err
    assert err.count("balance: D accuracy stuck above 0.95") == 1
    rows = read_metrics(tmp_path / "watch")
    flagged = [r["step"] for r in rows if r["balance/d_too_strong"] == 1.0]
    assert flagged and flagged[0] >= 5 and flagged == list(range(flagged[0], 15))
    assert all(0 <= r["balance/repeated_ngram_frac"] <= 1 for r in rows)

    assert run(tmp_path / "stop", "train.stop_on_imbalance=true") == 1
    err = capsys.readouterr().err
    assert f"stopped on imbalance (d_too_strong; train.stop_on_imbalance) at step {flagged[0]}" in err
    assert [p.name for p in (tmp_path / "stop" / "checkpoints").iterdir()] == [f"step-{flagged[0]:06d}"]


def test_samples_log_holds_rewards_advantages_and_the_teachers_rank(tiny_model, teacher_set, tmp_path):
    """Every ``log_samples_every`` steps, ``samples.jsonl`` holds a few prompts with the teacher's
    response and each sample's reward, advantage and length; the advantages are the GRPO ones of
    those rewards, the teacher's rank counts the samples D puts above it; ``gad report`` shows them."""
    from gad import losses
    from gad.cli import main as gad_main

    out = tmp_path / "s"
    result = stages.train(cfg_for("train", tiny_model, teacher_set, out, train__max_steps=4,
                                  train__log_samples_every=2, train__log_samples=3))
    records = read_samples(out)
    assert [r["step"] for r in records] == [2, 2, 2, 4, 4, 4]
    batch_ids = {r["step"]: r["batch_ids"] for r in read_metrics(out)}
    questions = {json.loads(line)["id"]: json.loads(line)["messages"][-1]["content"] for line in teacher_set.open()}
    for r in records:
        assert r["id"] in batch_ids[r["step"]][:3] and r["prompt"] == questions[r["id"]]
        assert r["teacher"].startswith("yes ") and len(r["samples"]) == 4  # rollout.n
        rewards = torch.tensor([[x["reward"] for x in r["samples"]]])
        expected = losses.group_advantages(rewards, scale_by_std=True)[0]
        assert torch.allclose(torch.tensor([x["advantage"] for x in r["samples"]]), expected, atol=1e-5)
        assert r["teacher_rank"] == 1 + sum(x["reward"] > r["teacher_score"] for x in r["samples"])
        assert all(x["length"] <= 8 and isinstance(x["text"], str) for x in r["samples"])
    assert gad_main(["report", str(result.run_dir)]) == 0
    report = (out / "report.md").read_text()
    assert "## Samples at step 4" in report or "### Samples at step 4" in report
    assert "teacher's mean rank" in report and questions[records[-1]["id"]] in report


def test_validation_during_training_on_held_out_rows(tiny_model, teacher_set, tmp_path):
    """``eval.every`` with ``data.eval_fraction``: a quarter of the rows is held out (never in a batch);
    every 2 steps and at the end, the student's greedy answers to them are measured: D's accuracy on
    the (teacher, answer) pairs, their length, the two-sample test. SeqKD, without D, gets the rest;
    ``data.eval_file`` works the same way."""
    from gad.data import hold_out, read_teacher_set

    rows, _ = read_teacher_set(teacher_set)
    train_rows, held = hold_out(rows, 0.25, 0)
    assert len(held) == 4 and hold_out(list(reversed(rows)), 0.25, 0)[1] == list(reversed(held))  # order-free
    stages.train(cfg_for("train", tiny_model, teacher_set, tmp_path / "t", train__max_steps=5, eval__every=2,
                         data__eval_fraction=0.25))
    logged = read_metrics(tmp_path / "t")
    assert [r["step"] for r in logged if "val/d_accuracy" in r] == [2, 4, 5]
    assert not {r.id for r in held} & {i for r in logged for i in r["batch_ids"]}
    for r in (r for r in logged if "val/prompts" in r):
        assert r["val/prompts"] == 4 and 0 <= r["val/d_accuracy"] <= 1 and 0 <= r["val/ended_rate"] <= 1
        assert 1 <= r["val/response_length_mean"] <= 8  # rollout.max_new_tokens
        assert r["val/distinguish_low"] <= r["val/distinguish_accuracy"] <= r["val/distinguish_high"]

    heldout_file = tmp_path / "heldout.jsonl"
    heldout_file.write_text("".join(line for line in teacher_set.open() if json.loads(line)["id"] in {r.id for r in held}))
    stages.seqkd(cfg_for("seqkd", tiny_model, teacher_set, tmp_path / "s", train__max_steps=2, eval__every=1,
                         data__eval_file=heldout_file, eval__max_new_tokens=3))
    logged = read_metrics(tmp_path / "s")
    assert all("val/d_accuracy" not in r and r["val/prompts"] == 4 and r["val/response_length_mean"] <= 3 for r in logged)
