"""Checkpoints: one ``step-NNNNNN/`` bundle, written to a temporary folder and renamed into place.

A bundle holds ``generator/`` (an HF folder: safetensors + tokenizer + a model card, servable as
is; with LoRA a peft adapter folder + tokenizer + card, see ``gad export``), ``discriminator.safetensors`` (with LoRA: D's
adapter and head), and ``state.pt`` (schedulers, RNG, step, data position), which
loads with ``weights_only=True``. Optimizer state is in ``state.pt`` for a one-process run
(``parallel: none``); under ``ddp``/``fsdp2`` every process writes its shards of the models and
optimizers into ``shards/`` (``torch.distributed.checkpoint``, read back by :mod:`gad.trainer.shards`
under any number of processes) and rank 0 writes the rest, the models gathered whole. Rank 0 names
the temporary folder and renames it after every process has written. A kill at any moment leaves
either the old bundle or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gad.card import CARD, model_card
from gad.errors import InputNotFound, UserError
from gad.lora import PEFT_PREFIX, AdapterView, discriminator_state, save_discriminator
from gad.trainer import shards
from gad.trainer.parallel import unwrap
from gad.trainer.roles import Roles

STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not ckpt_dir.exists():
        return []
    found = [p for p in ckpt_dir.iterdir() if STEP_DIR.match(p.name) and (p / "state.pt").exists()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (→ its newest checkpoint)."""
    path = Path(path)
    if (path / "state.pt").exists():
        return path
    ckpts = list_checkpoints(path / "checkpoints")
    if not ckpts:
        raise InputNotFound(f"{path}: neither a checkpoint (no state.pt) nor a run folder with checkpoints")
    return ckpts[-1]


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, roles: Roles, loop_state: dict[str, Any], keep_last: int) -> Path:
    """Write ``checkpoints/step-N`` atomically, then drop all but the newest ``keep_last``."""
    world = roles.world
    ckpt_dir = run_dir / "checkpoints"
    final = ckpt_dir / checkpoint_name(step)
    tmp = ckpt_dir / world.broadcast_object(f".tmp-{checkpoint_name(step)}-{os.getpid()}")  # rank 0's name
    if world.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    world.barrier()
    gen, disc = roles.generator, roles.discriminator
    # Gathered whole on rank 0 (collectives: every process takes part); with LoRA, the adapters and head.
    if isinstance(gen, AdapterView):
        generator_state = gen.adapters.state_dict(gen.name, prefix=PEFT_PREFIX)
    else:
        generator_state = world.full_state_dict(gen)
    if isinstance(disc, AdapterView):
        disc_state = discriminator_state(disc.model, disc.adapters, disc.name)
    else:
        disc_state = world.full_state_dict(disc) if disc is not None else None
    if world.distributed:
        shards.save(tmp / "shards", roles.modules(), roles.optimizers)
    if world.distributed:  # each process's random streams, for a resume under as many processes
        torch.save(rng_state(), tmp / f"rng-rank{world.rank}.pt")
    world.barrier()
    if world.is_main:
        if isinstance(gen, AdapterView):  # LoRA: the adapter folder (peft's format), not the model
            gen.adapters.save_folder(gen.name, tmp / "generator", generator_state)
        else:
            unwrap(gen).save_pretrained(tmp / "generator", state_dict=generator_state, safe_serialization=True)
        roles.tokenizer.save_pretrained(tmp / "generator")
        (tmp / "generator" / CARD).write_text(model_card(
            roles.cfg, step, loop_state.get("examples", 0), roles.initial_generator, isinstance(gen, AdapterView)))
        if isinstance(disc, AdapterView):  # LoRA: D's adapter and head
            save_discriminator(tmp / "discriminator.safetensors", disc.model, disc.adapters, disc.name, disc_state)
        elif disc is not None:
            unwrap(disc).save(tmp / "discriminator.safetensors", state=disc_state)
        state = {
            **loop_state,
            "step": step,
            "trained": sorted(roles.optimizers),  # the models whose optimizer state this holds
            "schedulers": {k: s.state_dict() for k, s in roles.schedulers.items()},
            "rng": rng_state(),
            "world_size": world.size,
            "parallel": world.mode,
            "initial_generator": roles.initial_generator,
        }
        if not world.distributed:
            state["optimizers"] = {k: o.state_dict() for k, o in roles.optimizers.items()}
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({
            "step": step, "stage": roles.cfg.stage, "saved_at": time.time(), "processes": world.size,
            "parallel": world.mode,
        }))
        _move_into_place(tmp, final, ckpt_dir, keep_last)
    world.barrier()  # no process goes on (or reads the checkpoint) before it is in place
    return final


def _move_into_place(tmp: Path, final: Path, ckpt_dir: Path, keep_last: int) -> None:
    if final.exists():  # re-saving a step (e.g. after a resume): swap, never leave a gap
        old = ckpt_dir / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    for stale in list_checkpoints(ckpt_dir)[:-keep_last]:
        shutil.rmtree(stale)


def load_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "state.pt", weights_only=True)


class ResumeError(UserError):
    """A checkpoint this run cannot continue from."""


def restore(roles: Roles, state: dict[str, Any], ckpt: Path) -> str:
    """Optimizer, scheduler and RNG state (the weights were loaded when the roles were built; a
    sharded checkpoint loads them again from its shards). Returns a note when the RNG could not be
    restored (a different number of processes)."""
    world = roles.world
    # The models both runs train (a stage continuing another, train.init_state=all, may add D).
    carried = [k for k in roles.optimizers if k in state.get("trained", roles.optimizers)]
    if "optimizers" in state:  # a one-process checkpoint
        if world.mode == "fsdp2":
            raise ResumeError(
                f"{ckpt}: saved by a one-process run (train.parallel=none), whose optimizer state is not "
                "sharded; resume it with train.parallel=none or ddp"
            )
        for k in carried:
            roles.optimizers[k].load_state_dict(state["optimizers"][k])
    else:
        modules = roles.modules()
        shards.load(ckpt / "shards", {k: modules[k] for k in carried}, {k: roles.optimizers[k] for k in carried})
    for k in carried:
        roles.schedulers[k].load_state_dict(state["schedulers"][k])
    saved_by = state.get("world_size", 1)
    if saved_by == world.size:
        own = ckpt / f"rng-rank{world.rank}.pt"
        set_rng_state(torch.load(own, weights_only=True) if own.exists() else state["rng"])
        return ""
    seed = roles.cfg.train.seed + 1_000_003 * world.rank + state["step"]
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return (f"saved by {saved_by} processes, resumed by {world.size}: weights, optimizer and data order "
            "continue exactly; the sampling random streams start afresh")


def clean_partial(ckpt_dir: Path) -> None:
    """Tidy what a killed save left behind; a swapped-out checkpoint whose successor never landed
    is put back, so nothing complete is ever removed."""
    if not ckpt_dir.exists():
        return
    for p in ckpt_dir.iterdir():
        if p.name.startswith(".old-"):
            final = ckpt_dir / p.name[len(".old-") :].rsplit("-", 1)[0]
            if final.exists():
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.replace(p, final)
        elif p.name.startswith(".tmp-"):
            shutil.rmtree(p, ignore_errors=True)
