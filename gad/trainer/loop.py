"""The loop every stage shares: data → step → guard → log → checkpoint, resumable and interruptible."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gad.config import Config, save_config, to_dict
from gad.data import batch_indices, encode_teacher_set, hold_out, read_teacher_set
from gad.errors import UserError
from gad.models import resolve_model
from gad.trainer import checkpoint as ckpt
from gad.trainer import parallel
from gad.trainer.balance import BalanceMonitor
from gad.trainer.roles import build_roles
from gad.trainer.steps import PromptBatch, gad_step, seqkd_step, warmup_step
from gad.trainer.timing import PhaseTimer
from gad.trainer.trackers import check_installed, flat_config
from gad.trainer.tracking import MetricsLogger, NullLogger, read_metrics
from gad.trainer.validation import validate

SampleLog = list[dict[str, Any]] | None  # receives a few prompts' samples on the steps that log them
StepFn = Callable[[int, PromptBatch, Any, PhaseTimer, SampleLog], dict[str, float]]


class RunExistsError(UserError, RuntimeError):
    """The run folder already holds checkpoints and ``resume`` was not asked for."""


class NonFiniteError(UserError, RuntimeError):
    """Too many consecutive steps had NaN/inf losses or gradients: the settings diverge (told in
    one line, like bad input: lower the learning rates or raise train.max_bad_steps)."""


@dataclass
class RunResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    interrupted: bool = False
    stopped: str = ""  # why the run stopped before its last step, when not interrupted (an imbalance)


def stage_plan(cfg: Config, n_examples: int) -> tuple[int, StepFn]:
    """How many steps the stage runs, and what one step does (``phase`` labels it in the metrics)."""
    epoch_steps = math.ceil(n_examples / cfg.train.batch_size)
    main_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * epoch_steps)
    if cfg.stage == "seqkd":
        return main_steps, lambda step, batch, roles, timer, log: seqkd_step(batch, roles, timer)
    if cfg.stage == "warmup":
        def warmup(step: int, batch: PromptBatch, roles: Any, timer: PhaseTimer, log: SampleLog) -> dict[str, float]:
            return warmup_step(batch, roles, timer, train_generator=step >= cfg.algorithm.disc_only_steps, log=log)
        return main_steps, warmup
    if cfg.stage == "train":
        update_d = cfg.discriminator.update
        return main_steps, lambda step, batch, roles, timer, log: gad_step(
            batch, roles, timer, update_discriminator=update_d, log=log)
    # offpolicy: D learns from the frozen student's samples, then is frozen as a fixed reward.
    pre = cfg.algorithm.disc_pretrain_steps or epoch_steps

    def offpolicy(step: int, batch: PromptBatch, roles: Any, timer: PhaseTimer, log: SampleLog) -> dict[str, float]:
        if step < pre:
            return warmup_step(batch, roles, timer, train_generator=False, log=log)
        return gad_step(batch, roles, timer, update_discriminator=False, log=log)

    return pre + main_steps, offpolicy


class _Interrupts:
    """First Ctrl-C (or SIGTERM): finish the step, save, stop. Second Ctrl-C: stop at once."""

    requested = False

    def handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\ngad: interrupt received; finishing this step and saving a checkpoint "
              "(Ctrl-C again to stop without saving)", file=sys.stderr, flush=True)


@contextmanager
def graceful_interrupts() -> Iterator[_Interrupts]:
    state = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    old = {s: signal.signal(s, state.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_stage(cfg: Config, resume: bool = False) -> RunResult:
    """Run one stage (``cfg.stage``) to the end, or continue it from its newest checkpoint.

    Under ``torchrun``/``accelerate launch`` every process runs this with the same config; each
    trains on its share of every batch (``train.parallel``) and rank 0 alone writes the run folder.
    """
    world = parallel.setup(cfg.train.parallel, cfg.stage)  # before anything is read or written
    try:
        return _run_stage(cfg, resume, world)
    finally:
        world.close()


def _run_stage(cfg: Config, resume: bool, world: parallel.World) -> RunResult:
    from accelerate.utils import set_seed

    cfg.validate()
    check_installed(cfg.train.report_to)  # a missing tracker package stops every process before anything runs
    world.check_batch(cfg.train.batch_size, cfg.mini_batch_size)
    run_dir = Path(cfg.train.output_dir)
    ckpt_dir = run_dir / "checkpoints"
    if world.is_main:
        ckpt.clean_partial(ckpt_dir)
    world.barrier()
    existing = ckpt.list_checkpoints(ckpt_dir)
    if existing and not resume:
        raise RunExistsError(
            f"{run_dir} already holds checkpoints (newest {existing[-1].name}); "
            "pass --resume to continue it, or choose another train.output_dir"
        )

    # Data first: a malformed row stops the run before any model is loaded.
    rows, stats = read_teacher_set(cfg.data.train_file, cfg.data.skip_bad_rows)
    for msg in stats.bad_row_messages[:5] if world.is_main else []:
        print(f"gad: skipped malformed row: {msg}", file=sys.stderr)
    if cfg.data.eval_file:  # held-out teacher data for validation during training
        heldout_rows, _ = read_teacher_set(cfg.data.eval_file, cfg.data.skip_bad_rows)
    else:
        rows, heldout_rows = hold_out(rows, cfg.data.eval_fraction, cfg.train.seed)
        stats.rows = len(rows)

    state: dict[str, Any] | None = None  # the training state to continue, and where it was saved
    state_from: Path | None = None
    disc_path: str | None = None
    if resume and existing:
        state_from = existing[-1]
        state = ckpt.load_state(state_from)
        initial, gen_path = state["initial_generator"], str(state_from / "generator")
        disc_file = state_from / "discriminator.safetensors"
        disc_path = str(disc_file) if disc_file.exists() else None
    elif cfg.train.init_from:
        init = ckpt.resolve_checkpoint(cfg.train.init_from)
        initial = gen_path = str(init / "generator")
        disc_file = init / "discriminator.safetensors"
        disc_path = str(disc_file) if disc_file.exists() else (cfg.discriminator.init or None)
        if cfg.train.init_state == "all":  # continue that run: optimizers, schedules, step, data position
            state_from, state = init, ckpt.load_state(init)
    else:
        initial = gen_path = resolve_model(cfg.generator.model)
        disc_path = cfg.discriminator.init or None

    set_seed(cfg.train.seed)  # the same initial weights (D's head) in every process
    roles = build_roles(cfg, initial, gen_path, disc_path, world)
    if world.rank:  # different samples in each process; rank 0 keeps the one-process stream
        set_seed(cfg.train.seed + 1_000_003 * world.rank)
    prompts = {r.id: r.messages[-1]["content"] for r in rows}  # what samples.jsonl shows of each prompt
    examples, stats = encode_teacher_set(
        rows, roles.tokenizer, roles.eos_id, cfg.data.max_prompt_length, cfg.data.max_response_length, stats,
        cfg.data.long_prompts, cfg.data.chat_template_kwargs,
    )
    heldout = []
    if heldout_rows:
        heldout, _ = encode_teacher_set(heldout_rows, roles.tokenizer, roles.eos_id, cfg.data.max_prompt_length,
                                        cfg.data.max_response_length, None, cfg.data.long_prompts,
                                        cfg.data.chat_template_kwargs)
        heldout = heldout[: cfg.eval.prompts]
    total_steps, step_fn = stage_plan(cfg, len(examples))
    start = 0
    if state is not None and state_from is not None:
        note = ckpt.restore(roles, state, state_from)
        if note and world.is_main:
            print(f"gad {cfg.stage}: {note}", file=sys.stderr)
        start = state["step"]
    bad_in_a_row = state.get("bad_in_a_row", 0) if state else 0
    bad_total = state.get("bad_total", 0) if state else 0

    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        where = f"{world.size} processes ({world.mode}, {roles.device.type})" if world.distributed else str(roles.device)
        print(f"gad {cfg.stage}: {stats.summary()}", file=sys.stderr)
        print(f"gad {cfg.stage}: generator {gen_path} on {where}; steps {start}→{total_steps}; "
              f"run folder {run_dir}", file=sys.stderr)
    # Every process runs the same balance monitor on the same (reduced) metrics, so they stop together;
    # a resumed run's monitor starts from the rows before its checkpoint.
    resumed = resume and start > 0 and (run_dir / "metrics.jsonl").exists()
    monitor = BalanceMonitor(rows=[r for r in read_metrics(run_dir) if r["step"] <= start] if resumed else [])
    world.barrier()  # every process has read the rows before rank 0's logger trims those after the checkpoint
    logger = (MetricsLogger(run_dir, total_steps, start, cfg.stage, cfg.train.report_to, cfg.train.run_name,
                            flat_config(to_dict(cfg))) if world.is_main else NullLogger())
    last_ckpt = existing[-1] if existing else None
    step = start
    interrupted = False
    stopped = ""

    def save(step: int) -> Path:
        return ckpt.save_checkpoint(
            run_dir, step, roles,
            {"samples_seen": step * cfg.train.batch_size, "bad_in_a_row": bad_in_a_row, "bad_total": bad_total,
             "examples": len(examples)},
            cfg.train.keep_last,
        )

    try:
        with graceful_interrupts() as interrupts:
            for step in range(start, total_steps):
                idx = batch_indices(step, cfg.train.batch_size, len(examples), cfg.train.seed)
                batch = PromptBatch([examples[i] for i in world.share(idx, cfg.mini_batch_size)])  # this process's groups
                timer = PhaseTimer()
                t0 = time.perf_counter()
                every = cfg.train.log_samples_every
                log: SampleLog = [] if every and (step + 1) % every == 0 and world.is_main else None
                metrics = step_fn(step, batch, roles, timer, log)
                metrics.update(timer.metrics(world))
                metrics["time/step"] = float(world.max(torch.tensor([time.perf_counter() - t0]))[0])
                skipped = any(metrics.get(f"{k}/skipped_update", 0.0) for k in ("gen", "disc"))
                bad_in_a_row = bad_in_a_row + 1 if skipped else 0
                bad_total += int(skipped)
                metrics["guard/bad_steps_total"] = float(bad_total)
                if cfg.eval.every and heldout and ((step + 1) % cfg.eval.every == 0 or step + 1 == total_steps):
                    t_val = time.perf_counter()
                    metrics.update(validate(roles, heldout, cfg.eval.max_new_tokens))
                    metrics["time/validation"] = float(world.max(torch.tensor([time.perf_counter() - t_val]))[0])
                flags, started = monitor.update(step + 1, metrics)
                metrics.update(flags)
                logger.log(step + 1, metrics, {"batch_ids": [examples[i].id for i in idx],
                                               "epoch": step * cfg.train.batch_size // len(examples)})
                if log:
                    logger.log_samples(step + 1, [{"prompt": prompts[r["id"]], **r} for r in log])
                for message in started:
                    logger.write(f"gad {cfg.stage}: step {step + 1}: balance: {message}")
                if skipped:
                    logger.write(f"gad: step {step + 1}: NaN/inf loss or gradient, update skipped "
                                 f"({bad_in_a_row} in a row, {bad_total} in all)")
                if bad_in_a_row > cfg.train.max_bad_steps:
                    raise NonFiniteError(
                        f"{bad_in_a_row} consecutive steps with NaN/inf losses or gradients (train.max_bad_steps="
                        f"{cfg.train.max_bad_steps}); stopped (lower the learning rates?). Last good checkpoint: {last_ckpt or 'none'}"
                    )
                done = step + 1
                stop = world.any(interrupts.requested)  # a signal seen by one process stops them all here
                imbalanced = cfg.train.stop_on_imbalance and bool(monitor.active)
                if done % cfg.train.save_every == 0 or done == total_steps or stop or imbalanced:
                    last_ckpt = save(done)
                if stop or imbalanced:
                    interrupted, stopped = stop, "" if stop else "imbalance"
                    step = done
                    break
            else:
                step = total_steps
    finally:
        logger.close()
        roles.close()
    where = f"checkpoint {last_ckpt}" if last_ckpt else "no checkpoint"
    if world.is_main:
        how = "interrupted at" if interrupted else (
            f"stopped on imbalance ({', '.join(sorted(monitor.active))}; train.stop_on_imbalance) at" if stopped
            else "finished")
        print(f"gad {cfg.stage}: {how} step {step}; {where}; metrics {run_dir / 'metrics.jsonl'}", file=sys.stderr)
    return RunResult(run_dir, step, last_ckpt, interrupted, stopped)
