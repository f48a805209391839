"""`gad synthetic`: GAD's precision against SeqKD's, and reward hacking of a frozen discriminator,
on a teacher whose likelihood is exact, through the real trainer (see gad/synthetic.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("the sequence-space claims: GAD's precision vs SeqKD, off-policy reward hacking; "
        "writes synthetic.json, synthetic.png (--sweep: claim 2 across regimes and seeds)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults come from SyntheticConfig (one source of truth); None here means "keep the default".
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/synthetic, with --sweep runs/synthetic-sweep)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="gad warmup steps")
    parser.add_argument("--gad-steps", type=int, default=None, help="gad train (and frozen-D offpolicy) steps")
    parser.add_argument("--init-steps", type=int, default=None, help="SeqKD steps of the shared starting student")
    parser.add_argument("--eval-every", type=int, default=None, help="measure held-out precision every N steps")
    parser.add_argument("--rl-lr", type=float, default=None, help="generator lr of gad train / offpolicy")
    parser.add_argument("--sft-lr", type=float, default=None, help="generator lr of seqkd / warmup")
    parser.add_argument("--disc-lr", type=float, default=None, help="discriminator lr")
    parser.add_argument("--group-size", type=int, default=None, help="N, samples per prompt")
    parser.add_argument("--no-plot", action="store_true", help="skip synthetic.png")
    parser.add_argument("--sweep", action="store_true",
                        help="claim 2: SeqKD (official strength) vs GAD in every regime of gad.synthetic_sweep, "
                        "over --seeds seeds; writes sweep.json, sweep.md, sweep.png; finished cells are reused")
    parser.add_argument("--seeds", type=int, default=5, help="--sweep: seeds 0..N-1 per regime (default: 5)")
    parser.add_argument("--jobs", type=int, default=2, help="--sweep: cells run at once, one process each (default: 2)")
    parser.add_argument("--regimes", default=None, help="--sweep: comma-separated regimes (default: all)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="extra trainer overrides for every stage, e.g. algorithm.kl_coef=0.01",
    )


def run(args: argparse.Namespace) -> int:
    from gad.errors import UserError
    from gad.synthetic import METHODS, SyntheticConfig, run_synthetic

    if args.sweep:
        return run_sweep_command(args)
    args.out = args.out or "runs/synthetic"

    names = {"warmup_steps": "warmup_steps", "gad_steps": "gad_steps", "init_steps": "init_steps",
             "eval_every": "eval_every", "rl_lr": "rl_lr", "sft_lr": "sft_lr", "disc_lr": "discriminator_lr",
             "group_size": "group_size"}
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    try:
        cfg = SyntheticConfig(out_dir=args.out, seed=args.seed, plot=not args.no_plot,
                              extra_overrides=tuple(args.overrides), **overrides)
    except ValueError as e:  # the config's own checks: an option's value is out of range
        raise UserError(f"bad option: {e}") from None
    results = run_synthetic(cfg)

    print(f"{'held-out':10s} {'precision/tok':>13s} {'precision/seq':>13s} {'coverage/tok':>12s} "
          f"{'coverage/seq':>12s} {'length':>6s} {'final D acc':>11s}")
    rows = [("teacher", results["teacher"], None), ("start", results["init"], None)]
    rows += [(m, results["methods"][m]["final"], results["methods"][m]["disc_accuracy_final"]) for m in METHODS]
    for name, m, acc in rows:
        acc_s = f"{acc:11.2f}" if acc is not None else f"{'':11s}"
        print(f"{name:10s} {m['precision_per_token']:13.3f} {m['precision_per_seq']:13.2f} "
              f"{m['coverage_per_token']:12.3f} {m['coverage_per_seq']:12.2f} {m['length_mean']:6.2f} {acc_s}")
    for m in ("gad", "offpolicy"):
        r = results["methods"][m]["reward_trend"]
        print(f"{m}: reward {r['first']:.2f} -> {r['last']:.2f} over its GRPO steps (mean of first/last 10 steps)")
    outputs = "synthetic.json" + ("" if args.no_plot else ", synthetic.png")
    print(f"{results['seconds']:.0f}s; wrote {outputs} and the runs to {args.out}")
    return 0


def run_sweep_command(args: argparse.Namespace) -> int:
    from gad.errors import UserError
    from gad.synthetic_sweep import REGIMES, run_sweep

    if args.seeds < 2:
        raise UserError(f"--seeds: an interval across seeds needs at least 2, got {args.seeds}")
    regimes = args.regimes.split(",") if args.regimes else list(REGIMES)
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        raise UserError(f"--regimes: unknown {', '.join(unknown)}; known: {', '.join(REGIMES)}")
    if args.overrides or any(getattr(args, a) is not None for a in (
            "warmup_steps", "gad_steps", "init_steps", "eval_every", "rl_lr", "sft_lr", "disc_lr", "group_size")):
        raise UserError("--sweep runs the settings fixed in gad/synthetic_sweep.py; it takes no other options")
    out = args.out or "runs/synthetic-sweep"
    summary = run_sweep(out, seeds=args.seeds, regimes=regimes, jobs=max(1, args.jobs),
                        log=lambda m: print(m, flush=True))
    print()
    print((Path(out) / "sweep.md").read_text())
    for regime, r in summary["regimes"].items():
        print(f"{regime}: GAD vs SeqKD: {r['verdict']} (late precision, paired 95% t-interval)")
    print(f"wrote sweep.json, sweep.md, sweep.png and cells/ to {out}")
    return 0
