"""The GPU check: a few ``benchmarks/step.py`` runs sized for one H200 in at most 8 minutes, one JSON.

Each stage runs ``step.py`` in its own process with its own time limit, so a hang or an
out-of-memory in one stage loses only that stage; the JSON keeps every stage's figures or its
error. The 1.5B stage runs under ``train.parallel=fsdp2``. A 7B-shape step cannot fit on one GPU in full mode (G and D with fp32 AdamW states are
about 235 GB), so that stage records how far it got: the phases measured before it ran out of
memory, and which phase did.

    python benchmarks/gpu_check.py --out gpu_check.json                       # one GPU, all stages
    python benchmarks/gpu_check.py --device cpu --shapes tiny --out cpu.json  # the same harness on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
BUDGET_S = 480  # the whole check: 8 minutes on one H200

# (shape, step.py arguments, time limit in seconds). Sized for one H200: the 0.5B and 1.5B stages
# fit with room to spare in bf16; the 7B stage builds (random init on the GPU, 15 GB written and
# read back three times) and runs until memory runs out.
STAGES: dict[str, list[tuple[str, list[str], int]]] = {
    "cuda": [
        ("qwen2.5-0.5b", ["--prompts", "8", "--n", "8", "--prompt-length", "256", "--response-length", "256",
                          "--micro-batch-size", "16", "--mixed-precision", "bf16", "--steps", "1"], 90),
        # The trainer's FSDP2 path (fully_shard per layer, bf16 compute / fp32 master and reduction) on a
        # one-process NCCL group: one GPU cannot show the sharding's saving, but it runs every code path
        # a K-GPU run takes except the collectives' traffic.
        ("qwen2.5-1.5b", ["--prompts", "8", "--n", "8", "--prompt-length", "256", "--response-length", "256",
                          "--micro-batch-size", "16", "--mixed-precision", "bf16", "--parallel", "fsdp2",
                          "--steps", "1"], 130),
        ("qwen2.5-7b", ["--prompts", "4", "--n", "4", "--prompt-length", "256", "--response-length", "128",
                        "--micro-batch-size", "4", "--mixed-precision", "bf16", "--gradient-checkpointing",
                        "--steps", "1"], 220),
    ],
    "cpu": [
        ("tiny", ["--prompts", "2", "--n", "4", "--prompt-length", "16", "--response-length", "16", "--steps", "1"], 120),
        ("smollm2-135m", ["--prompts", "2", "--n", "4", "--prompt-length", "32", "--response-length", "32",
                          "--steps", "1"], 300),
    ],
}


def gpu_name() -> str | None:
    """From nvidia-smi, so this process never initialises CUDA (the stages need all the memory)."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def run_stage(shape: str, extra: list[str], limit_s: int, device: str, work: Path) -> dict[str, Any]:
    """One ``step.py`` run in a new process group, killed with its children at ``limit_s``."""
    out_json = work / f"{shape}.json"
    argv = [sys.executable, str(HERE / "step.py"), "--shape", shape, "--device", device, *extra,
            "--model-dir", str(work / "models"), "--json", str(out_json)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    stage: dict[str, Any] = {"shape": shape, "argv": argv[1:], "limit_s": limit_s}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=limit_s)
        stage["rc"] = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        stage["rc"], stage["timed_out"] = None, True
    stage["wall_s"] = round(time.perf_counter() - start, 1)
    stage["output_tail"] = output[-4000:]
    if out_json.exists():
        stage["result"] = json.loads(out_json.read_text())
        stage["result"].pop("raw", None)  # per-step figures: the means are enough here
    if stage.get("timed_out"):
        stage["error"] = f"killed at its {limit_s} s limit"
    elif "result" in stage and "error" in stage["result"]:
        stage["error"] = stage["result"]["error"]
    elif stage["rc"] != 0:
        stage["error"] = f"exit code {stage['rc']}: " + (output.strip().splitlines() or [""])[-1]
    shutil.rmtree(work / "models", ignore_errors=True)  # the next shape's model needs the disk
    print(f"{shape}: {'ok' if 'error' not in stage else stage['error']} ({stage['wall_s']} s)", file=sys.stderr, flush=True)
    return stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=list(STAGES))
    ap.add_argument("--shapes", default="", help="comma-separated shapes to run (default: every stage of --device)")
    ap.add_argument("--out", default="gpu_check.json")
    args = ap.parse_args(argv)
    stages = STAGES[args.device]
    if args.shapes:
        wanted = args.shapes.split(",")
        unknown = [s for s in wanted if s not in {name for name, _, _ in stages}]
        if unknown:
            ap.error(f"--shapes: no {args.device} stage for {', '.join(unknown)}; "
                     f"stages: {', '.join(name for name, _, _ in stages)}")
        stages = [s for s in stages if s[0] in wanted]
    assert sum(limit for _, _, limit in STAGES["cuda"]) <= BUDGET_S - 30, "the GPU stages must fit the budget"
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": args.device,
        "device_name": gpu_name() if args.device == "cuda" else (platform.processor() or platform.machine()),
        "torch": torch.__version__, "host": platform.node(), "cpus": os.cpu_count(), "stages": [],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gad-gpu-check-") as work:
        for shape, extra, limit in stages:
            report["stages"].append(run_stage(shape, extra, limit, args.device, Path(work)))
            Path(args.out).write_text(json.dumps(report, indent=1))  # after every stage: a later hang loses nothing
    failed = [s["shape"] for s in report["stages"] if "error" in s]
    print(f"wrote {args.out}; {len(stages) - len(failed)} of {len(stages)} stages completed"
          + (f" (stopped early: {', '.join(failed)})" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
