"""The shipped recipes are valid configs, and `gad demo --quick` runs end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gad.config import load_config
from gad.data import read_teacher_set
from gad.demo import demo_prompts, resource_path

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*/*.yaml"))
STAGE = {"seqkd": "seqkd", "warmup": "warmup", "gad": "train"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_is_a_valid_config(path):
    cfg = load_config(path, stage=STAGE[path.stem], check_files=False)
    # the paper's values; SeqKD at the official script's strength (lr 5e-6)
    assert cfg.rollout.temperature == 0.8 and cfg.generator.lr == (5e-6 if path.stem == "seqkd" else 1e-6)
    # every recipe says how to run it, and where its learning rates and temperatures come from
    lines = path.read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert any(f"Run: gad {STAGE[path.stem]} recipes/{path.parent.name}/{path.name}" in line for line in header)
    sourced = [line for line in lines if line.strip().startswith(("lr:", "temperature:"))]
    assert sourced and all("# paper" in line or "# official" in line or "official" in line.split("#", 1)[-1]
                           for line in sourced)


def test_shipped_teacher_sets_are_valid_and_split():
    train, _ = read_teacher_set(resource_path("demo_teacher.jsonl"))
    heldout, _ = read_teacher_set(resource_path("demo_teacher_heldout.jsonl"))
    assert len(train) >= 64 and len(heldout) >= 20
    assert not {r.id for r in train} & {r.id for r in heldout}
    assert len(demo_prompts()) == len(train) + len(heldout)
    styled = sum(r.teacher_response.startswith("In short:") for r in train)
    assert styled / len(train) > 0.8  # the hidden-context teacher's style is there to learn


def demo(tiny_model, out, *extra, env=None):
    cmd = [sys.executable, "-m", "gad.cli", "demo", "--quick", "--model", str(tiny_model), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_demo_quick_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "demo"
    p = demo(tiny_model, out)
    assert p.returncode == 0, p.stderr
    assert "gad demo: done; report " in p.stderr.splitlines()[-1] and str(out / "report.html") in p.stderr
    for i, phase in enumerate(("teacher", "seqkd", "warmup", "gad", "eval", "report"), start=1):
        assert f"gad demo [{i}/6] {phase}:" in p.stderr
    # 1. the teacher answered train and held-out prompts through the collector; no hidden context stored
    stored = [json.loads(x) for x in (out / "teacher.jsonl").read_text().splitlines()]
    train = [json.loads(x) for x in (out / "teacher-train.jsonl").read_text().splitlines()]
    heldout = [json.loads(x) for x in (out / "teacher-heldout.jsonl").read_text().splitlines()]
    assert len(stored) == 36 and len(train) == 24 and len(heldout) == 12
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    assert all([m["role"] for m in r["messages"]] == ["user"] for r in stored)
    assert "In short: put a slice of bread" not in (out / "teacher.jsonl").read_text()
    # 2-4. the three stages, each from the one before
    steps = {"seqkd": 3, "warmup": 1, "gad": 2}
    for stage, n in steps.items():
        rows = [json.loads(x) for x in (out / stage / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, n + 1))
    assert "seqkd" in (out / "warmup" / "config.yaml").read_text() and "warmup" in (out / "gad" / "config.yaml").read_text()
    # 5. every student answered every held-out prompt
    results = json.loads((out / "eval" / "results.json").read_text())["models"]
    assert list(results) == ["untrained", "seqkd", "gad"]
    assert all(r["teacher-heldout"]["n"] == 12 and r["teacher-heldout"]["distinguishability"] for r in results.values())
    # precision under the hidden-context teacher, coverage of the teacher's answers, paired differences
    # (the tiny students' greedy answers may be special tokens only, nothing to score: counted as skipped)
    for name, r in results.items():
        for kind in ("precision", "coverage"):
            e = r["teacher-heldout"][kind]
            assert e["n"] + e["n_skipped"] == 12 and (e["n"] == 0 or e["low"] <= e["value"] <= e["high"]), (name, kind)
        assert r["teacher-heldout"]["coverage"]["n"] == 12  # the teacher's answers are words
    assert results["untrained"]["teacher-heldout"]["precision"]["scorer"] == f"{tiny_model} + hidden context (5 messages)"
    assert set(results["gad"]["teacher-heldout"]["precision"]["paired"]) == {"untrained", "seqkd"}
    assert results["gad"]["teacher-heldout"]["coverage"]["paired"]["seqkd"]["n"] == 12
    # 6. the report: comparison, verdict, answers side by side, curves, settings
    page = (out / "report.html").read_text()
    for needle in ("Held-out comparison", "the GAD student against the untrained one", "Answers side by side",
                   "gad-curves.png", "seqkd-curves.png", "hidden context", heldout[0]["messages"][0]["content"],
                   "precision: teacher&#x27;s log-lik.", "coverage: log-lik.", "gad − seqkd", "interval excludes 0",
                   "Samples at step 2", "teacher&#x27;s mean rank"):
        assert needle in page, needle
    assert all((out / f"{s}-curves.png").stat().st_size > 1000 for s in steps)
    # a second run finds every phase done: nothing is trained or asked again
    before = {s: (out / s / "metrics.jsonl").read_text() for s in steps}
    p = demo(tiny_model, out)
    assert p.returncode == 0, p.stderr
    assert all(f"{s} already finished" in p.stderr for s in steps)
    assert before == {s: (out / s / "metrics.jsonl").read_text() for s in steps}
    assert json.loads((out / "teacher.summary.json").read_text())["to_send"] == 0
    # answers made by an earlier checkpoint of a student are stale: made again, the others kept
    gens = out / "eval" / "gad" / "generations.jsonl"
    gens.write_text(gens.read_text().replace("step-000002", "step-000001"))
    untrained = (out / "eval" / "untrained" / "generations.jsonl").read_text()
    p = demo(tiny_model, out)
    assert p.returncode == 0 and "gad: 12 cached answers were made by" in p.stderr and "; answering again" in p.stderr
    assert "untrained: 12 cached" not in p.stderr and "untrained: all 12 answers cached" in p.stderr
    latest = {}  # the cache is append-only: the later row for a key wins
    for row in map(json.loads, gens.read_text().splitlines()):
        latest[row["id"]] = row["model"]
    assert len(latest) == 12 and all(m.endswith("step-000002/generator") for m in latest.values())
    assert (out / "eval" / "untrained" / "generations.jsonl").read_text() == untrained


def test_demo_with_an_api_teacher(tiny_model, tmp_path, fake_api):
    from tests.teacher.harness import API_KEY

    api = fake_api(reply=lambda body: "yes good " + body["messages"][-1]["content"])
    out = tmp_path / "demo"
    env = {**os.environ, "GAD_TEST_KEY": API_KEY}
    p = demo(tiny_model, out, "--teacher-model", "fake-teacher", "--teacher-base-url", api.url,
             "--api-key-env", "GAD_TEST_KEY", env=env)
    assert p.returncode == 0, p.stderr
    assert len({h.key for h in api.hits}) == 36 and all(h.authorization == f"Bearer {API_KEY}" for h in api.hits)
    rows = [json.loads(x) for x in (out / "teacher-heldout.jsonl").read_text().splitlines()]
    assert all(r["teacher_response"] == "yes good " + r["messages"][-1]["content"] for r in rows)
    assert "fake-teacher" in (out / "report.md").read_text() and 'style ("' not in (out / "report.md").read_text()
    assert not [f for f in out.rglob("*") if f.is_file() and API_KEY.encode() in f.read_bytes()]


def test_demo_api_teacher_without_key_stops_before_any_work(tiny_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    p = demo(tiny_model, tmp_path / "demo", "--teacher-model", "gpt-x", env=env)
    assert p.returncode == 2 and "OPENAI_API_KEY" in p.stderr
    assert not (tmp_path / "demo" / "teacher.jsonl").exists()


def test_demo_ctrl_c_then_rerun_continues(tiny_model, tmp_path, fake_api):
    """Ctrl-C during teacher collection keeps what was answered; the rerun asks only for the rest."""
    import signal
    import time

    from tests.teacher.harness import API_KEY

    api = fake_api(latency=2.0)  # 36 answers, 16 at a time: ~6 s, time to interrupt even on a loaded machine
    out = tmp_path / "demo"
    env = {**os.environ, "GAD_TEST_KEY": API_KEY}
    args = ["--teacher-model", "fake-teacher", "--teacher-base-url", api.url, "--api-key-env", "GAD_TEST_KEY"]
    cmd = [sys.executable, "-m", "gad.cli", "demo", "--quick", "--model", str(tiny_model), "--out", str(out), *args]
    # SIGINT back to its default in the child: a pytest-xdist worker ignores it, and an ignored
    # signal is inherited, so Python would never raise KeyboardInterrupt there
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store, deadline = out / "teacher.jsonl", time.monotonic() + 60
    while time.monotonic() < deadline and (not store.exists() or len(store.read_text().splitlines()) < 4):
        time.sleep(0.02)  # some answers stored, the rest (36 at 2 s each, 16 at a time) not yet
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted; run the same command again" in err
    kept = [json.loads(x)["messages"][-1]["content"] for x in (out / "teacher.jsonl").read_text().splitlines()]
    assert 4 <= len(kept) < 36 and not (out / "seqkd").exists()

    p = demo(tiny_model, out, *args, env=env)
    assert p.returncode == 0, p.stderr
    assert len((out / "teacher.jsonl").read_text().splitlines()) == 36
    assert all(api.count(k) == 1 for k in kept)  # nothing already answered was asked again
