"""``gad seqkd|warmup|train|offpolicy CONFIG.yaml [section.key=value ...] [--resume]``."""

from __future__ import annotations

import argparse

HELP = {
    "seqkd": "SeqKD baseline: fine-tune the student on the teacher's responses",
    "warmup": "GAD warmup: generator SFT + discriminator Bradley-Terry (first steps D only)",
    "train": "GAD: on-policy GRPO against a co-evolving discriminator",
    "offpolicy": "baseline: GRPO against a discriminator frozen after training on a frozen student",
}
ON_INTERRUPT = "add --resume to the same command to continue from the newest checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "items", nargs="*", metavar="CONFIG|KEY=VALUE",
        help="a YAML config (see recipes/) and/or overrides such as train.batch_size=4 rollout.n=8",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in train.output_dir")
    parser.add_argument("--skip-bad-rows", action="store_true", help="count and skip malformed teacher-set rows")


def run(args: argparse.Namespace) -> int:
    from gad.config import ConfigError, load_config

    files = [i for i in args.items if "=" not in i]
    overrides = [i for i in args.items if "=" in i]
    if len(files) > 1:
        raise ConfigError(f"one config file at most, got {files}")
    if args.skip_bad_rows:
        overrides.append("data.skip_bad_rows=true")
    cfg = load_config(files[0] if files else None, overrides, stage=args.command)

    from gad import stages

    result = getattr(stages, args.command)(cfg, resume=args.resume)
    if result.interrupted:
        return 130
    return 1 if result.stopped else 0  # stopped early (train.stop_on_imbalance): the run said why
