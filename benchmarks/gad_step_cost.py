"""What a GAD step costs, phase by phase, and the discriminator's share of it.

Runs a short warmup, then the same GAD steps twice from that warmup checkpoint: once with D
updated (GAD), once with D frozen (scoring only). Both runs share data, seeds and sizes, and run
one after the other on the same machine; the ratio of their mean step times is D's overhead.

    python benchmarks/gad_step_cost.py --teacher-set T.jsonl --steps 5            # CPU, fp32
    python benchmarks/gad_step_cost.py ... --mixed-precision bf16                 # bf16 autocast
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from gad import stages
from gad.config import load_config
from gad.trainer.tracking import read_metrics

PHASES = ["rollout", "score", "disc_update", "reference", "policy_update"]


def random_model(src: Path, dst: Path) -> str:
    """Weights don't change what a step costs (only how long responses get)."""
    if not (dst / "config.json").exists():
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
        model.save_pretrained(dst)
        AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return str(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-set", required=True)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", default="runs/step-cost")
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--mixed-precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--random-init", default="", help="a folder with config.json + tokenizer: time a randomly "
                    "initialised model of that shape (for machines without the weights)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.random_init:
        args.model = random_model(Path(args.random_init), out / "random-model")
    common = [
        f"data.train_file={args.teacher_set}", f"generator.model={args.model}", f"train.batch_size={args.batch_size}",
        f"rollout.n={args.n}", f"rollout.max_new_tokens={args.max_new_tokens}", f"train.micro_batch_size={args.micro_batch_size}",
        f"train.mixed_precision={args.mixed_precision}", "train.save_every=1000", "train.tensorboard=false",
    ]
    if not (out / "warmup" / "checkpoints").exists():  # reused as is by a rerun
        stages.warmup(load_config(None, [*common, f"train.output_dir={out / 'warmup'}", f"train.max_steps={args.warmup_steps}",
                                      f"algorithm.disc_only_steps={max(1, args.warmup_steps - 1)}"], stage="warmup"))
    runs = {}
    for name, update in [("gad", True), ("frozen_d", False)]:
        run = out / name
        cfg = load_config(None, [*common, f"train.output_dir={run}", f"train.init_from={out / 'warmup'}",
                                 f"train.max_steps={args.steps}", f"discriminator.update={str(update).lower()}"],
                          stage="train", check_files=False)
        result = stages.train(cfg, resume=(run / "checkpoints").exists())  # a finished run resumes to nothing
        if result.interrupted:
            raise SystemExit(f"interrupted; run the same command again to continue from {result.checkpoint}")
        runs[name] = read_metrics(run)

    def mean(rows: list[dict], key: str) -> float:
        return statistics.mean(r.get(key, 0.0) for r in rows)

    print(f"\n{args.steps} GAD steps: {args.batch_size} prompts x {args.n} samples x <= {args.max_new_tokens} tokens, "
          f"{args.model}, mixed_precision={args.mixed_precision}")
    print(f"{'phase (mean s/step)':24s}" + "".join(f"{n:>12s}" for n in runs))
    for p in PHASES + ["step"]:
        print(f"{p:24s}" + "".join(f"{mean(rows, f'time/{p}'):12.1f}" for rows in runs.values()))
    print(f"{'response length mean':24s}" + "".join(f"{mean(rows, 'gen/response_length_mean'):12.1f}" for rows in runs.values()))
    ratio = mean(runs["gad"], "time/step") / mean(runs["frozen_d"], "time/step")
    share = mean(runs["gad"], "time/disc_update") / mean(runs["gad"], "time/step")
    print(f"\nstep time GAD / frozen D = {ratio:.3f}  (D's update adds {100 * (ratio - 1):.1f}%)")
    print(f"D update's share of a GAD step: {100 * share:.1f}%; scoring's: "
          f"{100 * mean(runs['gad'], 'time/score') / mean(runs['gad'], 'time/step'):.1f}%")


if __name__ == "__main__":
    main()
