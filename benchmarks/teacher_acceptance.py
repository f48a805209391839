"""Issue 3 acceptance: 2,000 prompts through a loopback server injecting 15% faults of every kind
(429 with and without Retry-After, 500, 503, hung requests, dropped connections, malformed JSON,
empty content, finish_reason "length"); `gad teacher` is killed with SIGKILL midway and resumed.

Passes when every prompt is answered exactly once and the resumed run sends zero requests for ids
that were already stored when the first run was killed.
Run: PYTHONPATH=. python benchmarks/teacher_acceptance.py [--n 2000] [--fault-rate 0.15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tests.teacher.fake_api import FakeChatAPI
from tests.teacher.harness import API_KEY, kill_and_resume


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--fault-rate", type=float, default=0.15)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()

    with FakeChatAPI(api_key=API_KEY, fault_rate=args.fault_rate, latency=0.02, retry_after="0.2",
                     hang_s=5.0) as api, tempfile.TemporaryDirectory() as tmp:
        r = kill_and_resume(api, Path(tmp), n=args.n, kill_after_rows=args.n // 2,
                            concurrency=args.concurrency, resume_in_process=False)
        faults = Counter(h.fault for h in api.hits if h.fault)
        key_leak = any(API_KEY.encode() in f.read_bytes() for f in Path(tmp).rglob("*") if f.is_file())
        summary = (Path(tmp) / "teacher.summary.json").read_text()

    print(f"prompts {r.n}; killed (SIGKILL) with {r.killed_at_rows} rows stored after "
          f"{r.requests_before_kill} requests; resumed (exit code {r.resume_rc})")
    print(f"server saw {r.total_requests} requests; faults injected: {dict(sorted(faults.items()))} "
          f"({sum(faults.values()) / r.total_requests:.1%} of requests)")
    print(f"rows stored (teacher set + empty answers set aside in .dropped.jsonl): {len(r.final_ids)}, "
          f"distinct ids: {len(set(r.final_ids))}")
    print(f"answered exactly once: {r.exactly_once}")
    print(f"requests repeated after resume for ids finished before the kill: {r.repeated_after_resume}")
    print(f"API key in any written file: {key_leak}")
    print(f"elapsed {r.elapsed_s:.1f}s; resumed run's summary:\n{summary}")
    ok = r.exactly_once and r.repeated_after_resume == 0 and r.resume_rc == 0 and not key_leak
    print("ACCEPTANCE", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
