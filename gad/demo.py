"""The embedded default: the whole GAD pipeline on a laptop CPU, offline, in about 15 minutes.

``run_demo`` runs, in one folder (each phase resumes if the demo is run again):

1. **teacher**: a black-box teacher answers the bundled prompts (train and held-out) through the
   same collection loop as an API teacher (:func:`gad.teacher.collect`). The default teacher is the
   embedded SmolLM2-135M-Instruct *steered by a hidden system prompt and hidden examples* of a
   distinctive style (brief answers that open with "In short:"); only its text crosses the teacher
   boundary, so distillation has to bake the hidden context into the weights (context
   distillation). ``teacher_model`` uses an OpenAI-compatible API instead.
2. **seqkd**: the SeqKD baseline, cross-entropy on the teacher's answers.
3. **warmup**: D learns Bradley-Terry on (teacher, SeqKD student's samples). The paper's warmup also
   trains G by the same cross-entropy for an epoch; here G *is* the SeqKD student, so the SeqKD and
   GAD rows of the comparison differ by exactly the adversarial stage.
4. **gad**: GAD steps from the warmup checkpoint (G and D).
5. **eval**: the untrained, SeqKD and GAD students answer the held-out prompts (greedy);
   distinguishability from the teacher, n-gram F1, ROUGE-L, lengths, the style rate, coverage (each
   student's log-likelihood of the teacher's answers) and, with the local teacher, precision (the
   teacher's log-likelihood of each student answer behind its hidden context).
6. **report**: ``report.html`` / ``report.md`` (:func:`gad.report.write_run_report`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from gad.errors import UserError

HIDDEN_CONTEXT = [
    {"role": "system", "content": "You answer every question in one or two short sentences. Always start with 'In short:'."},
    {"role": "user", "content": "How do I make toast?"},
    {"role": "assistant", "content": "In short: put a slice of bread in a toaster and take it out when it is golden brown."},
    {"role": "user", "content": "Why is the sea blue?"},
    {"role": "assistant", "content": "In short: water absorbs red light and scatters blue light, so the sea looks blue."},
]
STYLE_MARKER = "In short:"


class DemoError(UserError, RuntimeError):
    """A phase could not finish (e.g. teacher requests failed); what was done is kept for the rerun."""


@dataclass(frozen=True)
class DemoPlan:
    """How much of each phase the demo runs. Sized on a 2-core CPU with SmolLM2-135M (fp32):
    teacher answers to 220 prompts ~160 s, a SeqKD step of 8 answers ~5 s, a D-only warmup step ~12 s,
    a GAD step of 4 prompts × 4 samples × ≤64 tokens ~31 s, greedy answers to 60 held-out prompts
    ~35 s per student: about 14 minutes in all (plus ~35 s to convert the model on a fresh machine)."""

    train_prompts: int = 160
    heldout_prompts: int = 60
    teacher_max_tokens: int = 64
    teacher_temperature: float = 0.7
    seqkd_steps: int = 20
    """× ``sft_batch`` = one epoch over the train prompts."""
    sft_batch: int = 8
    warmup_steps: int = 4
    gad_steps: int = 12
    batch_size: int = 4
    n: int = 4
    max_new_tokens: int = 64
    lr: float = 1e-5
    """Far above the paper's 1e-6: a 15-minute run has ~30 updates, the paper thousands."""
    eval_max_new_tokens: int = 96
    eval_batch: int = 20
    examples: int = 4
    """Held-out prompts shown with every model's answer side by side in the report."""


FULL = DemoPlan()
QUICK = DemoPlan(train_prompts=24, heldout_prompts=12, teacher_max_tokens=32, seqkd_steps=3, warmup_steps=1,
                 gad_steps=2, batch_size=2, n=2, max_new_tokens=32, eval_max_new_tokens=32, eval_batch=12)


def resource_path(name: str) -> Path:
    return Path(str(resources.files("gad") / "resources" / name))


def demo_prompts(split: str | None = None) -> list[dict[str, Any]]:
    """The bundled prompts (``split`` = ``train`` or ``heldout`` to pick one part)."""
    rows = [json.loads(line) for line in resource_path("demo_prompts.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def _phase(i: int, name: str, what: str) -> None:
    print(f"\ngad demo [{i}/6] {name}: {what}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# 1. The teacher


def teacher_backend(plan: DemoPlan, model: str = "", teacher_model: str | None = None,
                    base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY") -> Any:
    """The demo's black box: an API model when ``teacher_model`` is given, else the local student
    model behind a hidden context."""
    from gad.teacher import GenerationSettings

    if teacher_model:
        from gad.teacher import OpenAIBackend
        from gad.teacher.redact import api_key_from_env

        key = api_key_from_env(api_key_env, required=base_url is None)
        settings = GenerationSettings(model=teacher_model, max_tokens=plan.teacher_max_tokens)
        return OpenAIBackend(settings, api_key=key, base_url=base_url, concurrency=16)
    from gad.teacher import LocalBackend
    from gad.teacher.context import HiddenContextBackend

    settings = GenerationSettings(model=model or "smollm2-135m-instruct", max_tokens=plan.teacher_max_tokens,
                                  temperature=plan.teacher_temperature, seed=0)
    return HiddenContextBackend(LocalBackend(settings, model or None, batch_size=16), HIDDEN_CONTEXT)


def collect_teacher(out: Path, plan: DemoPlan, backend: Any) -> tuple[Path, Path, int]:
    """Teacher answers for the plan's train and held-out prompts → ``teacher-train.jsonl`` and
    ``teacher-heldout.jsonl`` (from the resumable store ``teacher.jsonl``), and how many prompts
    were sent this time (0 when all were answered before)."""
    from gad.teacher import ChatRequest, collect, read_rows

    rows = demo_prompts("train")[: plan.train_prompts] + demo_prompts("heldout")[: plan.heldout_prompts]
    requests = [ChatRequest(r["id"], r["messages"], {"split": r["split"]}) for r in rows]
    summary = collect(requests, backend, out / "teacher.jsonl")
    if summary.to_send:
        print(summary.format(), file=sys.stderr)  # flagged answers: a cut one is a poor training target
    if summary.stopped == "interrupted":
        raise KeyboardInterrupt
    if not summary.complete:
        raise DemoError(f"teacher collection incomplete ({summary.stopped or f'{summary.failed} failed'}); "
                           "run the demo again to retry the missing prompts")
    wanted = {r.id for r in requests}
    stored = [r for r in read_rows(out / "teacher.jsonl") if r["id"] in wanted]
    paths = {}
    for split in ("train", "heldout"):
        paths[split] = out / f"teacher-{split}.jsonl"
        kept = [r for r in stored if r.get("split") == split]
        paths[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    return paths["train"], paths["heldout"], summary.to_send


# ---------------------------------------------------------------------------------------------------
# 2-4. SeqKD, warmup, GAD


def stage_configs(out: Path, plan: DemoPlan, model: str, train_file: Path) -> dict[str, Any]:
    """The three training stages' configs, in order: seqkd → warmup (init: seqkd) → gad (init: warmup)."""
    from gad.config import DEFAULT_MODEL, load_config

    common = [f"data.train_file={train_file}", f"generator.model={model or DEFAULT_MODEL}",
              f"data.max_response_length={plan.teacher_max_tokens + 1}", "train.micro_batch_size=8",
              f"generator.lr={plan.lr}", f"discriminator.lr={plan.lr}", "train.save_every=1000", "train.keep_last=1"]
    rl = [f"train.batch_size={plan.batch_size}", f"rollout.n={plan.n}", f"rollout.max_new_tokens={plan.max_new_tokens}",
          f"train.log_samples_every={max(1, plan.gad_steps // 3)}"]  # the report shows samples from each sampling stage
    stages = {
        "seqkd": ("seqkd", [f"train.batch_size={plan.sft_batch}", f"train.max_steps={plan.seqkd_steps}"]),
        "warmup": ("warmup", [*rl, f"train.max_steps={plan.warmup_steps}",
                              f"algorithm.disc_only_steps={plan.warmup_steps}", f"train.init_from={out / 'seqkd'}"]),
        "gad": ("train", [*rl, f"train.max_steps={plan.gad_steps}", f"train.init_from={out / 'warmup'}"]),
    }
    return {name: load_config(None, [*common, *extra, f"train.output_dir={out / name}"], stage=stage, check_files=False)
            for name, (stage, extra) in stages.items()}


def _final_checkpoint(run_dir: Path, steps: int) -> Path | None:
    path = run_dir / "checkpoints" / f"step-{steps:06d}"
    return path if (path / "state.pt").exists() else None


def run_stage_once(name: str, cfg: Any) -> tuple[Path, bool]:
    """Runs (or resumes) a stage; a finished one is not loaded again. Returns its last checkpoint
    and whether anything ran."""
    from gad.stages import seqkd, train, warmup

    done = _final_checkpoint(Path(cfg.train.output_dir), cfg.train.max_steps)
    if done is not None:
        print(f"gad demo: {name} already finished ({done})", file=sys.stderr)
        return done, False
    result = {"seqkd": seqkd, "warmup": warmup, "train": train}[cfg.stage](cfg, resume=True)
    if result.interrupted:
        raise KeyboardInterrupt
    return Path(result.checkpoint), True


# ---------------------------------------------------------------------------------------------------
# 5. Evaluation


def evaluate_students(out: Path, plan: DemoPlan, model: str, heldout_file: Path, checkpoints: dict[str, Path],
                      local_teacher: bool = True, chat_template_kwargs: dict[str, Any] | None = None) -> Path:
    """Greedy answers of each student to the held-out prompts, and every API-free metric against
    the teacher's answers; returns ``eval/results.json``.

    Coverage (each student's log-likelihood of the teacher's answers) always; with the
    ``local_teacher`` (the student model behind :data:`HIDDEN_CONTEXT`), precision too: that teacher's
    log-likelihood of each student answer with its hidden context (:mod:`gad.eval.likelihood`).
    ``chat_template_kwargs``: the students' template variables, those the stages trained with."""
    from gad.config import DEFAULT_MODEL
    from gad.eval.run import EvalConfig, run_eval

    specs = {"untrained": model or None, **{k: str(checkpoints[k] / "generator") for k in ("seqkd", "gad")}}
    cfg = EvalConfig(models=list(specs.values()), names=list(specs), data=[str(heldout_file)], out=out / "eval",
                     max_new_tokens=plan.eval_max_new_tokens, batch_size=plan.eval_batch, replace_stale=True,
                     teacher_model=(model or DEFAULT_MODEL) if local_teacher else None,
                     teacher_context=HIDDEN_CONTEXT if local_teacher else None, coverage=True,
                     chat_template_kwargs=dict(chat_template_kwargs or {}))
    run_eval(cfg)  # a stage that trained further since its answers (more steps) answers again
    return out / "eval" / "results.json"


# ---------------------------------------------------------------------------------------------------
# The whole demo


def run_demo(out: str | Path | None = None, model: str = "", quick: bool = False, teacher_model: str | None = None,
             base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY") -> Path:
    """Runs every phase (see the module docstring) and returns the report's path. Running it again
    continues where it stopped; a finished demo only rewrites its report."""
    from gad.report import write_run_report

    plan = QUICK if quick else FULL
    out = Path(out or ("runs/demo-quick" if quick else "runs/demo"))
    backend = teacher_backend(plan, model, teacher_model, base_url, api_key_env)  # a missing key stops here
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "demo.json").read_text()) if (out / "demo.json").exists() else {}
    manifest = {
        "format": "gad-demo", "student": model or "smollm2-135m-instruct", "quick": quick,
        "teacher": teacher_model or f"{model or 'smollm2-135m-instruct'} + hidden context",
        "hidden_context": None if teacher_model else HIDDEN_CONTEXT,
        "style_marker": None if teacher_model else STYLE_MARKER,
        "plan": dataclasses.asdict(plan),
        "seconds": previous.get("seconds", {}),  # per phase, from the run that did its work
    }

    def save_manifest() -> None:
        (out / "demo.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    save_manifest()
    _phase(1, "teacher", f"{manifest['teacher']} answers {plan.train_prompts} train + "
           f"{plan.heldout_prompts} held-out prompts")
    t = time.perf_counter()
    train_file, heldout_file, asked = collect_teacher(out, plan, backend)
    backend = None  # the local teacher's model is not needed again
    if asked:
        manifest["seconds"]["teacher"] = round(time.perf_counter() - t, 1)

    cfgs = stage_configs(out, plan, model, train_file)
    what = {"seqkd": f"SeqKD baseline, {_steps(plan.seqkd_steps)} of cross-entropy on the teacher's answers",
            "warmup": f"discriminator warmup on the SeqKD student's samples, {_steps(plan.warmup_steps)}",
            "gad": f"GAD, {_steps(plan.gad_steps)} of {plan.batch_size} prompts × {plan.n} samples"}
    checkpoints = {}
    for i, name in enumerate(("seqkd", "warmup", "gad"), start=2):
        _phase(i, name, what[name])
        t = time.perf_counter()
        checkpoints[name], ran = run_stage_once(name, cfgs[name])
        if ran:
            manifest["seconds"][name] = round(time.perf_counter() - t, 1)
        save_manifest()

    _phase(5, "eval", f"untrained, SeqKD and GAD students answer {plan.heldout_prompts} held-out prompts")
    t = time.perf_counter()
    evaluate_students(out, plan, model, heldout_file, checkpoints, local_teacher=not teacher_model,
                      chat_template_kwargs=cfgs["gad"].data.chat_template_kwargs)
    manifest["seconds"]["eval"] = round(time.perf_counter() - t, 1)
    save_manifest()

    _phase(6, "report", "tables, curves, answers side by side")
    return write_run_report([out], out)


def ship_teacher_sets(dest: Path | None = None) -> None:
    """Regenerates the shipped teacher sets ``demo_teacher.jsonl`` / ``demo_teacher_heldout.jsonl``
    (every bundled prompt, the full demo's teacher) that the CPU recipes train on without
    collecting: ``python -m gad.demo``."""
    import shutil
    import tempfile

    dest = dest or resource_path("")
    prompts = demo_prompts()
    plan = dataclasses.replace(FULL, train_prompts=len(prompts), heldout_prompts=len(prompts))
    with tempfile.TemporaryDirectory() as tmp:
        train, heldout, _ = collect_teacher(Path(tmp), plan, teacher_backend(plan))
        shutil.copyfile(train, dest / "demo_teacher.jsonl")
        shutil.copyfile(heldout, dest / "demo_teacher_heldout.jsonl")


if __name__ == "__main__":
    ship_teacher_sets()
