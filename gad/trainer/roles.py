"""The roles of a stage (generator, reference, discriminator, rollout) and their optimizers.

Built in one place from the config, so a stage never constructs a model itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from gad import lora
from gad.config import Config, ConfigError
from gad.models import (
    DTYPES,
    Discriminator,
    enable_gradient_checkpointing,
    load_causal_lm,
    load_reference,
    resolve_model,
)
from gad.rollout import HFRollout, RolloutEngine
from gad.rollout.vllm_engine import ColocatedEngine, VLLMRollout, VLLMSettings, WeightSync, require_vllm
from gad.rollout.vllm_server import PolicyServerRollout, VLLMServerRollout
from gad.trainer.parallel import ONE_PROCESS, World, unwrap

NEEDS_DISCRIMINATOR = ("warmup", "train", "offpolicy")
NEEDS_REFERENCE = ("train", "offpolicy")


@dataclass
class Roles:
    cfg: Config
    world: World
    tokenizer: Any
    generator: Any
    reference: Any | None
    discriminator: Any | None  # a Discriminator, or a LoRA view of one (gad.lora.AdapterView)
    rollout: RolloutEngine
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: dict[str, LambdaLR] = field(default_factory=dict)
    initial_generator: str = ""  # where this stage's generator started: the KL reference

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    def autocast(self) -> Any:
        """bf16 autocast for the compute under ``train.mixed_precision: bf16`` (weights stay fp32)."""
        return bf16_autocast(self.device, self.cfg.train.mixed_precision)

    def backward(self, loss: torch.Tensor, name: str, last: bool = True) -> None:
        """Back-propagate one micro-batch's loss into model ``name``'s gradients; ``last``: the final
        micro-batch before that model's optimizer step (the one whose gradients are synchronised)."""
        model = self.models()[name]
        if isinstance(model, lora.AdapterView):  # checkpointed blocks recompute with the active adapter
            model.activate()
        self.world.backward(loss, model, last)

    def close(self) -> None:
        """Release what the roles hold outside torch (a vLLM engine)."""
        close = getattr(self.rollout, "close", None)
        if close is not None:
            close()

    def models(self) -> dict[str, Any]:
        """The models that train, by optimizer name."""
        return {k: m for k, m in (("gen", self.generator), ("disc", self.discriminator)) if m is not None}

    def modules(self) -> dict[str, torch.nn.Module]:
        """The modules holding the models that train (with LoRA, the model an adapter lives in)."""
        return {k: m.model if isinstance(m, lora.AdapterView) else m for k, m in self.models().items()}

    def step_optimizer(self, name: str, loss_value: float) -> dict[str, float]:
        """Clip, then step — unless the loss or the gradient is NaN/inf, in which case the update is
        dropped (gradients zeroed, parameters and optimizer state untouched) and counted."""
        opt = self.optimizers[name]
        clip = self.cfg.generator.grad_clip if name == "gen" else self.cfg.discriminator.grad_clip
        params = [p for g in opt.param_groups for p in g["params"]]  # the optimizer's own list, never a requires_grad filter
        grad_norm = self.world.clip_grad_norm(params, clip)  # over all processes' gradients
        ok = self.world.all(math.isfinite(loss_value) and math.isfinite(grad_norm))
        if ok:
            opt.step()
            self.schedulers[name].step()
        opt.zero_grad(set_to_none=True)
        return {f"{name}/grad_norm": grad_norm, f"{name}/skipped_update": float(not ok),
                f"{name}/lr": self.schedulers[name].get_last_lr()[0]}


def bf16_autocast(device: torch.device, mixed_precision: str) -> Any:
    """bf16 autocast on ``device`` when ``train.mixed_precision`` is bf16, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def _optimizer(params: Any, lr: float, weight_decay: float, warmup: int) -> tuple[torch.optim.Optimizer, LambdaLR]:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
    return opt, sched


def build_roles(
    cfg: Config, initial_generator: str, generator_path: str, discriminator_path: str | None,
    world: World = ONE_PROCESS,
) -> Roles:
    """Load every model a stage needs and place them on this process's device (wrapped or sharded
    as ``world.mode`` says); optimizers are built on the placed parameters.

    ``initial_generator`` is where the stage started (the reference for the KL term, and D's
    default backbone); ``generator_path``/``discriminator_path`` are what to load now, which differ
    from it when resuming. With LoRA (``generator.lora_r``/``discriminator.lora_r`` > 0) these may be
    adapter folders / LoRA discriminator files: see :func:`_build_lora`.
    """
    if cfg.rollout.engine == "vllm":
        require_vllm()  # before any model loads
    if cfg.generator.lora or (cfg.stage in NEEDS_DISCRIMINATOR and cfg.discriminator.lora):
        return _build_lora(cfg, initial_generator, generator_path, discriminator_path, world)
    mp = cfg.train.mixed_precision
    weights = world.reads_weights  # False: FSDP2 ranks > 0 get their shards from rank 0
    generator, tokenizer = load_causal_lm(generator_path, weights=weights)  # fp32 master weights
    reference = None
    if cfg.stage in NEEDS_REFERENCE and cfg.algorithm.kl_coef > 0:
        reference = load_reference(initial_generator, cfg.train.reference_dtype, weights)
    discriminator = None
    if cfg.stage in NEEDS_DISCRIMINATOR:
        if discriminator_path:
            _refuse_lora_discriminator(discriminator_path)
            discriminator = Discriminator.load(discriminator_path, weights=weights)
        else:
            discriminator = Discriminator.from_backbone(resolve_model(cfg.discriminator.model or initial_generator), weights=weights)
    if cfg.train.gradient_checkpointing:
        for model in (generator, discriminator):
            if model is not None:
                enable_gradient_checkpointing(model)
    generator = world.prepare_trainable(generator, mp)
    g_opt, g_sched = _optimizer(generator.parameters(), cfg.generator.lr, cfg.generator.weight_decay, cfg.generator.lr_warmup_steps)
    optimizers, schedulers = {"gen": g_opt}, {"gen": g_sched}
    if discriminator is not None:
        d_cfg = cfg.discriminator
        discriminator = world.prepare_trainable(discriminator, mp)
        d_opt, d_sched = _optimizer(discriminator.parameters(), d_cfg.lr, d_cfg.weight_decay, d_cfg.lr_warmup_steps)
        optimizers["disc"], schedulers["disc"] = d_opt, d_sched
    if reference is not None:
        reference = world.prepare_frozen(reference, mp)
    rollout = _rollout(cfg, world, unwrap(generator), tokenizer, version=_steps(g_sched))  # sampling stages, and validation in all
    return Roles(cfg, world, tokenizer, generator, reference, discriminator, rollout, optimizers,
                 schedulers, initial_generator=initial_generator)


def _rollout(cfg: Config, world: World, policy: Any, tokenizer: Any, before: Any = None,
             version: Any = None, adapter: str | None = None) -> RolloutEngine:
    """Sampling from the live ``policy`` (``rollout.engine``); ``before()`` runs at the start of every
    generate call (LoRA: activate the generator's adapter). A vLLM engine receives the weights again
    whenever ``version()`` (the generator's update count) changed, with ``adapter`` merged in."""
    mp = cfg.train.mixed_precision

    @contextmanager
    def whole_policy() -> Iterator[None]:  # the policy's parameters unsharded, its adapter active
        if before is not None:
            before()
        with world.generation(policy):
            yield

    @contextmanager
    def sampling() -> Iterator[None]:
        with whole_policy(), bf16_autocast(world.device, mp):
            yield

    r = cfg.rollout
    if r.engine == "vllm" and r.vllm_mode == "server":
        server = VLLMServerRollout(
            r.vllm_server_url, tokenizer.eos_token_id, cfg.max_new_tokens, r.temperature, r.top_p,
            vocab_size=len(tokenizer) if len(tokenizer) < policy.config.vocab_size else None,  # limit only a padded vocabulary
            weight_transfer=r.vllm_weight_transfer, nccl_address=r.vllm_nccl_address or None,
            nccl_port=r.vllm_nccl_port or None, server_world_size=r.vllm_server_world_size, rank=world.rank,
        )
        sync = WeightSync(policy, server.push_weights, whole_policy, adapter, version, barrier=True)
        return PolicyServerRollout(server, sync)
    if r.engine == "vllm":
        settings = VLLMSettings(
            dtype=r.vllm_dtype if r.vllm_dtype != "auto" else ("bf16" if "bf16" in (mp, cfg.lora.base_dtype) else "fp32"),
            max_model_len=cfg.data.max_prompt_length + cfg.max_new_tokens,
            gpu_memory_utilization=r.vllm_gpu_memory_utilization, sleep=r.vllm_sleep,
            enforce_eager=r.vllm_enforce_eager, cpu_kv_cache_gib=r.vllm_cpu_kv_cache_gib, seed=cfg.train.seed,
        )
        engine = ColocatedEngine(policy, tokenizer.eos_token_id, settings, gather=whole_policy, adapter=adapter,
                                 version=version)
        return VLLMRollout(engine, cfg.max_new_tokens, r.temperature, r.top_p, vocab_size=len(tokenizer))
    return HFRollout(
        policy, tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.max_new_tokens, r.temperature,
        r.top_p, autocast=sampling, micro_batch_size=r.micro_batch_size,
    )


def _steps(scheduler: LambdaLR) -> Any:
    """The generator's update count (a skipped update does not count): when the policy changed."""
    return lambda: scheduler.last_epoch


def _refuse_lora_discriminator(path: str) -> None:
    if lora.discriminator_lora_meta(path) is not None:
        raise ConfigError(f"{path}: a LoRA discriminator (adapter + head); load it with discriminator.lora_r > 0")


def _lora_settings(c: Any) -> Any:
    return lora.lora_config(c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_target_modules)


def _build_lora(
    cfg: Config, initial_generator: str, generator_path: str, discriminator_path: str | None, world: World,
) -> Roles:
    """The roles with LoRA on the generator and/or the discriminator.

    The generator's backbone (the base model) is loaded once, frozen, in ``lora.base_dtype``; the
    generator is its adapter ``gen``, and the reference the same backbone with adapters off, or with
    ``ref``, a frozen copy of the adapter the stage started from. With ``lora.share_base`` D is
    adapter ``disc`` of that same backbone plus its head; otherwise a LoRA D has its own backbone.
    A generator path is a whole model (a fresh adapter goes on it) or an adapter folder (its base is
    loaded and the adapter continues to train). Every adapter is in its model before the model is
    placed (FSDP2 shards what is there); each optimizer owns its explicit parameter list, taken after.
    """
    g_cfg, d_cfg = cfg.generator, cfg.discriminator
    dtype, mp = DTYPES[cfg.lora.base_dtype], cfg.train.mixed_precision
    weights = world.reads_weights  # False: FSDP2 ranks > 0 get their shards from rank 0
    needs_d = cfg.stage in NEEDS_DISCRIMINATOR
    needs_ref = cfg.stage in NEEDS_REFERENCE and cfg.algorithm.kl_coef > 0
    shared: lora.Adapters | None = None  # the generator's backbone and its adapters, when the generator is LoRA

    # -- build: the generator's backbone with its adapters (or the whole generator and reference) --
    ref_name, reference_model = None, None
    if g_cfg.lora:
        base = lora.adapter_base(generator_path) if lora.is_adapter_folder(generator_path) else generator_path
        lm, tokenizer = load_causal_lm(base, dtype, weights)
        shared = lora.Adapters(lm, base)
        if lora.is_adapter_folder(generator_path):
            shared.add_from_folder("gen", generator_path, trainable=True)
        else:
            shared.add("gen", _lora_settings(g_cfg), trainable=True)
        if needs_ref and lora.is_adapter_folder(initial_generator):  # the stage started from a LoRA checkpoint
            shared.add_from_folder("ref", initial_generator, trainable=False)
            ref_name = "ref"  # else the stage started from the base itself: adapters off
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(lm)
            lm.enable_input_require_grads()  # frozen embeddings: give the checkpointed blocks inputs that need grad
    else:
        lm, tokenizer = load_causal_lm(generator_path, weights=weights)
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(lm)
        if needs_ref:
            reference_model = load_reference(initial_generator, cfg.train.reference_dtype, weights)

    # -- build: the discriminator ----------------------------------------------------------------
    disc: Any = None
    d_adapters: lora.Adapters | None = None
    if needs_d:
        meta = lora.discriminator_lora_meta(discriminator_path) if discriminator_path else None
        if not d_cfg.lora:
            if meta is not None:
                _refuse_lora_discriminator(discriminator_path or "")
            backbone_of = lora.adapter_base(initial_generator) if lora.is_adapter_folder(initial_generator) else initial_generator
            disc = (Discriminator.load(discriminator_path, weights=weights) if discriminator_path
                    else Discriminator.from_backbone(resolve_model(d_cfg.model or backbone_of), weights=weights))
            if cfg.train.gradient_checkpointing:
                enable_gradient_checkpointing(disc)
        else:
            if cfg.lora.share_base:
                if discriminator_path and meta is None:
                    raise ConfigError(
                        f"{discriminator_path}: a whole discriminator (full fine-tuning) cannot sit on the shared "
                        "backbone; start D afresh (no discriminator.init) or set lora.share_base=false")
                assert shared is not None  # validate(): share_base needs a LoRA generator
                d_adapters = shared
                disc = Discriminator(lm.base_model)  # the causal LM's own decoder: one backbone for both
            elif meta is not None:  # a LoRA D of its own (its base: a model, or a whole D's file)
                d_base = meta["base"]
                disc = (Discriminator.load(d_base, dtype, weights) if d_base.endswith(".safetensors")
                        else Discriminator.from_backbone(resolve_model(d_base), dtype, weights))
                d_adapters = lora.Adapters(disc.backbone, d_base)
            elif discriminator_path:  # LoRA on a whole trained D (e.g. from a full-fine-tuning warmup)
                disc = Discriminator.load(discriminator_path, dtype, weights)
                disc.head.float()
                d_adapters = lora.Adapters(disc.backbone, discriminator_path)
            else:
                base_of = shared.base if shared is not None else initial_generator
                d_base = resolve_model(d_cfg.model or base_of)
                disc = Discriminator.from_backbone(d_base, dtype, weights)
                d_adapters = lora.Adapters(disc.backbone, d_base)
            if meta is not None:
                settings = lora.lora_config(meta["r"], meta["alpha"], meta["dropout"], meta["target_modules"])
                d_adapters.add("disc", settings, trainable=True)
                if weights:
                    lora.load_discriminator_weights(discriminator_path or "", disc, d_adapters)
            else:
                d_adapters.add("disc", _lora_settings(d_cfg), trainable=True)
            if cfg.train.gradient_checkpointing and d_adapters is not shared:
                enable_gradient_checkpointing(disc)
                disc.backbone.enable_input_require_grads()

    # -- place (device; DDP or FSDP2), then the roles and their optimizers -------------------------
    optimizers: dict[str, torch.optim.Optimizer] = {}
    schedulers: dict[str, LambdaLR] = {}
    reference: Any = None
    if shared is not None:
        world.prepare_adapters(lm, mp, decoder_called_alone=d_adapters is shared)
        generator: Any = lora.AdapterView(lm, shared, "gen", shared.params("gen"))
        if needs_ref:
            reference = lora.AdapterView(lm, shared, ref_name, [], frozen=True)
        g_lr = g_cfg.lora_lr
    else:
        generator = world.prepare_trainable(lm, mp)
        if reference_model is not None:
            reference = world.prepare_frozen(reference_model, mp)
        g_lr = g_cfg.lr
    optimizers["gen"], schedulers["gen"] = _optimizer(
        list(generator.parameters()), g_lr, g_cfg.weight_decay, g_cfg.lr_warmup_steps)
    discriminator: Any = None
    if disc is not None:
        if d_adapters is None:
            discriminator = world.prepare_trainable(disc, mp)
            d_lr = d_cfg.lr
        else:
            world.prepare_adapters(disc.head if d_adapters is shared else disc, mp)
            discriminator = lora.AdapterView(disc, d_adapters, "disc", d_adapters.params("disc") + list(disc.head.parameters()))
            d_lr = d_cfg.lora_lr
        optimizers["disc"], schedulers["disc"] = _optimizer(
            list(discriminator.parameters()), d_lr, d_cfg.weight_decay, d_cfg.lr_warmup_steps)

    activate = generator.activate if isinstance(generator, lora.AdapterView) else None
    rollout = _rollout(cfg, world, lm, tokenizer, before=activate, version=_steps(schedulers["gen"]),
                       adapter="gen" if g_cfg.lora else None)
    return Roles(cfg, world, tokenizer, generator, reference, discriminator, rollout, optimizers,
                 schedulers, initial_generator=initial_generator)
