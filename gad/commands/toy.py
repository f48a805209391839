"""`gad toy`: the paper's Fig. 5 on a problem small enough to solve exactly (see gad/toy.py)."""

from __future__ import annotations

import argparse

HELP = "the toy claim (paper Fig. 5): GAD is mode-seeking, SeqKD mode-covering; writes toy.json, toy.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults come from ToyConfig (one source of truth); None here means "keep the config default".
    parser.add_argument("--out", default="runs/toy", help="output folder (default: runs/toy)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per method")
    parser.add_argument("--group-size", type=int, default=None, help="N, student samples per group")
    parser.add_argument("--groups", type=int, default=None, help="G, groups (prompts) per GAD step")
    parser.add_argument("--discriminator", choices=["table", "mlp"], default=None, help="discriminator kind")
    parser.add_argument("--disc-optimizer", choices=["sgd", "adam"], default=None)
    parser.add_argument("--disc-lr", type=float, default=None, help="discriminator learning rate")
    parser.add_argument("--init-mean", type=float, default=None, help="both students' initial mean")
    parser.add_argument("--init-std", type=float, default=None, help="both students' initial std")
    parser.add_argument(
        "--sweep-inits", action="store_true", help="also run GAD from every initial mean 0..K-1 (init_sweep)"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip toy.png")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from gad.errors import UserError
    from gad.toy import ToyConfig, run_toy

    overrides = {
        name: getattr(args, name)
        for name in (
            "steps",
            "group_size",
            "groups",
            "discriminator",
            "disc_optimizer",
            "disc_lr",
            "init_mean",
            "init_std",
        )
        if getattr(args, name) is not None
    }
    try:
        cfg = ToyConfig(out_dir=args.out, seed=args.seed, plot=not args.no_plot, **overrides)
    except ValueError as e:  # the config's own checks: an option's value is out of range
        raise UserError(f"bad option: {e}") from None
    if args.sweep_inits:
        cfg = replace(cfg, init_sweep=tuple(float(k) for k in range(cfg.num_classes)))
    results = run_toy(cfg)

    rows = [("teacher", results["teacher"])] + list(results["methods"].items())
    print(
        f"{'':8s} {'mean':>6s} {'std':>6s} {'near modes':>10s} {'near main':>9s} {'fwd KL':>7s} {'rev KL':>7s}"
    )
    for name, m in rows:
        print(
            f"{name:8s} {m['mean']:6.2f} {m['std']:6.2f} {m['mass_near_modes']:10.2f} "
            f"{m['mass_near_main_mode']:9.2f} {m['forward_kl']:7.3f} {m['reverse_kl']:7.3f}"
        )
    for r in results["init_sweep"]:
        print(
            f"GAD from init mean {r['init_mean']:5.1f}: mean {r['mean']:5.2f} std {r['std']:4.2f} rev KL {r['reverse_kl']:.3f}"
        )
    outputs = ["toy.json"] + ([] if args.no_plot else ["toy.png"])
    if results["init_sweep"] and not args.no_plot:
        outputs.append("toy_init_sweep.png")
    outputs = ", ".join(outputs)
    print(f"{results['seconds']:.1f}s; wrote {outputs} to {args.out}")
    return 0
