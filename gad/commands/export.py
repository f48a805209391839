"""``gad export RUN_DIR|CHECKPOINT --out DIR [--merged] [--dtype bf16]``."""

from __future__ import annotations

import argparse
import sys

HELP = ("write a run's generator for serving: a LoRA run's adapter folder (PeftModel, vLLM --enable-lora), "
        "or with --merged one HF model folder (adapter merged into the base) that AutoModelForCausalLM loads")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="a run folder (its newest checkpoint) or a checkpoint folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--merged", action="store_true",
                        help="merge a LoRA adapter into its base weights: a whole model folder (a full fine-tuning run's "
                             "generator is one already)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="weights' dtype of a written model folder (default fp32; bf16 halves its size)")


def run(args: argparse.Namespace) -> int:
    from gad.models import export_generator
    from gad.trainer.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(args.run)
    out = export_generator(ckpt / "generator", args.out, merged=args.merged, dtype=args.dtype)
    print(f"gad export: wrote {out} from {ckpt}", file=sys.stderr)
    return 0
