"""One entry point per stage, for notebooks and scripts. The CLI calls exactly these.

    from gad import load_config, warmup, train
    cfg = load_config("recipes/smollm2-cpu/warmup.yaml", ["train.max_steps=2"])
    warmup(cfg)
"""

from __future__ import annotations

import dataclasses

from gad.config import Config
from gad.trainer.loop import RunResult, run_stage


def _run(stage: str, cfg: Config, resume: bool) -> RunResult:
    return run_stage(dataclasses.replace(cfg, stage=stage), resume=resume)


def seqkd(cfg: Config, resume: bool = False) -> RunResult:
    """SeqKD baseline: supervised fine-tuning on the teacher's responses."""
    return _run("seqkd", cfg, resume)


def warmup(cfg: Config, resume: bool = False) -> RunResult:
    """GAD warmup: G by cross-entropy on teacher responses, D by Bradley-Terry on (teacher, samples)."""
    return _run("warmup", cfg, resume)


def train(cfg: Config, resume: bool = False) -> RunResult:
    """The GAD stage: G by GRPO on D's rewards, D by Bradley-Terry, co-evolving."""
    return _run("train", cfg, resume)


def offpolicy(cfg: Config, resume: bool = False) -> RunResult:
    """The reward-hacking baseline: D trained on a frozen student's samples, then frozen as a reward."""
    return _run("offpolicy", cfg, resume)
