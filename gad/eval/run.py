"""``gad eval`` as a library call: students × sets → generations → metrics → judge → files.

:func:`run_eval` does, in order:

1. load the sets (:func:`gad.eval.sets.resolve_eval_set` / :func:`load_eval_set`);
2. per model, answer what ``OUT/<model name>/generations.jsonl`` lacks (batched, greedy by default),
   appending each batch as it finishes, so an interrupted run resumes;
3. with a judge, its reference answers (once per prompt, shared by all models) and its pairwise
   scores (:mod:`gad.eval.judge`, stores under ``OUT/judge/<judge model>/``);
4. every metric per (model, set) (:func:`gad.eval.evaluate.evaluate_generations`), lengths in the
   student tokenizer's tokens;
5. with a local teacher (``teacher_model``) or ``coverage``: precision and coverage per token
   (:mod:`gad.eval.likelihood`), scored once into ``OUT/<model name>/likelihoods.jsonl``;
6. ``OUT/results.json`` (:mod:`gad.eval.results`), ``OUT/report.md`` and the PNGs (:mod:`gad.eval.report`).

References: a set's own (a teacher set's ``teacher_response``, Dolly's response, ...); for a set
without any (Vicuna 80, MT-Bench) the judge's reference answers stand in, so n-gram F1, ROUGE-L and
distinguishability compare the student with the judge (``reference_source`` says which).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gad.config import template_kwargs_problem
from gad.errors import UserError
from gad.eval.evaluate import evaluate_generations, pending_items
from gad.eval.generations import Generation, append_generations, generations_path, read_generations
from gad.eval.judge import Judge, JudgeConfig, Verdict
from gad.eval.names import slug
from gad.eval.report import write_eval_report
from gad.eval.results import Results, write_results
from gad.eval.sets import EvalSet, load_eval_set, resolve_eval_set
from gad.rows import Message


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
    engine: str = "hf"
    """What generates the answers: ``hf`` (``transformers.generate``) or ``vllm`` (a vLLM engine
    given the same weights; ``pip install 'gad[vllm]'``). The answers' cache ignores it: greedy
    answers are the same under both."""
    vllm_enforce_eager: bool = False
    """``engine: vllm``: no compilation or CUDA graphs (starts faster, decodes slower)."""
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
    teacher_model: str | None = None
    """A local teacher (HF folder, hub id, GGUF file, ``smollm2-135m-instruct``): its log-likelihood of
    each student answer is the *precision* (:mod:`gad.eval.likelihood`). None: no precision."""
    teacher_context: list[Message] | None = None
    """Messages the local teacher saw before every prompt (a hidden system prompt and examples)."""
    coverage: bool | None = None
    """The students' log-likelihood of a teacher set's answers (*coverage*); None = on with
    ``teacher_model``, off otherwise."""
    likelihood_batch_size: int = 8
    """Answers per teacher-forced scoring pass."""
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra variables for the students' chat template (e.g. ``{"enable_thinking": False}``), as
    ``data.chat_template_kwargs`` in training: their generations and coverage. Not the local
    teacher's template."""
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
        if self.engine not in ("hf", "vllm"):
            raise UserError(f"engine: must be 'hf' or 'vllm', got {self.engine!r}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit: must be >= 1, got {self.limit}")
        names = self.names or [model_name(m) for m in self.models]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise UserError(f"two models share the name {sorted(dupes)[0]!r}: tell them apart with --name")
        self.names = names
        if self.teacher_context and not self.teacher_model:
            raise UserError("a teacher context needs a local teacher: pass --teacher-model too")
        if self.coverage is None:
            self.coverage = bool(self.teacher_model)
        problem = template_kwargs_problem(self.chat_template_kwargs)
        if problem:
            raise UserError(f"chat_template_kwargs: {problem}")
        if self.likelihood_batch_size < 1:
            raise UserError(f"likelihood_batch_size: must be >= 1, got {self.likelihood_batch_size}")

    @property
    def sampling(self) -> dict[str, Any]:
        """What is recorded with each generation, and must match for a cached one to be reused."""
        s: dict[str, Any] = {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens}
        if self.temperature > 0:
            s.update(top_p=self.top_p, seed=self.seed)
        if self.chat_template_kwargs:  # answers cached without them stay valid
            s["chat_template_kwargs"] = self.chat_template_kwargs
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

    from gad.eval.generate import generate_answers, vllm_rollout
    from gad.models import load_causal_lm

    _log(f"{name}: generating {len(pending)} answers ({len(cached)} cached) with {spec or DEFAULT_MODEL}"
         + (" on vLLM" if cfg.engine == "vllm" else ""))
    model, tokenizer = load_causal_lm(spec)
    rollout = None  # hf: generate_answers runs transformers.generate on the model
    if cfg.engine == "vllm":  # one engine for every set
        rollout = vllm_rollout(model, tokenizer, [it for _, it in pending], max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, top_p=cfg.top_p, enforce_eager=cfg.vllm_enforce_eager,
                               chat_template_kwargs=cfg.chat_template_kwargs)
    try:
        for s in sets:
            items = [it for ps, it in pending if ps is s]
            if not items:
                continue

            def save(batch, s=s) -> None:
                append_generations(folder, [
                    Generation(s.name, a.item.id, a.item.messages, a.response, model=spec or DEFAULT_MODEL,
                               sampling=cfg.sampling, truncated=a.truncated, engine=cfg.engine)
                    for a in batch
                ])

            answers = generate_answers(
                model, tokenizer, items, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                top_p=cfg.top_p, batch_size=cfg.batch_size, seed=cfg.seed, on_batch=save,
                progress=cfg.progress, desc=f"{name} · {s.name}", chat_template_kwargs=cfg.chat_template_kwargs,
                rollout=rollout,
            )
            cut = sum(a.truncated for a in answers)
            if cut:
                _log(f"{name} · {s.name}: {cut} of {len(answers)} answers hit --max-new-tokens {cfg.max_new_tokens}")
    finally:
        if rollout is not None:
            rollout.close()
    del model
    return read_generations(folder), tokenizer


Likelihoods = dict[tuple[str, str, str], tuple[float | None, int | None]]
"""``{(kind, set, id): (mean log-prob per token, tokens)}`` of one model; kind = precision | coverage."""


def likelihood_requests(cfg: EvalConfig, spec: str | None, gens: dict, sets: list[EvalSet]) -> list[tuple]:
    """What to score for one model: ``(kind, set, id, scorer, Scoring)`` for precision (each answer,
    by the teacher with its context) and coverage (each teacher-set answer, by this model)."""
    from gad.config import DEFAULT_MODEL
    from gad.eval.likelihood import Scoring

    out = []
    for s in sets:
        for it in s:
            if cfg.teacher_model:
                g = gens[(s.name, it.id)]
                out.append(("precision", s.name, it.id, f"teacher:{cfg.teacher_model}",
                            Scoring(list(cfg.teacher_context or []) + it.messages, g.response, g.truncated is not True)))
            if cfg.coverage and s.format == "teacher" and it.reference is not None:
                ended = it.meta.get("finish_reason") != "length"
                scoring = Scoring(it.messages, it.reference, ended, cfg.chat_template_kwargs or None)
                out.append(("coverage", s.name, it.id, spec or DEFAULT_MODEL, scoring))
    return out


def ensure_likelihoods(cfg: EvalConfig, sets: list[EvalSet], gens: dict[str, dict]) -> dict[str, Likelihoods]:
    """Precision and coverage of every model (see :mod:`gad.eval.likelihood`), scoring only what
    ``OUT/<model>/likelihoods.jsonl`` lacks: the teacher is loaded once for every model's answers,
    each student once for its coverage, one model in memory at a time."""
    from gad.eval.likelihood import append_cache, cache_key, read_cache, score_answers
    from gad.models import load_causal_lm

    specs = dict(zip(cfg.names or [], cfg.models))
    requests = {name: likelihood_requests(cfg, specs[name], gens[name], sets) for name in gens}
    caches = {name: read_cache(cfg.out / name) for name in gens}
    pending: dict[str, list[tuple[str, tuple]]] = {}  # scorer -> [(model name, request)]
    for name, reqs in requests.items():
        for r in reqs:
            kind, set_name, item_id, scorer, item = r
            row = caches[name].get((kind, set_name, item_id))
            if row is None or row.get("key") != cache_key(scorer, item):
                pending.setdefault(scorer, []).append((name, r))
    import torch

    for scorer, todo in pending.items():
        spec = scorer.removeprefix("teacher:")
        _log(f"likelihoods: {len(todo)} answers scored by {spec}"
             + (" with its hidden context" if scorer.startswith("teacher:") and cfg.teacher_context else ""))
        model, tokenizer = load_causal_lm(spec)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        scores = score_answers(model, tokenizer, [r[4] for _, r in todo], batch_size=cfg.likelihood_batch_size)
        del model
        for name in gens:
            append_cache(cfg.out / name, [
                {"kind": r[0], "set": r[1], "id": r[2], "key": cache_key(r[3], r[4]),
                 "sum": None if lp is None else sum(lp), "n_tokens": None if lp is None else len(lp)}
                for (owner, r), lp in zip(todo, scores) if owner == name])
    out: dict[str, Likelihoods] = {}
    for name in gens:
        cache = read_cache(cfg.out / name)
        out[name] = {}
        for kind, set_name, item_id, _, _ in requests[name]:
            row = cache[(kind, set_name, item_id)]
            n = row.get("n_tokens")
            out[name][(kind, set_name, item_id)] = (row["sum"] / n if n else None, n)
    return out


def teacher_label(cfg: EvalConfig) -> str:
    """The local teacher as the report names it: its model, and its hidden context when it has one."""
    n = len(cfg.teacher_context or [])
    return f"{cfg.teacher_model}" + (f" + hidden context ({n} message{'s' if n > 1 else ''})" if n else "")


def add_likelihoods(results: Results, lik: dict[str, Likelihoods], sets: list[EvalSet], cfg: EvalConfig) -> None:
    """``precision`` / ``coverage`` (estimate, tokens, scorer, and ``paired``: this model minus each
    model listed before it, on the same prompts) and their per-item values, into each (model, set)."""
    from gad.eval.likelihood import likelihood_estimate, paired_difference

    names = list(results)
    specs = dict(zip(cfg.names or [], cfg.models))
    for s in sets:
        for kind in ("precision", "coverage"):
            scored = {name: [lik[name].get((kind, s.name, it.id), (None, None)) for it in s] for name in names}
            if not any((kind, s.name, it.id) in lik[name] for name in names for it in s):
                continue  # not measured on this set (coverage needs a teacher set)
            means = {name: [x for x, _ in scored[name]] for name in names}
            for i, name in enumerate(names):
                m = results[name][s.name]
                m["per_item"][kind] = means[name]
                est = likelihood_estimate(means[name], [n for _, n in scored[name]], seed=cfg.seed)
                est["scorer"] = teacher_label(cfg) if kind == "precision" else model_label(specs[name])
                est["paired"] = {other: paired_difference(means[name], means[other], seed=cfg.seed)
                                 for other in names[:i]}
                m[kind] = est


def model_label(spec: str | None) -> str:
    from gad.config import DEFAULT_MODEL

    return spec or DEFAULT_MODEL


def run_eval(cfg: EvalConfig) -> Results:
    """Everything ``gad eval`` does (see the module docstring); returns ``{model: {set: metrics}}``."""
    if cfg.engine == "vllm":  # before any model loads
        from gad.rollout.vllm_engine import require_vllm

        require_vllm("gad eval --engine vllm")
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
    if cfg.teacher_model or cfg.coverage:
        add_likelihoods(results, ensure_likelihoods(cfg, sets, gens), sets, cfg)
    write_results(results, cfg.out)
    write_eval_report(results, cfg.out, plots=cfg.plots)
    return results
