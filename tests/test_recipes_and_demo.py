"""The shipped recipes are valid configs, and `gad demo --quick` runs end to end."""

import json
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
    assert cfg.rollout.temperature == 0.8 and cfg.generator.lr == 1e-6  # the paper's values
    assert "#" in path.read_text()  # every recipe explains where its values come from


def test_shipped_teacher_sets_are_valid_and_split():
    train, _ = read_teacher_set(resource_path("demo_teacher.jsonl"))
    heldout, _ = read_teacher_set(resource_path("demo_teacher_heldout.jsonl"))
    assert len(train) >= 64 and len(heldout) >= 20
    assert not {r.id for r in train} & {r.id for r in heldout}
    assert len(demo_prompts()) == len(train) + len(heldout)
    styled = sum(r.teacher_response.startswith("In short:") for r in train)
    assert styled / len(train) > 0.8  # the hidden-context teacher's style is there to learn


def test_demo_quick_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "gad.cli", "demo", "--quick", "--model", str(tiny_model), "--out", str(out)]
    for _ in range(2):  # a second run finds the finished demo and only reports it
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "gad demo: done" in p.stderr.splitlines()[-1]
        for stage in ("warmup", "gad"):
            rows = [json.loads(x) for x in (out / stage / "metrics.jsonl").read_text().splitlines()]
            assert [r["step"] for r in rows] == [1, 2] and "disc/accuracy" in rows[-1]
    assert (out / "gad" / "checkpoints" / "step-000002" / "generator" / "model.safetensors").exists()
    assert (out / "report.html").exists() and (out / "gad-curves.png").exists()
