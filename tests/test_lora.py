"""LoRA and the shared-base mode on a tiny Llama: one backbone, adapters ``gen``/``disc`` (+ ``ref``),
isolation of each optimizer, a base that never moves, resume, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gad import lora, stages
from gad.batch import pack
from gad.cli import main as gad_main
from gad.config import ConfigError
from gad.data import encode_teacher_set, read_teacher_set
from gad.models import load_causal_lm
from tests.test_trainer import cfg_for

SHARED = {"generator__lora_r": 4, "discriminator__lora_r": 4, "lora__share_base": True,
          "generator__lora_lr": 1e-2, "discriminator__lora_lr": 1e-2}


def build(cfg, initial: str, gen_path: str | None = None, disc_path: str | None = None):
    from accelerate.utils import set_seed

    from gad.trainer.roles import build_roles

    set_seed(cfg.train.seed)
    return build_roles(cfg, initial, gen_path or initial, disc_path)


def prompt_batch(cfg, roles):
    from gad.trainer.steps import PromptBatch

    rows, stats = read_teacher_set(cfg.data.train_file)
    examples, _ = encode_teacher_set(rows, roles.tokenizer, roles.eos_id, 256, 256, stats)
    return PromptBatch(examples[: cfg.train.batch_size])


def logprobs(model, roles, batch) -> torch.Tensor:
    """Teacher-forced log-probs of the batch's teacher responses under ``model``."""
    from gad.trainer.steps import sequence_logprobs

    seqs = pack(batch.prompts, [e.response_ids for e in batch.examples], roles.pad_id, roles.eos_id)
    with torch.no_grad():
        return sequence_logprobs(model, seqs)[0] * seqs.response_mask


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def same(a: list[torch.Tensor], params) -> bool:
    return all(torch.equal(x, p.detach()) for x, p in zip(a, params, strict=True))


def base_weights(roles) -> dict[str, torch.Tensor]:
    lm = roles.generator.model
    return {k: p.detach().clone() for k, p in lm.named_parameters() if "lora_" not in k}


def test_one_backbone_three_roles_and_isolated_optimizers(tiny_model, teacher_set, tmp_path):
    from gad.trainer.steps import discriminator_phase, gad_step, sft_phase
    from gad.trainer.timing import PhaseTimer

    cfg = cfg_for("train", tiny_model, teacher_set, tmp_path / "r", **SHARED)
    roles = build(cfg, str(tiny_model))
    gen, ref, disc = roles.generator, roles.reference, roles.discriminator
    assert isinstance(gen, lora.AdapterView) and isinstance(disc, lora.AdapterView)
    assert disc.model.backbone is gen.model.base_model  # one backbone in memory
    g_ids = {id(p) for p in roles.optimizers["gen"].param_groups[0]["params"]}
    d_ids = {id(p) for p in roles.optimizers["disc"].param_groups[0]["params"]}
    assert not g_ids & d_ids and {id(p) for p in disc.model.head.parameters()} <= d_ids
    assert len(g_ids) == len(d_ids) - 2 == 2 * 7 * 2  # A, B x 7 linear layers x 2 blocks (+ head weight, bias)

    batch = prompt_batch(cfg, roles)
    base = base_weights(roles)
    assert torch.equal(logprobs(gen, roles, batch), logprobs(ref, roles, batch))  # B = 0: gen == reference
    g0, d0, h0 = snapshot(gen.params), snapshot(disc.params[:-2]), snapshot(disc.params[-2:])

    # D's step moves D's adapter and head, never the generator's adapter.
    samples = roles.rollout.generate(batch.prompts, cfg.rollout.n)
    discriminator_phase(roles, batch, samples, PhaseTimer(), update=True)
    assert same(g0, gen.params) and not same(d0, disc.params[:-2]) and not same(h0, disc.params[-2:])
    d1, h1 = snapshot(disc.params[:-2]), snapshot(disc.params[-2:])

    # G's step (SFT) moves G's adapter only.
    sft_phase(roles, batch, PhaseTimer())
    assert not same(g0, gen.params) and same(d1, disc.params[:-2]) and same(h1, disc.params[-2:])
    assert not torch.equal(logprobs(gen, roles, batch), logprobs(ref, roles, batch))  # now G != reference

    # A GAD step with D frozen: D untouched; with D training: both move. The base never moves.
    g2 = snapshot(gen.params)
    gad_step(batch, roles, PhaseTimer(), update_discriminator=False)
    assert not same(g2, gen.params) and same(d1, disc.params[:-2]) and same(h1, disc.params[-2:])
    gad_step(batch, roles, PhaseTimer())
    assert not same(d1, disc.params[:-2])
    after = base_weights(roles)
    assert base.keys() == after.keys() and all(torch.equal(base[k], after[k]) for k in base)


def test_reference_from_a_lora_warmup_is_its_frozen_adapter(tiny_model, teacher_set, tmp_path):
    """A stage started from a LoRA warmup: the reference is the warmup's generator adapter (not the
    bare base), equal to the generator at the start and fixed while it trains."""
    from gad.trainer.steps import gad_step
    from gad.trainer.timing import PhaseTimer

    warm = stages.warmup(cfg_for("warmup", tiny_model, teacher_set, tmp_path / "w", **SHARED))
    wgen = warm.checkpoint / "generator"
    assert lora.is_adapter_folder(wgen) and lora.adapter_base(wgen) == str(tiny_model)
    cfg = cfg_for("train", tiny_model, teacher_set, tmp_path / "t", train__init_from=warm.checkpoint, **SHARED)
    roles = build(cfg, str(wgen), disc_path=str(warm.checkpoint / "discriminator.safetensors"))
    gen, ref = roles.generator, roles.reference
    assert ref.name == "ref" and not any(p.requires_grad for p in ref.adapters.params("ref"))
    batch = prompt_batch(cfg, roles)
    bare = lora.AdapterView(gen.model, gen.adapters, None, [], frozen=True)
    start = logprobs(gen, roles, batch)
    assert torch.equal(start, logprobs(ref, roles, batch))
    assert not torch.allclose(start, logprobs(bare, roles, batch))  # the warmup moved the adapter
    ref0 = snapshot(ref.adapters.params("ref"))
    base = base_weights(roles)
    gad_step(batch, roles, PhaseTimer())
    assert not torch.equal(logprobs(gen, roles, batch), logprobs(ref, roles, batch))
    assert same(ref0, ref.adapters.params("ref"))
    assert all(torch.equal(v, base_weights(roles)[k]) for k, v in base.items())


def test_resume_reproduces_the_uninterrupted_run(tiny_model, teacher_set, tmp_path):
    warm = stages.warmup(cfg_for("warmup", tiny_model, teacher_set, tmp_path / "w", **SHARED))
    extra = dict(SHARED, train__init_from=warm.checkpoint, train__max_steps=3, train__save_every=1,
                 train__keep_last=5, train__gradient_checkpointing=True, train__micro_batch_size=4)
    full = stages.train(cfg_for("train", tiny_model, teacher_set, tmp_path / "full", **extra))
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full", resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "step-000003")  # as if killed after step 2's checkpoint
    resumed = stages.train(cfg_for("train", tiny_model, teacher_set, resumed_dir, **extra), resume=True)
    assert resumed.step == full.step == 3
    for name in ("generator/adapter_model.safetensors", "discriminator.safetensors"):
        a, b = load_file(str(full.checkpoint / name)), load_file(str(resumed.checkpoint / name))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name
    two = load_file(str(full.checkpoint.parent / "step-000002" / "generator/adapter_model.safetensors"))
    assert any(not torch.equal(two[k], load_file(str(full.checkpoint / "generator/adapter_model.safetensors"))[k])
               for k in two)  # step 3 did move the adapter: the comparison above is not vacuous


def test_export_merged_loads_alone_with_the_adapters_logprobs(tiny_model, teacher_set, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = stages.seqkd(cfg_for("seqkd", tiny_model, teacher_set, tmp_path / "s", generator__lora_r=4,
                               generator__lora_lr=1e-2))
    assert gad_main(["export", str(run.run_dir), "--out", str(tmp_path / "adapter")]) == 0
    assert gad_main(["export", str(run.run_dir), "--out", str(tmp_path / "merged"), "--merged"]) == 0
    assert not (tmp_path / "merged" / lora.ADAPTER_CONFIG).exists()
    from gad.card import read_front_matter  # each exported folder carries its model card

    assert read_front_matter(tmp_path / "adapter")["library_name"] == "peft"
    merged_card = read_front_matter(tmp_path / "merged")
    assert merged_card["library_name"] == "transformers" and merged_card["base_model"] == str(tiny_model)
    assert "Merged:" in (tmp_path / "merged" / "README.md").read_text()

    cfg = cfg_for("train", tiny_model, teacher_set, tmp_path / "x")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(tmp_path / "adapter")).eval()
    roles = build(cfg, str(tiny_model))  # only for the tokenizer and the batch
    batch = prompt_batch(cfg, roles)
    lp_merged, lp_adapter = logprobs(merged, roles, batch), logprobs(adapter, roles, batch)
    assert torch.allclose(lp_merged, lp_adapter, atol=1e-5)
    assert not torch.allclose(lp_merged, logprobs(base, roles, batch), atol=1e-3)  # the adapter is in it
    evaluated, _ = load_causal_lm(str(run.checkpoint / "generator"))  # what `gad eval --model` loads
    assert torch.allclose(logprobs(evaluated.eval(), roles, batch), lp_merged, atol=1e-5)


def test_shared_base_config_errors(tiny_model, teacher_set, tmp_path):
    with pytest.raises(ConfigError, match="discriminator.lora_r > 0"):
        cfg_for("train", tiny_model, teacher_set, tmp_path, generator__lora_r=4, lora__share_base=True)
    with pytest.raises(ConfigError, match="discriminator.model"):
        cfg_for("warmup", tiny_model, teacher_set, tmp_path, **SHARED, discriminator__model=str(tiny_model))
    cfg = cfg_for("seqkd", tiny_model, teacher_set, tmp_path, generator__lora_r=4)
    assert cfg.generator.effective_lr == 1e-5 and cfg_for("seqkd", tiny_model, teacher_set, tmp_path).generator.effective_lr == 1e-3  # overrides() sets lr


def test_cli_shared_base_gad_run_and_report(tiny_model, teacher_set, tmp_path):
    out = tmp_path / "g"
    items = [f"{k.replace('__', '.')}={v}" for k, v in SHARED.items()]
    args = ["train", f"data.train_file={teacher_set}", f"generator.model={tiny_model}", f"train.output_dir={out}",
            "train.batch_size=4", "rollout.n=4", "rollout.max_new_tokens=8", "train.max_steps=4",
            "train.report_to=[]", *items]
    assert gad_main(args) == 0
    assert gad_main(["report", str(out)]) == 0
    assert (out / "report.html").exists()
    ckpt = out / "checkpoints" / "step-000004"
    assert lora.is_adapter_folder(ckpt / "generator")
    assert lora.discriminator_lora_meta(ckpt / "discriminator.safetensors")["r"] == 4
    assert Path(ckpt / "generator" / lora.ADAPTER_WEIGHTS).stat().st_size < 100_000  # the adapter, not the model


def test_separate_bases_bf16_base_fp32_adapters(tiny_model, teacher_set, tmp_path):
    """Without share_base a LoRA D has its own backbone; the generator's still carries the reference.
    A bf16 base keeps fp32 adapters and head, and trains under bf16 autocast with micro-batches and
    gradient checkpointing; the bases do not move."""
    from gad.trainer.steps import gad_step
    from gad.trainer.timing import PhaseTimer

    cfg = cfg_for("train", tiny_model, teacher_set, tmp_path / "r", generator__lora_r=4, discriminator__lora_r=4,
                  generator__lora_lr=1e-2, discriminator__lora_lr=1e-2, lora__base_dtype="bf16",
                  train__mixed_precision="bf16", train__gradient_checkpointing=True, train__micro_batch_size=4)
    roles = build(cfg, str(tiny_model))
    gen, ref, disc = roles.generator, roles.reference, roles.discriminator
    assert disc.model.backbone is not gen.model.base_model and ref.model is gen.model and ref.name is None
    assert gen.model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in gen.params + disc.params)
    batch = prompt_batch(cfg, roles)
    base = base_weights(roles)
    d_base = {k: p.detach().clone() for k, p in disc.model.backbone.named_parameters() if "lora_" not in k}
    g0, d0 = snapshot(gen.params), snapshot(disc.params)
    metrics = gad_step(batch, roles, PhaseTimer())
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert not same(g0, gen.params) and not same(d0, disc.params)
    assert all(torch.equal(v, base_weights(roles)[k]) for k, v in base.items())
    assert all(torch.equal(v, dict(disc.model.backbone.named_parameters())[k]) for k, v in d_base.items())
