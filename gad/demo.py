"""The embedded default: a teacher, a student and a teacher set that run on a laptop CPU, offline.

The default teacher is the embedded SmolLM2-135M-Instruct *steered by a hidden system prompt and
hidden examples* of a distinctive answer style (brief answers that open with "In short:"). Only
its text crosses the teacher boundary, as with an API teacher; the student never sees the hidden
prompt, so distillation has to bake it into the weights (context distillation).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

HIDDEN_CONTEXT = [
    {"role": "system", "content": "You answer every question in one or two short sentences. Always start with 'In short:'."},
    {"role": "user", "content": "How do I make toast?"},
    {"role": "assistant", "content": "In short: put a slice of bread in a toaster and take it out when it is golden brown."},
    {"role": "user", "content": "Why is the sea blue?"},
    {"role": "assistant", "content": "In short: water absorbs red light and scatters blue light, so the sea looks blue."},
]
STYLE_MARKER = "In short:"


def resource_path(name: str) -> Path:
    return Path(str(resources.files("gad") / "resources" / name))


def demo_prompts(split: str | None = None) -> list[dict[str, Any]]:
    """The bundled prompts (``split`` = ``train`` or ``heldout`` to pick one part)."""
    rows = [json.loads(line) for line in resource_path("demo_prompts.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def generate_demo_teacher_set(
    out: str | Path, model: str | None = None, max_new_tokens: int = 96, temperature: float = 0.7,
    batch_size: int = 16, seed: int = 0,
) -> Path:
    """Answer every bundled prompt with the hidden-context teacher; write the teacher-set JSONL."""
    import torch
    from tqdm.auto import tqdm

    from gad.data import template_prompt
    from gad.models import load_causal_lm
    from gad.rollout import HFRollout

    torch.manual_seed(seed)
    lm, tok = load_causal_lm(model)
    engine = HFRollout(lm, tok.pad_token_id, tok.eos_token_id, max_new_tokens, temperature)
    rows = demo_prompts()
    out = Path(out)
    with out.open("w") as f:
        for i in tqdm(range(0, len(rows), batch_size), desc="teacher", unit="batch"):
            chunk = rows[i : i + batch_size]
            prompts = [template_prompt(tok, HIDDEN_CONTEXT + r["messages"]) for r in chunk]
            for r, ids in zip(chunk, engine.generate(prompts, n=1)):
                text = tok.decode(ids, skip_special_tokens=True).strip()
                meta = {"teacher": "smollm2-135m-instruct+hidden-context", "split": r["split"],
                        "finish_reason": "stop" if ids and ids[-1] == tok.eos_token_id else "length"}
                f.write(json.dumps({"id": r["id"], "messages": r["messages"], "teacher_response": text, "meta": meta}) + "\n")
    return out


def demo_configs(out: str | Path, model: str = "", teacher_set: str | Path | None = None, quick: bool = False) -> list[Any]:
    """Warmup then GAD on the shipped teacher set, sized for a 2-core CPU (``quick``: a smoke run)."""
    from gad.config import DEFAULT_MODEL, load_config

    out = Path(out)
    data = str(teacher_set or resource_path("demo_teacher.jsonl"))
    size = (
        ["train.batch_size=2", "rollout.n=2", "rollout.max_new_tokens=16", "train.max_steps=2", "algorithm.disc_only_steps=1"]
        if quick else
        ["train.batch_size=4", "rollout.n=4", "rollout.max_new_tokens=64", "train.max_steps=4", "algorithm.disc_only_steps=2"]
    )
    common = [f"data.train_file={data}", f"generator.model={model or DEFAULT_MODEL}", "data.max_response_length=128",
              "train.micro_batch_size=8", "generator.lr=5e-6", "discriminator.lr=5e-6", "train.save_every=100", *size]
    warm = load_config(None, [*common, f"train.output_dir={out / 'warmup'}"], stage="warmup")
    gad = load_config(None, [*common, f"train.output_dir={out / 'gad'}", f"train.init_from={out / 'warmup'}"],
                      stage="train", check_files=False)
    return [warm, gad]


def run_demo(out: str | Path | None = None, model: str = "", teacher_set: str | Path | None = None,
             quick: bool = False) -> Path:
    """The whole demo; returns the run folder. Running it again continues where it stopped (or,
    if it finished, only prints where its outputs are)."""
    from gad.api import train, warmup

    out = Path(out or ("runs/demo-quick" if quick else "runs/demo"))
    warm, gad = demo_configs(out, model, teacher_set, quick)
    warmup(warm, resume=True)
    train(gad, resume=True)
    from gad.report import write_report

    write_report([out / "warmup", out / "gad"], out)
    return out
