"""The model card (``README.md``) every checkpoint's generator folder carries, so a generator that
leaves the run folder (``gad export``, a copy, an upload) still says what it is: its base model, the
teacher and data it learned from, the stages and steps that made it, and the key settings.

The front matter is YAML as the Hugging Face Hub reads it (``base_model``, ``library_name``,
``tags``), plus ``gad_stages``: the chain of stages, each card extending the one of the checkpoint
its stage started from (``train.init_from``), so a GAD generator's card lists its warmup too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gad.config import Config

CARD = "README.md"


def read_front_matter(folder: str | Path) -> dict[str, Any]:
    """The YAML front matter of ``folder/README.md``; empty when there is none (a model from elsewhere)."""
    path = Path(folder) / CARD
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return {}
    meta = yaml.safe_load(text[4 : text.index("\n---\n", 4)])
    return meta if isinstance(meta, dict) else {}


def teacher_of(train_file: str) -> str:
    """The teacher a teacher set names in its first row's ``meta`` (``gad teacher`` writes its model and
    backend); "" if none."""
    try:
        with open(train_file, encoding="utf-8-sig") as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, ValueError):  # parquet or unreadable: the card says unknown
        return ""
    meta = first.get("meta") if isinstance(first, dict) else None
    if not isinstance(meta, dict) or not meta.get("model"):
        return ""
    return f"{meta['model']} ({meta['backend']})" if meta.get("backend") else str(meta["model"])


def model_card(cfg: Config, step: int, examples: int, started_from: str, lora: bool) -> str:
    """The card of the generator a ``cfg.stage`` run holds at ``step``, trained on ``examples``
    examples, started from ``started_from`` (a model, or a checkpoint's generator folder)."""
    before = read_front_matter(started_from)
    stages = [*before.get("gad_stages", []), {
        "stage": cfg.stage, "steps": step, "run": cfg.train.output_dir, "data": cfg.data.train_file,
        "examples": examples,
    }]
    base = before.get("base_model") or cfg.generator.model or started_from
    teacher = teacher_of(cfg.data.train_file) or before.get("teacher", "") or "unknown (not named in the teacher set)"
    g, r, a, t = cfg.generator, cfg.rollout, cfg.algorithm, cfg.train
    settings = {
        "generator learning rate": g.effective_lr, "batch (prompts per step)": t.batch_size,
        "max prompt / response tokens": f"{cfg.data.max_prompt_length} / {cfg.data.max_response_length}",
        "parallel": t.parallel, "mixed precision": t.mixed_precision,
    }
    if cfg.stage in ("seqkd", "warmup"):
        settings["cross-entropy temperature"] = g.sft_temperature
    if cfg.stage in ("warmup", "train", "offpolicy"):
        settings.update({"samples per prompt (N)": r.n, "sampling temperature": r.temperature,
                         "discriminator learning rate": cfg.discriminator.effective_lr})
    if cfg.stage in ("train", "offpolicy"):
        settings.update({"KL coefficient": a.kl_coef, "PPO clip": a.clip_ratio})
    kwargs = cfg.data.chat_template_kwargs
    if kwargs:  # the student answers as trained only with these: say so where its users look
        settings["chat template variables"] = "`" + json.dumps(kwargs) + "` (pass them to `apply_chat_template`)"
    if lora:
        settings["LoRA rank / alpha"] = f"{g.lora_r} / {g.lora_alpha or 2 * g.lora_r}"
    front = {"base_model": base, "library_name": "peft" if lora else "transformers",
             "tags": ["gad", "distillation", "generative-adversarial-distillation"], "teacher": teacher,
             "gad_stages": stages}
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
        f"# {Path(cfg.train.output_dir).name}: a student distilled with gad", "",
        f"A {'LoRA adapter on ' if lora else ''}`{base}` trained to answer like **{teacher}**, by "
        "black-box distillation with gad (Generative Adversarial Distillation, Ye et al. 2025, "
        "arXiv 2511.10643): the teacher's answers are text only, read from a teacher set.",
        "", "## How it was trained", "", "| stage | steps | examples | teacher set | run folder |", "|---|---:|---:|---|---|",
        *[f"| {s['stage']} | {s['steps']} | {s['examples']} | `{s['data']}` | `{s['run']}` |" for s in stages],
        "", f"## Settings of the last stage (`{cfg.stage}`)", "", "| setting | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in settings.items()],
        "", "## Use", "",
        ("Load with `PeftModel.from_pretrained` on the base, serve with vLLM `--enable-lora`, or merge it: "
         "`gad export RUN_DIR --out DIR --merged`." if lora else
         "A Hugging Face model folder: `AutoModelForCausalLM.from_pretrained(this_folder)`, or serve it with vLLM."),
        "", "Evaluate it with `gad eval --model THIS_FOLDER --data vicuna --out DIR` (judge, overlap, "
        "distinguishability from the teacher)"
        + (f" and `--chat-template-kwargs '{json.dumps(kwargs)}'`" if kwargs else "") + ".", "",
    ]
    return "\n".join(lines)


def merged_card(card: str) -> str:
    """An adapter's card for the model folder ``gad export --merged`` writes (the adapter merged into its base)."""
    card = card.replace("library_name: peft", "library_name: transformers", 1)
    head, sep, rest = card.partition("\n## How it was trained")
    note = ("\nMerged: this folder holds the base model with the adapter's weights merged in "
            "(`gad export --merged`); it loads alone with `AutoModelForCausalLM`.\n")
    return head + note + sep + rest if sep else card + note
