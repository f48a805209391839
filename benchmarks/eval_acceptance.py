"""Issue 4 acceptance: `gad eval` on SmolLM2-135M-Instruct over Vicuna 80 with a judge on loopback.

The judge is scripted (no network, no real LLM): a loopback chat-completions server
(tests/teacher/fake_api.py) whose "reference answers" are GPT-4 Turbo's real answers to the 80
Vicuna questions (AlpacaEval's gpt4_1106_preview outputs, shared/data), and whose pairwise "scores"
are 1 + 9 × unigram F1 of an answer with that reference (so the reference itself gets 10), with a +1
bias for whichever answer is shown first (the two orders must cancel it), garbage on the first
attempt for ~10% of the questions (the re-ask must recover them) and garbage always for 2 questions
(they must be reported as failures, never scored). Vicuna 80 has no references of its own, so
n-gram F1, ROUGE-L and distinguishability compare the student with those GPT-4 Turbo answers.

Then `gad eval` runs a second time into the same folder and must generate nothing and send no
judge request.

Run: PYTHONPATH=. python benchmarks/eval_acceptance.py [--max-new-tokens 256] [--batch-size 16] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from gad.cli import main as gad
from gad.eval.metrics import default_tokenize, ngram_f1
from tests.eval.scripted_judge import ScriptedJudge
from tests.teacher.fake_api import FakeChatAPI

KEY = "sk-acceptance-not-a-real-key-5b1e9"
DATA = Path(os.environ.get("GAD_EVAL_DATA", "../shared/data"))


def overlap_score(question: str, answer: str, reference: str) -> float:
    """A stand-in judgment: 1 + 9 × unigram F1 with the reference, rounded (judges answer integers)."""
    return float(round(1 + 9 * ngram_f1(default_tokenize(answer), default_tokenize(reference), 1)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="runs/eval-acceptance")
    p.add_argument("--limit", type=int, default=None, help="first N questions only (smoke runs)")
    p.add_argument("--model", default=None, help="another student (smoke runs); default: the embedded SmolLM2")
    args = p.parse_args()

    vicuna = [json.loads(line)["turns"][0] for line in (DATA / "vicuna80.jsonl").open()]
    gpt4 = {r["instruction"]: r["output"] for r in json.loads((DATA / "alpacaeval805_ref_gpt4_1106_preview.json").read_text())}
    references = {q: gpt4[q] for q in vicuna}  # all 80 Vicuna questions are in AlpacaEval, verbatim

    def picked(q: str, salt: str, percent: int) -> bool:
        return int(hashlib.sha256(f"{salt}|{q}".encode()).hexdigest(), 16) % 100 < percent

    always_garbage = set(vicuna[7:9])
    script = ScriptedJudge(references=references, score=overlap_score, position_bias=1.0, garbage=always_garbage,
                           garbage_first={q for q in vicuna if picked(q, "first", 10)} - always_garbage)
    os.environ["GAD_ACCEPTANCE_JUDGE_KEY"] = KEY
    with FakeChatAPI(api_key=KEY, reply=script) as api:
        argv = ["eval", "--data", str(DATA / "vicuna80.jsonl"), "--out", args.out,
                "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
                "--judge-model", "scripted-gpt4-turbo-refs", "--judge-base-url", api.url,
                "--judge-api-key-env", "GAD_ACCEPTANCE_JUDGE_KEY"]
        if args.limit:
            argv += ["--limit", str(args.limit)]
        if args.model:
            argv += ["--model", args.model]
        t0 = time.monotonic()
        rc = gad(argv)
        first_s, hits = time.monotonic() - t0, len(api.hits)
        print(f"\nfirst run: exit {rc}, {first_s:.0f} s, {hits} judge requests {script.calls}", file=sys.stderr)
        if rc:
            return rc

        t0 = time.monotonic()
        rc = gad(argv + ["--no-progress"])
        again_s = time.monotonic() - t0
        print(f"rerun: exit {rc}, {again_s:.1f} s, {len(api.hits) - hits} new judge requests", file=sys.stderr)
        assert rc == 0 and len(api.hits) == hits, "the rerun paid for something twice"

    leaked = [str(f) for f in Path(args.out).rglob("*") if f.is_file() and KEY.encode() in f.read_bytes()]
    assert not leaked, f"the API key is in {leaked}"
    print(f"acceptance: ok (no key in any file under {args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
