"""Throughput of `gad teacher` against a loopback server that adds 200 ms per request.

Target (issue 3): --concurrency 64 reaches at least 45x the requests/s of --concurrency 1.
Run: PYTHONPATH=. python benchmarks/teacher_throughput.py [--latency 0.2] [--n1 20] [--n64 1280]
The server runs in its own process; each client is a real `gad teacher` process, and requests/s is
read from the run summary (measured over the collection, not process start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_client(url: str, prompts: Path, out: Path, concurrency: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), BENCH_KEY="sk-bench-not-a-real-key")
    cmd = [sys.executable, "-m", "gad.cli", "teacher", "--prompts", str(prompts), "--out", str(out),
           "--model", "bench", "--base-url", url, "--api-key-env", "BENCH_KEY",
           "--concurrency", str(concurrency), "--no-progress", "--max-tokens", "16"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.with_name(out.stem + ".summary.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--n1", type=int, default=20, help="requests at concurrency 1")
    p.add_argument("--n64", type=int, default=1280, help="requests at concurrency 64")
    args = p.parse_args()

    server = subprocess.Popen([sys.executable, "-m", "tests.teacher.fake_api", "--latency", str(args.latency)],
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            rates = {}
            for concurrency, n in ((1, args.n1), (64, args.n64)):
                prompts = Path(tmp) / f"p{concurrency}.jsonl"
                prompts.write_text("".join(json.dumps({"prompt": f"c{concurrency} prompt {i}"}) + "\n" for i in range(n)))
                s = run_client(url, prompts, Path(tmp) / f"t{concurrency}.jsonl", concurrency)
                assert s["done"] == n, s
                rates[concurrency] = s["requests_per_s"]
                print(f"concurrency {concurrency:>2}: {n} requests in {s['elapsed_s']:.2f}s = {rates[concurrency]:.2f} req/s")
    finally:
        server.terminate()
        server.wait(10)
    ratio = rates[64] / rates[1]
    print(f"ratio 64/1: {ratio:.1f}x (target >= 45x; ideal {64:.0f}x at {args.latency * 1000:.0f} ms latency)")
    sys.exit(0 if ratio >= 45 else 1)


if __name__ == "__main__":
    main()
