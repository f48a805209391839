"""``gad eval`` as a library call: students × sets → generations → metrics → judge → files.

:func:`run_eval` does, in order:

1. load the sets (:func:`gad.eval.sets.resolve_eval_set` / :func:`load_eval_set`);
2. per model, answer what ``OUT/<model name>/generations.jsonl`` lacks (batched, greedy by default),
   appending each batch as it finishes, so an interrupted run resumes;
3. with a judge, its reference answers (once per prompt, shared by all models) and its pairwise
   scores (:mod:`gad.eval.judge`, stores under ``OUT/judge/<judge model>/``);
4. every metric per (model, set) (:func:`gad.eval.evaluate.evaluate_generations`), lengths in the
   student tokenizer's tokens;
5. ``OUT/results.json`` (:mod:`gad.eval.results`), ``OUT/report.md`` and the PNGs (:mod:`gad.eval.report`).

References: a set's own (a teacher set's ``teacher_response``, Dolly's response, ...); for a set
without any (Vicuna 80, MT-Bench) the judge's reference answers stand in, so n-gram F1, ROUGE-L and
distinguishability compare the student with the judge (``reference_source`` says which).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gad.errors import UserError
from gad.eval.evaluate import evaluate_generations, pending_items
from gad.eval.generations import Generation, append_generations, generations_path, read_generations
from gad.eval.judge import Judge, JudgeConfig, Verdict
from gad.eval.names import slug
from gad.eval.report import write_eval_report
from gad.eval.results import Results, write_results
from gad.eval.sets import EvalSet, load_eval_set, resolve_eval_set


@dataclass
class EvalConfig:
    """What ``gad eval`` evaluates, and how."""

    models: list[str | None]
    """Students: HF folders, hub ids, GGUF files; None = the embedded default (SmolLM2-135M-Instruct)."""
    data: list[str]
    """Sets: files (any format of :mod:`gad.eval.sets`) or short names (``vicuna``, ``dolly``, ...)."""
    out: Path
    """Output folder: ``results.json``, ``report.md``, PNGs, one folder of generations per model."""
    names: list[str] | None = None
    """Model names in tables and folder names; derived from the paths when not given."""
    temperature: float = 0.0
    """0 = greedy (the default); > 0 samples with ``top_p``."""
    top_p: float = 1.0
    max_new_tokens: int = 1536
    batch_size: int = 8
    seed: int = 0
    """Sampling seed (when ``temperature`` > 0), bootstrap and cross-validation seed."""
    limit: int | None = None
    """Only the first N items of each set (quick looks; the cache keeps them for a full run)."""
    regenerate: bool = False
    """Generate again even where the folder holds answers (e.g. made with other settings)."""
    replace_stale: bool = False
    """Answers cached from another model or other sampling are made again (the rest kept) instead of
    stopping the run; for a pipeline whose students move on (``gad demo``)."""
    judge: JudgeConfig | None = None
    distinguish: bool = True
    plots: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not self.models:
            self.models = [None]
        if not self.data:
            raise UserError("no evaluation set: pass --data SET (a file or a name such as vicuna)")
        if self.names is not None and len(self.names) != len(self.models):
            raise UserError(f"{len(self.names)} --name for {len(self.models)} --model: give one name per model")
        if self.temperature < 0:
            raise UserError(f"temperature: must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise UserError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit: must be >= 1, got {self.limit}")
        names = self.names or [model_name(m) for m in self.models]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise UserError(f"two models share the name {sorted(dupes)[0]!r}: tell them apart with --name")
        self.names = names

    @property
    def sampling(self) -> dict[str, Any]:
        """What is recorded with each generation, and must match for a cached one to be reused."""
        s: dict[str, Any] = {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens}
        if self.temperature > 0:
            s.update(top_p=self.top_p, seed=self.seed)
        return s


def model_name(spec: str | None) -> str:
    """A short, folder-safe name for a model path: ``runs/gad/checkpoints/step-000400/generator``
    → ``gad-step-000400``; ``None`` → ``smollm2-135m-instruct``."""
    from gad.config import DEFAULT_MODEL

    if not spec:
        return DEFAULT_MODEL
    parts = [p for p in Path(spec.rstrip("/")).parts if p not in ("generator", "checkpoints", ".", "..", "/")]
    if not parts:
        return "model"
    picked = parts[-2:] if parts[-1].startswith("step-") and len(parts) > 1 else parts[-1:]
    name = "-".join(picked)
    name = name[: -len(".gguf")] if name.endswith(".gguf") else name
    return slug(name)


def load_sets(specs: list[str], limit: int | None = None) -> list[EvalSet]:
    sets = [load_eval_set(resolve_eval_set(s)) for s in specs]
    seen: dict[str, Path] = {}
    for s in sets:
        if s.name in seen:
            raise UserError(f"two sets are named {s.name!r} ({seen[s.name]} and {s.path}): rename one file")
        seen[s.name] = s.path
        if limit is not None:
            s.items = s.items[:limit]
    return sets


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_generations(cfg: EvalConfig, spec: str | None, name: str, sets: list[EvalSet]) -> tuple[dict, Any]:
    """Generates what ``OUT/<name>/generations.jsonl`` lacks; returns (generations, tokenizer)."""
    from gad.config import DEFAULT_MODEL

    folder = cfg.out / name
    cached = read_generations(folder) if generations_path(folder).is_file() else {}
    pending, conflicts = [], []
    for s in sets:
        todo = list(s) if cfg.regenerate else pending_items(s, cached)
        pending += [(s, it) for it in todo]
        todo_ids = {it.id for it in todo}
        for it in s:
            g = cached.get((s.name, it.id))
            if it.id in todo_ids or g is None:
                continue
            if g.sampling != cfg.sampling or (g.model is not None and g.model != (spec or DEFAULT_MODEL)):
                conflicts.append((s, it, g))
    if conflicts:
        s, it, g = conflicts[0]
        what = (f"{len(conflicts)} cached answers were made by {g.model} with {g.sampling} (e.g. {s.name}/{it.id}), "
                f"not by {spec or DEFAULT_MODEL} with {cfg.sampling}")
        if not cfg.replace_stale:
            raise UserError(f"{generations_path(folder)}: {what}: pass --regenerate to replace them, or use a new --out")
        _log(f"{name}: {what}; answering again")
        pending += [(stale_set, stale_item) for stale_set, stale_item, _ in conflicts]
    if not pending:
        from gad.models import load_tokenizer, resolve_model

        _log(f"{name}: all {sum(len(s) for s in sets)} answers cached in {generations_path(folder)}")
        return cached, load_tokenizer(resolve_model(spec or DEFAULT_MODEL))

    from gad.eval.generate import generate_answers
    from gad.models import load_causal_lm

    _log(f"{name}: generating {len(pending)} answers ({len(cached)} cached) with {spec or DEFAULT_MODEL}")
    model, tokenizer = load_causal_lm(spec)
    for s in sets:
        items = [it for ps, it in pending if ps is s]
        if not items:
            continue

        def save(batch, s=s) -> None:
            append_generations(folder, [
                Generation(s.name, a.item.id, a.item.messages, a.response, model=spec or DEFAULT_MODEL,
                           sampling=cfg.sampling, truncated=a.truncated)
                for a in batch
            ])

        answers = generate_answers(
            model, tokenizer, items, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
            top_p=cfg.top_p, batch_size=cfg.batch_size, seed=cfg.seed, on_batch=save,
            progress=cfg.progress, desc=f"{name} · {s.name}",
        )
        cut = sum(a.truncated for a in answers)
        if cut:
            _log(f"{name} · {s.name}: {cut} of {len(answers)} answers hit --max-new-tokens {cfg.max_new_tokens}")
    del model
    return read_generations(folder), tokenizer


def run_eval(cfg: EvalConfig) -> Results:
    """Everything ``gad eval`` does (see the module docstring); returns ``{model: {set: metrics}}``."""
    sets = load_sets(cfg.data, cfg.limit)
    gens: dict[str, dict] = {}
    tokenizers: dict[str, Any] = {}
    for spec, name in zip(cfg.models, cfg.names or []):
        gens[name], tokenizers[name] = ensure_generations(cfg, spec, name, sets)

    judge_refs: dict[tuple[str, str], str | None] = {}
    verdicts: dict[str, dict[tuple[str, str], Verdict]] = {}
    if cfg.judge is not None:
        judge = Judge(cfg.judge, cfg.out, progress=cfg.progress)
        judge_refs = judge.references([(s.name, it) for s in sets for it in s])
        missing = sum(v is None for v in judge_refs.values())
        _log(f"judge {cfg.judge.model}: {len(judge_refs) - missing} reference answers"
             + (f", {missing} missing" if missing else "") + f" ({judge.references_path})")
        for name in gens:
            verdicts[name] = judge.score(
                [(s.name, it, gens[name][(s.name, it.id)].response) for s in sets for it in s], judge_refs
            )

    judge_model = cfg.judge.model if cfg.judge is not None else None
    results: Results = {}
    for name in gens:
        results[name] = {}
        tok = tokenizers[name]
        for s in sets:
            refs, source = [it.reference for it in s], "set"
            if all(r is None for r in refs):
                refs, source = [judge_refs.get((s.name, it.id)) for it in s], "judge"
                if all(r is None for r in refs):
                    source = None
            pairs = None
            if name in verdicts:
                pairs = [verdicts[name][(s.name, it.id)].pair for it in s]
            m = evaluate_generations(
                s, gens[name], references=refs, judge_pairs=pairs, distinguish=cfg.distinguish,
                length_tokenize=tok.tokenize, length_unit="tokens", seed=cfg.seed,
            )
            m["reference_source"] = source if source != "judge" else f"judge:{judge_model}"
            truncated = [gens[name][(s.name, it.id)].truncated for it in s]
            m["n_truncated"] = None if any(t is None for t in truncated) else sum(truncated)
            if m.get("judge") is not None:
                m["judge"]["model"] = judge_model
                m["judge"]["failures"] = [
                    {"id": it.id, "reason": verdicts[name][(s.name, it.id)].failure}
                    for it in s if verdicts[name][(s.name, it.id)].pair is None
                ]
            results[name][s.name] = m
    write_results(results, cfg.out)
    write_eval_report(results, cfg.out, plots=cfg.plots)
    return results
