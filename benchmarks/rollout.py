"""Rollout throughput of the two engines side by side, and the GAD step with each, in one run.

The embedded default (SmolLM2-135M-Instruct, real weights) samples ``--n`` responses to each of
``--prompts`` demo prompts at T=0.8 with EOS suppressed until ``--tokens`` (``min_new_tokens``), so
every engine produces exactly prompts × n × tokens tokens and the rates compare. Engines:
``hf-fp32``, ``hf-bf16`` (``transformers.generate``, bf16 autocast as ``train.mixed_precision: bf16``),
``vllm-fp32``, ``vllm-bf16`` (the colocated engine; ``--eager`` skips compilation). Each engine's
start (vLLM: build + first weight load) is timed apart from its measured rollouts; the measured
rounds go engine after engine, ``--rounds`` times, so all see the same machine state.

Then one GAD step per engine of ``--gad-engines`` (``--gad-prompts`` prompts × n × tokens, EOS
suppressed the same way, after a one-sample warm-up), through the trainer's own roles: its seconds
and its rollout phase. The step's update makes the vLLM engine sync its weights before the next
rollout, a cost the next step's rollout phase would carry (reported as ``sync_s``).

    OMP_NUM_THREADS=2 python benchmarks/rollout.py                       # 16 x 8 x 128, all engines
    python benchmarks/rollout.py --engines hf-fp32,vllm-fp32 --gad-prompts 0 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from gad.config import load_config
from gad.data import Example
from gad.models import load_causal_lm, resolve_model
from gad.rollout import HFRollout
from gad.trainer.roles import bf16_autocast, build_roles
from gad.trainer.steps import PromptBatch, gad_step
from gad.trainer.timing import PhaseTimer

DEMO_PROMPTS = Path(__file__).resolve().parent.parent / "gad" / "resources" / "demo_prompts.jsonl"
MODEL = "smollm2-135m-instruct"


def demo_prompts(tok: Any, count: int) -> list[list[int]]:
    rows = [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines() if line.strip()][:count]
    return [list(tok.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True, return_dict=False))
            for r in rows]


def make_engine(name: str, model: Any, tok: Any, tokens: int, eager: bool) -> Any:
    kind, precision = name.split("-")
    if kind == "hf":
        return HFRollout(model, tok.pad_token_id, tok.eos_token_id, tokens, temperature=0.8,
                         autocast=lambda: bf16_autocast(torch.device("cpu"), precision), min_new_tokens=tokens)
    from gad.rollout.vllm_engine import ColocatedEngine, VLLMRollout, VLLMSettings

    settings = VLLMSettings(dtype=precision, max_model_len=1024, enforce_eager=eager, cpu_kv_cache_gib=4)
    engine = ColocatedEngine(model, tok.eos_token_id, settings)
    return VLLMRollout(engine, tokens, 0.8, vocab_size=len(tok), min_new_tokens=tokens)


def rollout_rates(args: argparse.Namespace) -> dict[str, Any]:
    model, tok = load_causal_lm(resolve_model(MODEL))
    model.eval()
    prompts = demo_prompts(tok, args.prompts)
    expected = len(prompts) * args.n * args.tokens
    engines, starts = {}, {}
    for name in args.engines:
        t = time.perf_counter()
        engine = make_engine(name, model, tok, args.tokens, args.eager)
        engine.generate(prompts[:1], 1)  # vLLM: the first weight load; both: first-call work
        starts[name] = time.perf_counter() - t
        engines[name] = engine
        print(f"{name}: ready in {starts[name]:.1f} s", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(args.rounds):
        for name, engine in engines.items():
            torch.manual_seed(r)
            t = time.perf_counter()
            samples = engine.generate(prompts, args.n)
            seconds[name].append(time.perf_counter() - t)
            made = sum(len(s) for s in samples)
            if made != expected:
                raise RuntimeError(f"{name}: {made} tokens, expected {expected} (EOS not suppressed?)")
            print(f"round {r + 1} {name}: {expected / seconds[name][-1]:.0f} tokens/s", flush=True)
    for engine in engines.values():
        if hasattr(engine, "close"):
            engine.close()
    best = {name: min(s) for name, s in seconds.items()}
    base = best.get("hf-fp32")
    return {name: {"start_s": starts[name], "seconds": seconds[name], "tokens": expected,
                   "tokens_per_s": expected / best[name], "vs_hf_fp32": (base / best[name]) if base else None}
            for name in engines}


def gad_step_times(args: argparse.Namespace) -> dict[str, Any]:
    path = resolve_model(MODEL)
    out: dict[str, Any] = {}
    for name in args.gad_engines:
        kind, precision = name.split("-")
        cfg = load_config(None, [
            "data.train_file=synthetic", f"generator.model={path}", f"train.batch_size={args.gad_prompts}",
            f"rollout.n={args.n}", f"rollout.max_new_tokens={args.tokens}", "train.micro_batch_size=8",
            f"train.mixed_precision={precision}", f"rollout.engine={'vllm' if kind == 'vllm' else 'hf'}",
            f"rollout.vllm_enforce_eager={str(args.eager).lower()}", "rollout.vllm_cpu_kv_cache_gib=4",
            "data.max_prompt_length=256",
        ], stage="train", check_files=False)
        roles = build_roles(cfg, path, path, None)
        roles.rollout.min_new_tokens = args.tokens
        prompts = demo_prompts(roles.tokenizer, args.gad_prompts)
        teacher = roles.tokenizer("A short teacher answer.", add_special_tokens=False)["input_ids"] + [roles.eos_id]
        batch = PromptBatch([Example(f"p{i}", p, teacher) for i, p in enumerate(prompts)])
        roles.rollout.generate(prompts[:1], 1)  # warm-up: vLLM's first weight load, first-call work
        timer = PhaseTimer()
        t = time.perf_counter()
        gad_step(batch, roles, timer)
        step = time.perf_counter() - t
        sync = 0.0
        if kind == "vllm":  # the weights the update changed, into the engine (the next rollout's first act)
            t = time.perf_counter()
            roles.rollout.engine.weights.ensure()
            sync = time.perf_counter() - t
        roles.close()
        out[name] = {"step_s": step, "phases_s": dict(timer.seconds), "sync_s": sync}
        print(f"GAD step {name}: {step:.1f} s (rollout {timer.seconds.get('rollout', 0):.1f} s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="hf-fp32,hf-bf16,vllm-fp32,vllm-bf16",
                    type=lambda s: [e for e in s.split(",") if e])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gad-prompts", type=int, default=4, help="prompts of the GAD step per engine (0 = no GAD step)")
    ap.add_argument("--gad-engines", default="hf-fp32,vllm-fp32", type=lambda s: [e for e in s.split(",") if e])
    ap.add_argument("--eager", action="store_true", help="vLLM without compilation (starts faster, decodes slower)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    for name in args.engines + args.gad_engines:
        if name not in ("hf-fp32", "hf-bf16", "vllm-fp32", "vllm-bf16"):
            ap.error(f"--engines: unknown engine {name!r}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    result: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "capability": torch.backends.cpu.get_cpu_capability()},
        "setting": {k: v for k, v in vars(args).items() if k != "json"},
        "rollout": rollout_rates(args),
    }
    if args.gad_prompts:
        result["gad_step"] = gad_step_times(args)
    print(f"\nrollout, {args.prompts} prompts x {args.n} samples x {args.tokens} tokens "
          f"({result['machine']['capability']}, {result['machine']['threads']} threads):")
    for name, r in result["rollout"].items():
        ratio = f"{r['vs_hf_fp32']:.2f}x" if r["vs_hf_fp32"] else "-"
        print(f"  {name:10s} {r['tokens_per_s']:7.0f} tokens/s  {ratio:>7s} hf-fp32   (start {r['start_s']:.0f} s)")
    for name, g in result.get("gad_step", {}).items():
        print(f"  GAD step {name:10s} {g['step_s']:6.1f} s  (rollout {g['phases_s'].get('rollout', 0):.1f} s"
              + (f", then weight sync {g['sync_s']:.1f} s)" if g["sync_s"] else ")"))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
