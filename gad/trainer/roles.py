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

from gad.config import Config
from gad.models import (
    Discriminator,
    enable_gradient_checkpointing,
    load_causal_lm,
    load_reference,
    resolve_model,
)
from gad.rollout import HFRollout, RolloutEngine
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
    discriminator: Discriminator | None
    rollout: RolloutEngine | None
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
        bf16 = self.cfg.train.mixed_precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def backward(self, loss: torch.Tensor, name: str, last: bool = True) -> None:
        """Back-propagate one micro-batch's loss into model ``name``'s gradients; ``last``: the final
        micro-batch before that model's optimizer step (the one whose gradients are synchronised)."""
        self.world.backward(loss, self.models()[name], last)

    def models(self) -> dict[str, Any]:
        """The models that train, by optimizer name."""
        return {k: m for k, m in (("gen", self.generator), ("disc", self.discriminator)) if m is not None}

    def step_optimizer(self, name: str, loss_value: float) -> dict[str, float]:
        """Clip, then step — unless the loss or the gradient is NaN/inf, in which case the update is
        dropped (gradients zeroed, parameters and optimizer state untouched) and counted."""
        model, opt = self.models()[name], self.optimizers[name]
        clip = self.cfg.generator.grad_clip if name == "gen" else self.cfg.discriminator.grad_clip
        grad_norm = self.world.clip_grad_norm(model, clip)  # over all processes' gradients
        ok = self.world.all(math.isfinite(loss_value) and math.isfinite(grad_norm))
        if ok:
            opt.step()
            self.schedulers[name].step()
        opt.zero_grad(set_to_none=True)
        return {f"{name}/grad_norm": grad_norm, f"{name}/skipped_update": float(not ok),
                f"{name}/lr": self.schedulers[name].get_last_lr()[0]}


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
    from it when resuming.
    """
    mp = cfg.train.mixed_precision
    weights = world.reads_weights  # False: FSDP2 ranks > 0 get their shards from rank 0
    generator, tokenizer = load_causal_lm(generator_path, weights=weights)  # fp32 master weights
    reference = None
    if cfg.stage in NEEDS_REFERENCE and cfg.algorithm.kl_coef > 0:
        reference = load_reference(initial_generator, cfg.train.reference_dtype, weights)
    discriminator = None
    if cfg.stage in NEEDS_DISCRIMINATOR:
        if discriminator_path:
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
    rollout = None
    if cfg.stage in NEEDS_DISCRIMINATOR:
        policy = unwrap(generator)

        @contextmanager
        def sampling() -> Iterator[None]:
            with world.generation(policy), torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=mp == "bf16"):
                yield

        rollout = HFRollout(
            policy, tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.max_new_tokens, cfg.rollout.temperature,
            cfg.rollout.top_p, autocast=sampling, micro_batch_size=cfg.rollout.micro_batch_size,
        )
    return Roles(cfg, world, tokenizer, generator, reference, discriminator, rollout, optimizers,
                 schedulers, initial_generator=initial_generator)
