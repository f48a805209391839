"""What a GAD step costs per phase, on models of real shapes, and the discriminator's share of it.

A model of a named shape (the real hidden size, layers, heads, KV heads, MLP width, vocabulary and
embedding tying) is built from its config in code with random weights — nothing is downloaded —
and saved to a folder that ``build_roles`` loads as generator, discriminator backbone and KL
reference, as a training stage does. Prompts are random token ids of one fixed length, and EOS is
suppressed during sampling (``HFRollout(min_new_tokens=...)``), so every sample has exactly
``--response-length`` tokens and every step does the same work; random weights change nothing
else about the cost.

GAD steps (D scored and updated) and frozen-D steps (D scored only) run interleaved on the same
batch — GAD, frozen, GAD, frozen, ... after one discarded warm-up pair — so that both see the same
machine state. Per phase: seconds, tokens/s and peak memory (GPU: ``max_memory_allocated`` since
the phase began; CPU: the process's peak RSS, ``VmHWM`` after resetting it through
``/proc/self/clear_refs``). On a GPU also the model-FLOP utilisation against the bf16 peak.

    python benchmarks/step.py --shape smollm2-135m --prompts 4 --n 8 --response-length 128 --steps 2
    python benchmarks/step.py --shape qwen2.5-1.5b --device cuda --mixed-precision bf16 --json out.json

FLOPs (model FLOPs, PaLM's convention, Chowdhery et al. 2022, App. B): a forward pass over a
sequence of T tokens costs 2·N·T + 4·L·(heads·head_dim)·T² (the attention scores and their
weighted sum, full square) + 2·V·H per position whose logits are computed, N being the
non-embedding parameters (the decoder layers and final norm); a backward pass costs twice its
forward. Training phases: D's scoring = 1 forward, D's update = 2 (its backward), the policy update
= 3, the reference = 1 forward. Gradient checkpointing's recomputed forward is not counted (model
FLOPs, not hardware FLOPs). The rollout is counted as one forward over its samples and reported
for reference only (decoding is bound by memory, not FLOPs).

Full-mode memory per process is computed for K = 1, 2 and the 7B recipe on 8 GPUs (the method is
printed with it), and measured under K processes with ``--processes K --parallel ddp|fsdp2``: the
script relaunches itself under ``torchrun``, each process runs its share of the same batch through
the trainer's own data-parallel path, and the per-phase figures are the slowest process's seconds
and the largest process's peak memory.

    python benchmarks/step.py --shape smollm2-135m --processes 2 --parallel fsdp2 --steps 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from gad.config import Config, load_config
from gad.data import Example
from gad.trainer import parallel
from gad.trainer.roles import Roles, build_roles
from gad.trainer.steps import PromptBatch, gad_step
from gad.trainer.timing import PhaseTimer

PHASES = ["rollout", "score", "disc_update", "reference", "policy_update"]
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
RECIPE_7B = Path(__file__).resolve().parent.parent / "recipes" / "qwen2.5-7b-gpt5" / "gad.yaml"
GIB = 1024**3

# The real shapes, from each model's published config.json (only what sets the cost).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    # HuggingFaceTB/SmolLM2-135M(-Instruct)
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    # Qwen/Qwen2.5-0.5B(-Instruct), -1.5B, -7B (q, k, v projections with bias: Qwen2's default)
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}

# bf16 dense peak (TFLOP/s) by device name, for model-FLOP utilisation; --peak-tflops for others.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


# --------------------------------------------------------------------------------------------
# Shapes: configs, parameter counts, the random model folder.
# --------------------------------------------------------------------------------------------


def shape_config(shape: str) -> Any:
    """The transformers config of a named shape (token ids 0/1/2 = pad/EOS/unk)."""
    from transformers import AutoConfig

    fields = dict(SHAPES[shape])
    return AutoConfig.for_model(fields.pop("model_type"), **fields, max_position_embeddings=32768,
                                pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=None)


def param_counts(config: Any) -> dict[str, int]:
    """Parameter counts of the causal LM (G and the reference), of D (backbone without the output
    projection, plus its scalar head) and of the non-embedding part N used for FLOPs; the model is
    built on the meta device, so this allocates nothing."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # parameters() lists a tied weight once
    embed = model.get_input_embeddings().weight.numel()
    head = 0 if config.tie_word_embeddings else model.get_output_embeddings().weight.numel()
    return {"generator": total, "discriminator": total - head + config.hidden_size + 1,
            "non_embedding": total - embed - head}


def write_tokenizer(out: Path) -> None:
    """A three-token word-level tokenizer: only token ids cross the step, and its ids are the config's."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab={"<pad>": PAD_ID, "<eos>": EOS_ID, "<unk>": UNK_ID}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>").save_pretrained(out)


def save_random_model(shape: str, out: Path, device: str) -> Path:
    """Randomly initialised weights of ``shape`` saved as an HF folder (bf16 on disk, to halve its
    size; the trainer loads them as fp32). Reused when the folder already holds it."""
    from transformers import AutoModelForCausalLM

    if (out / "config.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU when there is one: seconds instead of minutes at 7B
        model = AutoModelForCausalLM.from_config(shape_config(shape), dtype=torch.bfloat16)
    model.save_pretrained(tmp, safe_serialization=True)
    write_tokenizer(tmp)
    del model
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------------------------
# Measuring: a phase timer that also keeps each phase's peak memory.
# --------------------------------------------------------------------------------------------


def reset_peak(cuda: bool) -> None:
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)


def read_peak(cuda: bool) -> int:
    """Bytes: GPU memory allocated by torch at its peak, or the process's peak resident set."""
    if cuda:
        return torch.cuda.max_memory_allocated()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class MemoryPhaseTimer(PhaseTimer):
    """The step's own PhaseTimer, plus the peak memory of each phase (the most over its entries).

    ``current`` names the phase that was running when an exception (out of memory) left it.
    """

    def __init__(self, cuda: bool) -> None:
        super().__init__()
        self.cuda = cuda
        self.peak: dict[str, int] = defaultdict(int)
        self.current = ""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.current = name
        reset_peak(self.cuda)
        with super().phase(name):
            yield
        self.peak[name] = max(self.peak[name], read_peak(self.cuda))
        self.current = ""


# --------------------------------------------------------------------------------------------
# FLOPs and computed memory.
# --------------------------------------------------------------------------------------------


def forward_flops(config: Any, n_body: int, sequences: int, length: int, logit_positions: int) -> float:
    """Model FLOPs of one forward pass over ``sequences`` sequences of ``length`` tokens, with the
    output projection computed at ``logit_positions`` positions of each (0 for D)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * length**2
    return sequences * (2 * n_body * length + attention + 2 * config.vocab_size * config.hidden_size * logit_positions)


def phase_flops(config: Any, n_body: int, prompts: int, n: int, prompt_len: int, response_len: int,
                update_discriminator: bool) -> dict[str, float]:
    T = prompt_len + response_len
    gen_fwd = forward_flops(config, n_body, prompts * n, T, response_len + 1)  # logits_to_keep = R + 1
    d_fwd = forward_flops(config, n_body, prompts * (n + 1), T, 0)  # teacher + N samples per prompt
    return {
        "rollout": forward_flops(config, n_body, prompts * n, T, response_len),
        "score": d_fwd,
        "disc_update": 2 * d_fwd if update_discriminator else 0.0,
        "reference": gen_fwd,
        "policy_update": 3 * gen_fwd,
    }


MEMORY_METHOD = (
    "G and D: fp32 master weights + fp32 gradients + AdamW's two fp32 moments = 16 B/param each; "
    "the reference: bf16 weights, 2 B/param; all three sharded evenly over the K processes (FSDP2). "
    "Activations, the rollout's KV cache and the unsharded layer FSDP2 gathers are excluded from "
    "'states'; the largest activations of the 7B recipe are estimated separately (not sharded)."
)


def state_bytes(counts: dict[str, int], world: int) -> dict[str, float]:
    g, d, ref = 16 * counts["generator"], 16 * counts["discriminator"], 2 * counts["generator"]
    return {"generator": g / world, "discriminator": d / world, "reference": ref / world,
            "total": (g + d + ref) / world}


def recipe_7b_memory(world: int = 8) -> dict[str, Any]:
    """Per-process memory of ``recipes/qwen2.5-7b-gpt5/gad.yaml`` on ``world`` GPUs, computed."""
    cfg = load_config(RECIPE_7B, stage="train", check_files=False)
    config = shape_config("qwen2.5-7b")
    counts = param_counts(config)
    L, H, V = config.num_hidden_layers, config.hidden_size, config.vocab_size
    kv_dim = config.num_key_value_heads * (getattr(config, "head_dim", None) or H // config.num_attention_heads)
    T, R = cfg.data.max_prompt_length + cfg.data.max_response_length, cfg.data.max_response_length
    mb, rollout_seqs = cfg.train.micro_batch_size, cfg.rollout.micro_batch_size * cfg.rollout.n
    activations = {
        # K and V of every layer, bf16, for one generate call of rollout.micro_batch_size prompts x n samples
        "rollout_kv_cache": rollout_seqs * T * L * 2 * kv_dim * 2,
        # the policy loss's logits, fp32 (B, R+1, V), for one micro-batch; log-softmax makes a second copy
        "policy_logits_fp32": mb * (R + 1) * V * 4,
        # with gradient checkpointing: each layer's bf16 input, kept for the backward pass
        "checkpointed_layer_inputs": L * mb * T * H * 2,
    }
    return {"world": world, "recipe": str(RECIPE_7B.relative_to(RECIPE_7B.parents[2])),
            "micro_batch_size": mb, "rollout_sequences_per_call": rollout_seqs, "tokens_per_sequence": T,
            "states_per_process": state_bytes(counts, world), "activation_estimates": activations}


# --------------------------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------------------------


def synthetic_batch(prompts: int, prompt_length: int, response_length: int, vocab: int, seed: int) -> PromptBatch:
    """Random prompts of one length; each teacher response has ``response_length`` tokens, EOS last."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(UNK_ID + 1, vocab, (prompts, prompt_length + response_length - 1), generator=g)
    return PromptBatch([Example(f"p{i}", row[:prompt_length].tolist(), row[prompt_length:].tolist() + [EOS_ID])
                        for i, row in enumerate(ids)])


def make_config(args: argparse.Namespace, model_dir: Path) -> Config:
    bf16 = args.mixed_precision == "bf16"
    return load_config(None, [
        "data.train_file=synthetic", f"generator.model={model_dir}", f"train.batch_size={args.prompts}",
        f"rollout.n={args.n}", f"rollout.max_new_tokens={args.response_length}",
        f"train.micro_batch_size={args.micro_batch_size}", f"train.mixed_precision={args.mixed_precision}",
        f"train.reference_dtype={'bf16' if bf16 else 'fp32'}",
        f"train.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
        f"rollout.micro_batch_size={args.rollout_micro_batch_size}", f"train.seed={args.seed}",
        f"train.parallel={args.parallel}",
        *([f"generator.lora_r={args.lora_r}", f"discriminator.lora_r={args.lora_r}",
           f"lora.share_base={str(args.share_base).lower()}", f"lora.base_dtype={args.base_dtype}"] if args.lora_r else []),
    ], stage="train", check_files=False)


def timed_step(roles: Roles, batch: PromptBatch, update: bool, cuda: bool, response_length: int) -> dict[str, Any]:
    """One step; under K processes, the slowest process's seconds, the largest peak and all tokens."""
    timer = MemoryPhaseTimer(cuda)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        metrics = gad_step(batch, roles, timer, update_discriminator=update)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
            raise StepOutOfMemory(timer, e) from e
        raise
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    if metrics["gen/response_length_mean"] != response_length or metrics["gen/response_length_max"] != response_length:
        raise RuntimeError(f"samples are not all {response_length} tokens long "
                           f"(mean {metrics['gen/response_length_mean']}): EOS was not suppressed")
    world = roles.world
    tokens = {k: v * world.size for k, v in timer.tokens.items()}  # equal shares, fixed lengths
    tokens["disc_update"] = tokens["score"] if update else 0  # D's backward goes over the scored tokens
    tokens["reference"] = tokens["policy_update"]  # the reference scores the policy's sequences
    seconds = world.max(torch.tensor([wall] + [timer.seconds.get(p, 0.0) for p in PHASES], dtype=torch.float64))
    peaks = world.max(torch.tensor([timer.peak.get(p, 0) for p in PHASES], dtype=torch.float64))
    return {"step_s": float(seconds[0]), "seconds": {p: float(v) for p, v in zip(PHASES, seconds[1:])},
            "tokens": {p: tokens.get(p, 0) for p in PHASES}, "peak_bytes": {p: int(v) for p, v in zip(PHASES, peaks)}}


def held_state_bytes(roles: Roles) -> dict[str, int]:
    """Bytes of weights and optimizer state this process holds after the steps (its shards under
    FSDP2), counted tensor by tensor: the sharding's saving, free of the allocator's retained pages
    that peak RSS includes on a CPU. The largest over processes."""
    def local(t: torch.Tensor) -> int:
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    held = {"generator": 0, "discriminator": 0, "reference": 0, "optimizers": 0}
    seen: set[int] = set()  # a tensor shared by roles (LoRA's one backbone) counts once, for the first
    for key, role in (("generator", roles.generator), ("discriminator", roles.discriminator),
                      ("reference", roles.reference)):
        module = getattr(role, "model", role)  # a LoRA role is a view of a shared module
        for p in module.parameters() if module is not None else []:
            if id(p) not in seen:
                seen.add(id(p))
                held[key] += local(p)
    for opt in roles.optimizers.values():
        held["optimizers"] += sum(local(v) for state in opt.state.values() for v in state.values()
                                  if isinstance(v, torch.Tensor))
    held["total"] = sum(held.values())
    names = sorted(held)
    most = roles.world.max(torch.tensor([held[k] for k in names], dtype=torch.float64))
    return {k: int(v) for k, v in zip(names, most)}


class StepOutOfMemory(Exception):
    def __init__(self, timer: MemoryPhaseTimer, error: BaseException):
        super().__init__(f"out of memory in phase {timer.current or '(between phases)'}: {error}")
        self.phase = timer.current
        self.partial = {"seconds": dict(timer.seconds), "peak_bytes": dict(timer.peak)}


def summarise(steps: list[dict[str, Any]], flops: dict[str, float], peak_flops: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"step_s": statistics.mean(s["step_s"] for s in steps), "phases": {}}
    for p in PHASES:
        seconds = statistics.mean(s["seconds"][p] for s in steps)
        tokens = steps[0]["tokens"][p]  # the same every step: fixed lengths
        out["phases"][p] = {
            "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds if seconds else None,
            "peak_bytes": max(s["peak_bytes"][p] for s in steps),
            "flops": flops[p], "mfu": flops[p] / seconds / peak_flops if seconds and peak_flops and flops[p] else None,
        }
    return out


def device_name(cuda: bool) -> str:
    return torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())


def detect_peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def run_benchmark(
    args: argparse.Namespace, model_dir: Path, progress: Callable[[dict[str, Any]], None] = lambda r: None,
    world: parallel.World = parallel.ONE_PROCESS,
) -> dict[str, Any]:
    """Build the roles, run the interleaved pairs, return every figure (also when out of memory).

    ``progress`` gets the figures so far after the build and after every step, so a run killed
    from outside (a time limit) still leaves them."""
    cuda = args.device == "cuda"
    config = shape_config(args.shape)
    counts = param_counts(config)
    name = device_name(cuda)
    peak_tflops = args.peak_tflops or (detect_peak_tflops(name) if cuda else None)
    result: dict[str, Any] = {
        "shape": args.shape, "device": args.device, "device_name": name, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mixed_precision": args.mixed_precision,
        "gradient_checkpointing": args.gradient_checkpointing, "prompts": args.prompts, "n": args.n,
        "prompt_length": args.prompt_length, "response_length": args.response_length,
        "micro_batch_size": args.micro_batch_size, "steps": args.steps, "params": counts,
        "processes": world.size, "parallel": world.mode, "lora_r": args.lora_r, "share_base": args.share_base,
        "peak_tflops": peak_tflops, "flop_formula": "forward = 2*N*T + 4*L*heads*head_dim*T^2 + 2*V*H per logit "
        "position (per sequence); backward = 2 x forward; N = non-embedding parameters",
        "memory_method": MEMORY_METHOD,
        "memory_computed": {"K=1": state_bytes(counts, 1), "K=2": state_bytes(counts, 2), "recipe_7b": recipe_7b_memory(8)},
    }
    t0 = time.perf_counter()
    if world.is_main:
        save_random_model(args.shape, model_dir, "cuda" if cuda else "cpu")
    world.barrier()
    roles = build_roles(make_config(args, model_dir), str(model_dir), str(model_dir), None, world)
    roles.rollout.min_new_tokens = args.response_length  # EOS suppressed: every sample is full length
    result["build_s"] = time.perf_counter() - t0
    if cuda:
        result["memory_after_build_bytes"] = torch.cuda.memory_allocated()
    progress({**result, "progress": "built"})
    batch = synthetic_batch(args.prompts, args.prompt_length, args.response_length, config.vocab_size, args.seed)
    batch = PromptBatch(world.share(batch.examples, args.prompts))  # this process's prompt groups
    runs: dict[str, list[dict[str, Any]]] = {"gad": [], "frozen": []}
    try:
        for i in range(args.steps + 1):  # pair 0 warms up (allocator, kernels) and is discarded
            for kind, update in (("gad", True), ("frozen", False)):
                step = timed_step(roles, batch, update, cuda, args.response_length)
                if i > 0:
                    runs[kind].append(step)
                progress({**result, "progress": f"pair {i}, {kind} step done", "raw": runs})
                if world.is_main:
                    print(f"pair {i}{' (warm-up)' if i == 0 else ''}: {kind} step {step['step_s']:.1f} s",
                          file=sys.stderr, flush=True)
    except StepOutOfMemory as e:
        result["error"] = str(e)
        result["error_phase"] = e.phase
        result["partial"] = e.partial
        result["steps_done"] = {k: len(v) for k, v in runs.items()}
        return result
    result["raw"] = runs
    result["held_state_bytes"] = held_state_bytes(roles)
    for kind, update in (("gad", True), ("frozen", False)):
        flops = phase_flops(config, counts["non_embedding"], args.prompts, args.n, args.prompt_length,
                            args.response_length, update)
        result[kind] = summarise(runs[kind], flops, peak_tflops * 1e12 * world.size if peak_tflops else None)
    result["ratio_gad_over_frozen"] = result["gad"]["step_s"] / result["frozen"]["step_s"]
    result["disc_update_share_of_gad_step"] = result["gad"]["phases"]["disc_update"]["seconds"] / result["gad"]["step_s"]
    return result


# --------------------------------------------------------------------------------------------
# Output.
# --------------------------------------------------------------------------------------------


def _mem(b: float) -> str:
    return f"{b / GIB:.2f} GiB" if b >= GIB else f"{b / 1024**2:.1f} MiB"


def print_report(r: dict[str, Any]) -> None:
    print(f"\n{r['shape']} ({r['params']['generator'] / 1e6:.1f}M params; D {r['params']['discriminator'] / 1e6:.1f}M), "
          f"{r['device_name']} ({r['device']}), torch {r['torch']}, {r['mixed_precision']}"
          f"{', gradient checkpointing' if r['gradient_checkpointing'] else ''}; "
          f"{r['prompts']} prompts x {r['n']} samples, prompt {r['prompt_length']} + response {r['response_length']} "
          f"tokens (fixed), micro-batch {r['micro_batch_size']}; {r['steps']} measured GAD/frozen-D pairs, interleaved "
          f"after 1 warm-up pair; build {r['build_s']:.1f} s")
    if r["processes"] > 1:
        print(f"{r['processes']} processes, train.parallel={r['parallel']}: seconds of the slowest process, "
              "peak memory of the largest (per process), tokens of all")
    if "error" in r:
        print(f"stopped: {r['error']}")
        print("partial (seconds, peak memory) up to the failure:", json.dumps(r["partial"]))
    else:
        mfu = r["peak_tflops"] is not None
        peak = "peak GPU alloc" if r["device"] == "cuda" else "peak RSS"
        header = (f"{'phase':14s}{'GAD s':>9s}{'frozen s':>10s}{'tokens':>9s}{'GAD tok/s':>11s}{'frozen tok/s':>14s}"
                  f"{'GAD ' + peak:>20s}{'frozen ' + peak:>22s}")
        if mfu:
            header += f"{'GAD MFU':>9s}{'frozen MFU':>12s}"
        print(header)
        for p in PHASES:
            g, f = r["gad"]["phases"][p], r["frozen"]["phases"][p]

            def rate(x: dict[str, Any]) -> str:
                return f"{x['tokens_per_s']:.0f}" if x["tokens_per_s"] else "-"

            def util(x: dict[str, Any]) -> str:
                return f"{100 * x['mfu']:.1f}%" if x["mfu"] else "-"

            line = (f"{p:14s}{g['seconds']:9.2f}{f['seconds']:10.2f}{g['tokens']:9d}{rate(g):>11s}{rate(f):>14s}"
                    f"{_mem(g['peak_bytes']) if g['seconds'] else '-':>20s}{_mem(f['peak_bytes']) if f['seconds'] else '-':>22s}")
            if mfu:
                line += f"{util(g):>9s}{util(f):>12s}"
            print(line)
        print(f"{'step':14s}{r['gad']['step_s']:9.2f}{r['frozen']['step_s']:10.2f}")
        print(f"GAD step / frozen-D step = {r['ratio_gad_over_frozen']:.3f}  "
              f"(D's update is {100 * r['disc_update_share_of_gad_step']:.1f}% of a GAD step)")
        if mfu:
            print(f"MFU against {r['peak_tflops']:.0f} TFLOP/s bf16 dense; rollout's is for reference (decoding). "
                  f"FLOPs: {r['flop_formula']}")
    if "held_state_bytes" in r:
        h = r["held_state_bytes"]
        mode = f"LoRA r={r['lora_r']}{', shared base' if r['share_base'] else ''}" if r.get("lora_r") else "full"
        print(f"held per process (measured, tensor bytes; {mode}; {r['processes']} process(es), {r['parallel']}): "
              f"G {_mem(h['generator'])}, D {_mem(h['discriminator'])}, reference {_mem(h['reference'])}, "
              f"AdamW state {_mem(h['optimizers'])}; total {_mem(h['total'])}")
    m = r["memory_computed"]
    print(f"\nFull-mode memory per process, computed (not measured). {r['memory_method']}")
    for k in ("K=1", "K=2"):
        s = m[k]
        print(f"  {r['shape']:14s} {k}: G {_mem(s['generator'])}, D {_mem(s['discriminator'])}, "
              f"reference {_mem(s['reference'])}; states {_mem(s['total'])}")
    rec = m["recipe_7b"]
    s, a = rec["states_per_process"], rec["activation_estimates"]
    print(f"  qwen2.5-7b recipe ({rec['recipe']}), K={rec['world']} (FSDP2): G {_mem(s['generator'])}, "
          f"D {_mem(s['discriminator'])}, reference {_mem(s['reference'])}; states {_mem(s['total'])} per GPU")
    print(f"    plus, estimated per process (not sharded): KV cache of one rollout call "
          f"({rec['rollout_sequences_per_call']} sequences x {rec['tokens_per_sequence']} tokens, bf16) "
          f"{_mem(a['rollout_kv_cache'])}; fp32 logits of one policy micro-batch ({rec['micro_batch_size']} sequences) "
          f"{_mem(a['policy_logits_fp32'])} (x2 with log-softmax); checkpointed layer inputs {_mem(a['checkpointed_layer_inputs'])}")
    print("  measured per process: run with --processes K --parallel ddp|fsdp2 (peak columns above)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=list(SHAPES))
    ap.add_argument("--steps", type=int, default=2, help="measured GAD/frozen-D pairs (after 1 warm-up pair)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--prompt-length", type=int, default=64)
    ap.add_argument("--response-length", type=int, default=128)
    ap.add_argument("--micro-batch-size", type=int, default=8, help="sequences per forward/backward pass")
    ap.add_argument("--rollout-micro-batch-size", type=int, default=0, help="prompts per generate call (0 = all)")
    ap.add_argument("--mixed-precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--device", default="", choices=["cpu", "cuda"], help="default: cuda when a GPU is visible")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak "
                    f"(default: known for {', '.join(PEAK_TFLOPS)})")
    ap.add_argument("--model-dir", default="", help="where the random model is saved (reused if it is "
                    "already there); default: a temporary folder, removed at the end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="also write every figure to this JSON file")
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA rank for G and D (0 = full fine-tuning)")
    ap.add_argument("--share-base", action="store_true", help="with --lora-r: G, D and the reference on one backbone")
    ap.add_argument("--base-dtype", default="fp32", choices=["fp32", "bf16"], help="with --lora-r: the frozen backbone's dtype")
    ap.add_argument("--parallel", default="none", choices=list(parallel.MODES), help="train.parallel")
    ap.add_argument("--processes", type=int, default=1, help="processes: relaunches this script under torchrun "
                    "(the batch is split between them; --prompts must be a multiple)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.n < 2 or args.response_length < 1 or args.prompt_length < 1:
        ap.error("--steps >= 1, --n >= 2, --prompt-length >= 1 and --response-length >= 1")
    if args.processes > 1 and (args.parallel == "none" or args.prompts % args.processes):
        ap.error("--processes K needs --parallel ddp|fsdp2 and --prompts a multiple of K")
    return args


def relaunch(args: argparse.Namespace, argv: list[str]) -> int:
    """This script again, as ``--processes`` processes under torchrun, with a model folder they share."""
    import subprocess

    model_root = args.model_dir or tempfile.mkdtemp(prefix="gad-step-")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    if args.device != "cuda":
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")  # K processes on shared cores
    # The arguments travel in the environment: torchrun's own parser would take --n for --nnodes.
    env[ARGV_ENV] = json.dumps([*argv, "--model-dir", model_root])
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", str(args.processes),
           str(Path(__file__).resolve())]
    try:
        return subprocess.run(cmd, env=env).returncode
    finally:
        if not args.model_dir:
            shutil.rmtree(model_root, ignore_errors=True)


ARGV_ENV = "GAD_STEP_BENCHMARK_ARGV"


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = json.loads(os.environ[ARGV_ENV]) if ARGV_ENV in os.environ else sys.argv[1:]
    args = parse_args(argv)
    if args.processes > 1 and parallel.launched_world_size() == 1:
        return relaunch(args, argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the per-file load/save bars would bury the figures
    if args.device == "cpu":  # hide the GPUs before anything asks CUDA: the Accelerator then picks the CPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["ACCELERATE_USE_CPU"] = "1"  # and Accelerator() keeps to the CPU even if CUDA was asked first
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible")
    tmp = None
    if args.model_dir:
        model_dir = Path(args.model_dir) / args.shape
    else:
        tmp = Path(tempfile.mkdtemp(prefix="gad-step-"))
        model_dir = tmp / args.shape
    def write(result: dict[str, Any]) -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1))

    world = parallel.setup(args.parallel, "train")
    try:
        result = run_benchmark(args, model_dir, write if world.is_main else lambda r: None, world)
    finally:
        world.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if world.is_main:
        print_report(result)
        write(result)
    return 3 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
