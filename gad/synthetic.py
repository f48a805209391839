"""The paper's claims in sequence space, through the real trainer, against a teacher with exact likelihood.

The teacher is a *mixture of Markov chains* over a small symbol vocabulary (an HMM whose hidden
state is the mode plus the last symbol): the prompt names a task, each task has a few sharply
different modes (own start and transition tables) with unequal weights, and a length-dependent stop
probability. Its likelihood ``p(y | x) = Σ_k w_k Π_t p_k(y_t | y_{t-1}) × stops`` is exact, so
every student sample can be scored by the teacher itself. The trainer never sees the teacher: it
reads the teacher set (JSONL text, as an API would have returned it), like any other run.

The student is a tiny Llama with a word-level tokenizer over the synthetic vocabulary and a chat
template. All methods start from the same "instruct" student (a brief SeqKD on a few teacher
samples) and are trained only through :mod:`gad.stages` (``seqkd``, ``warmup`` → ``train``,
``offpolicy``), the code paths real LLMs use. On held-out prompts we measure:

- **precision**: the teacher's log-likelihood of the student's samples (per token and per sequence;
  the reverse-KL side: ``E_student[log p_teacher]``);
- **coverage**: the student's log-likelihood of the teacher's samples (the forward-KL side);
- response length, and from ``metrics.jsonl`` the discriminator's accuracy and the reward.

Python API::

    from gad.synthetic import SyntheticConfig, run_synthetic
    results = run_synthetic(SyntheticConfig(out_dir="runs/synthetic"))
    results["methods"]["gad"]["final"]["precision_per_token"]
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gad.models import make_tiny_llama
from gad.plots import figure

OFF_ALPHABET_LOGPROB = math.log(1e-6)
"""Teacher log-prob charged for a student token outside the teacher's alphabet (a task or noise
word, a special token): the teacher never emits one, so its exact probability is 0; we charge a
finite floor and report how often it happens (``off_alphabet_rate``)."""
METHODS = ("seqkd", "gad", "offpolicy")


@dataclass
class SyntheticConfig:
    """Everything ``gad synthetic`` needs. Defaults reproduce ``docs/claims.md``."""

    out_dir: str | None = "runs/synthetic"
    """Where ``synthetic.json``, ``synthetic.png`` and the stages' run folders (``runs/``, replaced
    on every call) go; ``None`` = a temporary folder, deleted afterwards (tests, notebooks)."""
    seed: int = 0
    """Seeds the teacher, the prompts, the teacher set, the student's initialisation and training."""

    # --- the teacher -----------------------------------------------------------------------------
    vocab_size: int = 10
    """Symbols the teacher emits (``w0``…): its alphabet, plus the stop."""
    num_tasks: int = 4
    """Tasks a prompt can name; each has its own modes."""
    mode_weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    """Weights of each task's modes (normalised). Unequal, so that there is a main mode."""
    sharpness: float = 2.5
    """Scale of the random logits of the transition tables (start tables: twice that, so the first
    symbol mostly names the mode): higher = more deterministic modes."""
    min_length: int = 4
    """The teacher rarely stops before this many symbols (stop probability ``1e-3``)."""
    stop_prob: float = 0.2
    """Per-symbol stop probability from ``min_length`` on (a geometric tail: mean length ≈
    ``min_length + 1/stop_prob - 1``)."""
    max_length: int = 16
    """From this many symbols on the teacher stops with probability 0.999."""
    noise_words: int = 16
    """Prompts carry two of these irrelevant words after the task, so held-out prompts are new
    strings (their word pairs never occur in training) while the task stays learnable."""
    heldout_tasks: int = 0
    """The last this many tasks never occur in the init or teacher set: the held-out prompts all
    name one of them (out-of-distribution prompts). 0 = every split draws from every task."""
    task_sharing: float = 0.0
    """Fraction of the logits' variance that mode ``k`` of every task shares (0 = independent tasks):
    what a held-out task has in common with the training tasks."""

    # --- the data ----------------------------------------------------------------------------------
    init_samples: int = 64
    """Teacher samples (own prompts) for the "instruct" starting point every method shares."""
    teacher_set_size: int = 128
    """Training prompts, one teacher response each: the teacher set every method reads."""
    heldout_prompts: int = 64
    """Held-out prompts for the measurements."""
    eval_samples: int = 8
    """Student samples and teacher samples per held-out prompt."""

    # --- the student ---------------------------------------------------------------------------------
    hidden_size: int = 48
    """Width of the tiny Llama student (and of the discriminator, which shares its backbone)."""
    num_layers: int = 2
    """Transformer layers of the student."""
    init_steps: int = 100
    """SeqKD steps (batch ``batch_size``) on the ``init_samples`` from a random initialisation."""
    init_lr: float = 5e-3
    """Learning rate of that pre-training."""

    # --- the methods (the trainer's options, passed as overrides) --------------------------------------
    batch_size: int = 16
    """Prompts per step, every stage."""
    group_size: int = 8
    """Student samples per prompt (GRPO group, and D's pairs per teacher response)."""
    warmup_steps: int = 120
    """``gad warmup`` steps (the first ``disc_only_steps`` train D only)."""
    disc_only_steps: int = 10
    """Warmup steps that train only D, so it is not random when G starts learning."""
    gad_steps: int = 120
    """``gad train`` steps after the warmup; also the frozen-D GRPO steps of ``gad offpolicy``."""
    offpolicy_disc_steps: int = 10
    """``gad offpolicy``: D's extra steps on the frozen (warmed-up) student before it is frozen."""
    sft_lr: float = 5e-3
    """Generator learning rate of the likelihood stages, ``seqkd`` and ``warmup`` (the paper's 1e-6
    is for 7B models; a 50k-parameter student needs a large one)."""
    seqkd_lr: float | None = None
    """Learning rate of the SeqKD method alone; ``None`` = ``sft_lr``. The official scripts run
    SeqKD at 5x the warmup's lr (5e-6 against 1e-6)."""
    continue_warmup: bool = False
    """``gad train`` continues the warmup run (``train.init_state=all``: AdamW moments, schedules,
    step, data position, RNG), as the official scripts do; G then keeps the warmup's lr
    (``sft_lr``, restored with the optimizer) and ``rl_lr`` applies to ``offpolicy`` only."""
    sft_temperature: float = 1.0
    """``generator.sft_temperature`` of the ``seqkd`` and ``warmup`` stages (not of the shared start,
    an "instruct" model trained elsewhere): they fit ``softmax(logits / T)`` to the teacher's tokens."""
    rl_lr: float = 3e-4
    """Generator learning rate of the GRPO stages, ``train`` and ``offpolicy``: smaller than the
    discriminator's, so that D tracks the student (two time-scales)."""
    discriminator_lr: float = 3e-3
    """Discriminator learning rate."""
    kl_coef: float = 0.001
    """KL-to-reference coefficient (the paper's)."""
    temperature: float = 1.0
    """Sampling temperature, in training and for the measurements. 1.0, so that precision and
    coverage measure the student's own distribution, the one that training shapes."""
    max_new_tokens: int = 32
    """Student response budget, twice the teacher's ``max_length``: room for length drift."""
    eval_every: int = 20
    """Measure precision on held-out prompts every this many steps (checkpoints kept for it)."""
    late_evals: int = 4
    """``late`` in the results averages the last this many measurements of each method: single
    checkpoints of a tiny student trained at a large lr differ by up to ~0.85 nats/token in precision."""
    methods: tuple[str, ...] = METHODS
    """Which methods to run (``gad`` is warmup → train; ``offpolicy`` needs ``gad``'s warmup)."""
    plot: bool = True
    """Write ``synthetic.png`` (training curves) when ``out_dir`` is set."""
    extra_overrides: tuple[str, ...] = field(default_factory=tuple)
    """More trainer overrides for every stage (``section.key=value``), for experiments."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_tasks", "noise_words", "init_samples", "teacher_set_size",
                     "heldout_prompts", "eval_samples", "hidden_size", "num_layers", "batch_size",
                     "gad_steps", "warmup_steps", "eval_every", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ValueError("vocab_size must be at least 2: modes need symbols to differ on")
        if self.noise_words < 2:
            raise ValueError("noise_words must be at least 2 (a prompt carries a pair of them)")
        if not self.mode_weights or any(w <= 0 for w in self.mode_weights):
            raise ValueError(f"mode_weights must be positive, got {self.mode_weights}")
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2: advantages are normalised within a group")
        if not 0 < self.stop_prob < 1:
            raise ValueError(f"stop_prob must be in (0, 1), got {self.stop_prob}")
        if not 0 <= self.min_length < self.max_length:
            raise ValueError(f"need 0 <= min_length < max_length, got {self.min_length}, {self.max_length}")
        if not set(self.methods) <= set(METHODS) or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if "offpolicy" in self.methods and "gad" not in self.methods:
            raise ValueError("offpolicy continues gad's warmup: methods must include gad")
        if not 0 <= self.heldout_tasks < self.num_tasks:
            raise ValueError(f"need 0 <= heldout_tasks < num_tasks, got {self.heldout_tasks}, {self.num_tasks}")
        if not 0 <= self.task_sharing <= 1:
            raise ValueError(f"task_sharing must be in [0, 1], got {self.task_sharing}")
        if self.disc_only_steps >= self.warmup_steps:
            raise ValueError("disc_only_steps must be below warmup_steps, or G never warms up")
        per_task = self.noise_words * (self.noise_words - 1)
        seen = self.num_tasks - self.heldout_tasks
        if self.heldout_tasks:
            checks = [(self.init_samples + self.teacher_set_size, seen * per_task),
                      (self.heldout_prompts, self.heldout_tasks * per_task)]
        else:
            checks = [(self.init_samples + self.teacher_set_size + self.heldout_prompts, seen * per_task)]
        for need, pairs in checks:
            if need > pairs:
                raise ValueError(f"{need} distinct prompts asked for, only {pairs} exist; raise noise_words")


# ---------------------------------------------------------------------------------------------
# The teacher
# ---------------------------------------------------------------------------------------------


class MarkovMixtureTeacher:
    """``p(y | task) = Σ_k w_k · p_k(y_1) Π_t p_k(y_t | y_{t-1}) · Π_t (1 - s_t) · s_L``.

    ``y`` is a list of symbol indices; ``s_t`` is the stop probability after ``t`` symbols, the
    same for every mode, so it factors out of the mixture.
    """

    def __init__(self, cfg: SyntheticConfig, gen: torch.Generator) -> None:
        T, K, V = cfg.num_tasks, len(cfg.mode_weights), cfg.vocab_size
        w = torch.tensor(cfg.mode_weights, dtype=torch.float64)
        self.log_w = (w / w.sum()).log()  # (K,)
        # Start tables twice as sharp: the first symbol mostly names the mode.
        start = torch.randn(T, K, V, generator=gen, dtype=torch.float64)
        trans = torch.randn(T, K, V, V, generator=gen, dtype=torch.float64)
        if cfg.task_sharing > 0:  # mode k of every task shares part of its logits (drawn after, so 0 changes nothing)
            a, b = math.sqrt(cfg.task_sharing), math.sqrt(1 - cfg.task_sharing)
            start = a * torch.randn(1, K, V, generator=gen, dtype=torch.float64) + b * start
            trans = a * torch.randn(1, K, V, V, generator=gen, dtype=torch.float64) + b * trans
        self.log_start = torch.log_softmax(2 * cfg.sharpness * start, -1)
        self.log_trans = torch.log_softmax(cfg.sharpness * trans, -1)
        stop = torch.full((cfg.max_length + 1,), cfg.stop_prob, dtype=torch.float64)
        stop[: cfg.min_length] = 1e-3
        stop[cfg.max_length] = 0.999
        self.stop = stop  # (max_length + 1,): stop probability after t symbols, t capped
        self.cfg = cfg

    def _stop(self, t: int) -> float:
        return float(self.stop[min(t, self.cfg.max_length)])

    def sample(self, task: int, gen: torch.Generator) -> list[int]:
        k = int(torch.multinomial(self.log_w.exp(), 1, generator=gen))
        y: list[int] = []
        while not (y and torch.rand(1, generator=gen).item() < self._stop(len(y))):
            probs = (self.log_start[task, k] if not y else self.log_trans[task, k, y[-1]]).exp()
            y.append(int(torch.multinomial(probs, 1, generator=gen)))
        return y

    def log_prob(self, task: int, y: list[int], finished: bool = True) -> float:
        """Exact ``log p(y | task)``; ``finished=False`` for a prefix (no stop event at the end)."""
        if not y:
            return math.log(1e-300)  # the teacher always emits at least one symbol
        per_mode = self.log_w + self.log_start[task, :, y[0]]  # (K,)
        for prev, cur in zip(y, y[1:]):
            per_mode = per_mode + self.log_trans[task, :, prev, cur]
        lp = float(torch.logsumexp(per_mode, 0))
        lp += sum(math.log(1 - self._stop(t)) for t in range(1, len(y)))
        if finished:
            lp += math.log(self._stop(len(y)))
        return lp


# ---------------------------------------------------------------------------------------------
# Prompts, teacher sets, the student
# ---------------------------------------------------------------------------------------------


@dataclass
class Prompt:
    id: str
    task: int
    text: str  # the user turn, e.g. "t2 n5 n11"


def make_prompts(cfg: SyntheticConfig, gen: torch.Generator) -> dict[str, list[Prompt]]:
    """Distinct prompts for the init set, the teacher set and the held-out set (no string shared);
    with ``heldout_tasks``, the held-out prompts name only the tasks the other splits never name."""
    Z = cfg.noise_words
    combos = [(t, a, b) for t in range(cfg.num_tasks) for a in range(Z) for b in range(Z) if a != b]
    order = torch.randperm(len(combos), generator=gen).tolist()
    seen = cfg.num_tasks - cfg.heldout_tasks
    pools = {"seen": [combos[j] for j in order if not cfg.heldout_tasks or combos[j][0] < seen],
             "unseen": [combos[j] for j in order if combos[j][0] >= seen]}
    sizes = {"init": cfg.init_samples, "train": cfg.teacher_set_size, "heldout": cfg.heldout_prompts}
    out, pos = {}, {"seen": 0, "unseen": 0}
    for split, n in sizes.items():
        pool = "unseen" if split == "heldout" and cfg.heldout_tasks else "seen"
        out[split] = [Prompt(f"{split}-{i}", t, f"t{t} n{a} n{b}")
                      for i, (t, a, b) in enumerate(pools[pool][pos[pool] : pos[pool] + n])]
        pos[pool] += n
    return out


def symbols_text(y: list[int]) -> str:
    return " ".join(f"w{s}" for s in y)


def write_teacher_set(path: Path, prompts: list[Prompt], responses: list[list[int]]) -> Path:
    """The teacher set as an API teacher would have returned it: text only."""
    with path.open("w") as f:
        for p, y in zip(prompts, responses):
            row = {"id": p.id, "messages": [{"role": "user", "content": p.text}],
                   "teacher_response": symbols_text(y), "meta": {"teacher": "synthetic-markov-mixture"}}
            f.write(json.dumps(row) + "\n")
    return path


def make_student(out: Path, cfg: SyntheticConfig) -> Path:
    """A randomly initialised tiny Llama + word-level tokenizer over the synthetic vocabulary with a
    chat template (an HF folder)."""
    words = ([f"w{i}" for i in range(cfg.vocab_size)] + [f"t{i}" for i in range(cfg.num_tasks)]
             + [f"n{i}" for i in range(cfg.noise_words)])
    return make_tiny_llama(out, words, roles=("user", "assistant"), eos_after_message=False,
                           hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_kv_heads=4,
                           max_positions=max(64, cfg.max_new_tokens + 32), seed=cfg.seed)


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def decode_symbols(ids: list[int], tokenizer: Any, eos_id: int) -> tuple[list[int | None], bool]:
    """Student token ids → symbol indices (``None`` for a token outside the teacher's alphabet) and
    whether the response finished with EOS."""
    finished = bool(ids) and ids[-1] == eos_id
    out: list[int | None] = []
    for tok in tokenizer.convert_ids_to_tokens(ids[:-1] if finished else ids):
        out.append(int(tok[1:]) if tok.startswith("w") and tok[1:].isdigit() else None)
    return out, finished


def teacher_score(teacher: MarkovMixtureTeacher, task: int, symbols: list[int | None], finished: bool) -> float:
    """The teacher's log-likelihood of a student response; off-alphabet tokens are charged
    ``OFF_ALPHABET_LOGPROB`` each and dropped from the sequence (documented floor, not exact)."""
    valid = [s for s in symbols if s is not None]
    penalty = OFF_ALPHABET_LOGPROB * (len(symbols) - len(valid))
    return teacher.log_prob(task, valid, finished) + penalty


@torch.no_grad()
def evaluate_generator(
    generator_dir: str | Path, teacher: MarkovMixtureTeacher, prompts: list[Prompt],
    teacher_samples: list[list[list[int]]], cfg: SyntheticConfig, seed: int, coverage: bool = True,
) -> dict[str, float]:
    """Precision, coverage and length of one student on the held-out prompts.

    Per token = per response token *including* the stop/EOS, so a response of L symbols counts L+1.
    """
    from gad.batch import pack
    from gad.data import template_prompt
    from gad.models import load_causal_lm
    from gad.rollout import HFRollout
    from gad.trainer.steps import sequence_logprobs

    model, tok = load_causal_lm(str(generator_dir))
    model.eval()
    eos = tok.eos_token_id
    prompt_ids = [template_prompt(tok, [{"role": "user", "content": p.text}]) for p in prompts]
    engine = HFRollout(model, tok.pad_token_id, eos, cfg.max_new_tokens, cfg.temperature)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        samples = engine.generate(prompt_ids, cfg.eval_samples)  # grouped by prompt
    seq_lp, tokens, lengths, off, unfinished = [], 0, [], 0, 0
    for i, ids in enumerate(samples):
        symbols, finished = decode_symbols(ids, tok, eos)
        seq_lp.append(teacher_score(teacher, prompts[i // cfg.eval_samples].task, symbols, finished))
        tokens += len(ids)
        lengths.append(len(symbols))
        off += sum(s is None for s in symbols)
        unfinished += not finished
    out = {
        "precision_per_token": sum(seq_lp) / tokens,
        "precision_per_seq": sum(seq_lp) / len(seq_lp),
        "length_mean": sum(lengths) / len(lengths),
        "length_std": float(torch.tensor(lengths, dtype=torch.float64).std()),
        "truncation_rate": unfinished / len(samples),
        "off_alphabet_rate": off / max(1, sum(lengths)),
    }
    if coverage:
        responses = [tok(symbols_text(y), add_special_tokens=False)["input_ids"] + [eos]
                     for group in teacher_samples for y in group]
        seqs = pack([p for p in prompt_ids for _ in range(cfg.eval_samples)], responses, tok.pad_token_id, eos)
        lp, _ = sequence_logprobs(model, seqs, temperature=cfg.temperature)  # (B, R): the sampled distribution
        lp = lp * seqs.response_mask
        out["coverage_per_token"] = float(lp.sum() / seqs.response_mask.sum())
        out["coverage_per_seq"] = float(lp.sum(-1).mean())
    return out


def teacher_reference(teacher: MarkovMixtureTeacher, prompts: list[Prompt], samples: list[list[list[int]]]) -> dict[str, float]:
    """The teacher measured on its own samples: precision = coverage = minus its entropy rate."""
    lps = [teacher.log_prob(p.task, y) for p, group in zip(prompts, samples) for y in group]
    tokens = sum(len(y) + 1 for group in samples for y in group)
    lengths = [len(y) for group in samples for y in group]
    return {
        "precision_per_token": sum(lps) / tokens, "precision_per_seq": sum(lps) / len(lps),
        "coverage_per_token": sum(lps) / tokens, "coverage_per_seq": sum(lps) / len(lps),
        "length_mean": sum(lengths) / len(lengths),
        "length_std": float(torch.tensor(lengths, dtype=torch.float64).std()),
        "truncation_rate": 0.0, "off_alphabet_rate": 0.0,
    }


# ---------------------------------------------------------------------------------------------
# Running the methods through the trainer
# ---------------------------------------------------------------------------------------------


def _stage_overrides(cfg: SyntheticConfig, out: Path, teacher_file: Path, init_from: str | Path, steps: int,
                     keep_all: bool, lr: float, sft_temperature: float = 1.0) -> list[str]:
    return [
        f"data.train_file={teacher_file}", "data.max_prompt_length=16", f"data.max_response_length={cfg.max_new_tokens}",
        f"generator.model={init_from}", f"generator.lr={lr}", "generator.grad_clip=1.0",
        f"discriminator.lr={cfg.discriminator_lr}", "discriminator.grad_clip=1.0",
        f"rollout.n={cfg.group_size}", f"rollout.temperature={cfg.temperature}",
        f"rollout.max_new_tokens={cfg.max_new_tokens}", f"algorithm.kl_coef={cfg.kl_coef}",
        f"algorithm.disc_only_steps={cfg.disc_only_steps}",
        f"algorithm.disc_pretrain_steps={cfg.offpolicy_disc_steps}", f"generator.sft_temperature={sft_temperature}",
        f"train.output_dir={out}", f"train.batch_size={cfg.batch_size}",
        f"train.micro_batch_size={cfg.batch_size * (cfg.group_size + 1)}",
        f"train.max_steps={steps}", f"train.seed={cfg.seed}", "train.report_to=[]",
        f"train.save_every={cfg.eval_every if keep_all else steps}", f"train.keep_last={10_000 if keep_all else 1}",
        *cfg.extra_overrides,
    ]


def _run(stage: str, overrides: list[str], init_from: str | Path | None = None) -> Path:
    """One stage through :mod:`gad.stages`, exactly as ``gad STAGE`` would run it; returns the run folder."""
    from gad import stages
    from gad.config import load_config

    extra = [f"train.init_from={init_from}"] if init_from else []
    cfg = load_config(None, overrides + extra, stage=stage)
    return getattr(stages, stage)(cfg).run_dir


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    from gad.trainer.checkpoint import list_checkpoints

    return [(int(p.name.split("-")[1]), p / "generator") for p in list_checkpoints(run_dir / "checkpoints")]


def build_problem(
    cfg: SyntheticConfig,
) -> tuple[MarkovMixtureTeacher, dict[str, list[Prompt]], dict[str, list[list[int]]], list[list[list[int]]]]:
    """The teacher, the prompts of each split, one teacher response per prompt, and
    ``eval_samples`` teacher responses per held-out prompt: all a function of ``cfg.seed``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    teacher = MarkovMixtureTeacher(cfg, gen)
    prompts = make_prompts(cfg, gen)
    data = {split: [teacher.sample(p.task, gen) for p in ps] for split, ps in prompts.items()}
    heldout_teacher = [[teacher.sample(p.task, gen) for _ in range(cfg.eval_samples)] for p in prompts["heldout"]]
    return teacher, prompts, data, heldout_teacher


def run_synthetic(cfg: SyntheticConfig) -> dict[str, Any]:
    """Build the teacher and data, train every method through the trainer, measure; write outputs.

    Returns the dict written to ``synthetic.json``: ``config``; ``teacher`` (the teacher on its own
    samples: the best precision/coverage possible); ``init`` (the shared start); ``methods`` with,
    for ``seqkd``, ``gad`` and ``offpolicy``, ``final`` (precision/coverage per token and per
    sequence, length, truncation and off-alphabet rates on held-out prompts, last checkpoint),
    ``late`` (precision and length averaged over the last ``late_evals`` measurements), ``curve``
    (held-out measurements every ``eval_every`` steps, without coverage), ``metrics`` (reward, D
    accuracy, length… per step, from the stages' ``metrics.jsonl``), ``disc_accuracy_final`` and
    ``reward_trend`` (first/last 10 GRPO steps), ``teacher_samples_seen``; ``warmup`` (the warmup's
    last checkpoint, measured like ``final``: the student GAD starts from); ``seconds``. Only the
    methods in ``cfg.methods`` run and appear.

    Steps are counted on one axis: GAD's and the off-policy run's steps continue the warmup's (the
    off-policy run's first ``offpolicy_disc_steps`` after the warmup train only its D).
    """
    import tempfile

    from gad.trainer.tracking import read_metrics

    t0 = time.perf_counter()
    # One thread: for a model this small, intra-op threads only add synchronisation, and on a
    # shared machine two contending threads made every step ~10x slower (measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = None
    if cfg.out_dir is None:
        tmp = tempfile.mkdtemp(prefix="gad-synthetic-")
    out = Path(cfg.out_dir or tmp)
    runs = out / "runs"
    if runs.exists():  # a fresh run every time: the stages refuse folders that hold checkpoints
        shutil.rmtree(runs)
    runs.mkdir(parents=True)
    try:
        teacher, prompts, data, heldout_teacher = build_problem(cfg)
        init_file = write_teacher_set(runs / "init_teacher.jsonl", prompts["init"], data["init"])
        train_file = write_teacher_set(runs / "teacher.jsonl", prompts["train"], data["train"])

        def measure(generator_dir: Path, coverage: bool = True) -> dict[str, float]:
            # The same sampling seed for every checkpoint: differences are the students', not the dice's.
            return evaluate_generator(generator_dir, teacher, prompts["heldout"], heldout_teacher, cfg,
                                      seed=cfg.seed + 7, coverage=coverage)

        # The shared "instruct" start: a brief SeqKD from random weights on a few teacher samples.
        base = make_student(runs / "random-init", cfg)
        init_dir = _run("seqkd", _stage_overrides(cfg, runs / "init", init_file, base, cfg.init_steps, False, cfg.init_lr))
        init_gen = _checkpoints(init_dir)[-1][1]

        total = cfg.warmup_steps + cfg.gad_steps
        methods = [m for m in METHODS if m in cfg.methods]
        dirs: dict[str, Path] = {}
        if "seqkd" in methods:
            dirs["seqkd"] = _run("seqkd", _stage_overrides(cfg, runs / "seqkd", train_file, init_gen, total, True,
                                                           cfg.seqkd_lr or cfg.sft_lr, cfg.sft_temperature))
        if "gad" in methods:
            warm_dir = _run("warmup", _stage_overrides(cfg, runs / "warmup", train_file, init_gen, cfg.warmup_steps,
                                                       True, cfg.sft_lr, cfg.sft_temperature))
            if cfg.continue_warmup:  # the official way: the same run goes on; steps count from its start
                gad_over = _stage_overrides(cfg, runs / "gad", train_file, init_gen, total, True, cfg.sft_lr)
                dirs["gad"] = _run("train", [*gad_over, "train.init_state=all"], warm_dir)
            else:
                dirs["gad"] = _run("train", _stage_overrides(cfg, runs / "gad", train_file, init_gen, cfg.gad_steps,
                                                             True, cfg.rl_lr), warm_dir)
        off_steps = cfg.offpolicy_disc_steps + cfg.gad_steps
        if "offpolicy" in methods:
            dirs["offpolicy"] = _run("offpolicy", _stage_overrides(cfg, runs / "offpolicy", train_file, init_gen,
                                                                   off_steps, True, cfg.rl_lr), warm_dir)
        # Where each run's own step 0 sits on the shared axis (a continued run already counts from the warmup's).
        offsets = {"seqkd": 0, "gad": 0 if cfg.continue_warmup else cfg.warmup_steps, "offpolicy": cfg.warmup_steps}

        init_metrics = measure(init_gen)
        curves: dict[str, list[dict[str, float]]] = {m: [{"step": 0, **init_metrics}] for m in methods}
        if "seqkd" in methods:
            for step, g in _checkpoints(dirs["seqkd"]):
                curves["seqkd"].append({"step": step, **measure(g, coverage=False)})
        if "gad" in methods:
            warm_ckpts = _checkpoints(warm_dir)
            for step, g in warm_ckpts:
                row = {"step": step, **measure(g, coverage=False)}
                for m in ("gad", "offpolicy"):
                    if m in methods:
                        curves[m].append(row)  # both continue from the warmup
        for method in ("gad", "offpolicy"):
            if method not in methods:
                continue
            for step, g in _checkpoints(dirs[method]):
                if method == "offpolicy" and step <= cfg.offpolicy_disc_steps:
                    continue  # D-only steps: the generator has not moved
                curves[method].append({"step": offsets[method] + step, **measure(g, coverage=False)})

        def stage_metrics(run_dir: Path, offset: int) -> list[dict[str, float]]:
            return [{**m, "step": m["step"] + offset} for m in read_metrics(run_dir)]

        metrics = {m: stage_metrics(dirs[m], offsets[m]) for m in methods}
        if "gad" in methods:
            warm_m = stage_metrics(warm_dir, 0)
            metrics["gad"] = warm_m + metrics["gad"]
            if "offpolicy" in methods:
                metrics["offpolicy"] = warm_m + metrics["offpolicy"]
        finals = {m: _checkpoints(dirs[m])[-1][1] for m in methods}
        # Teacher responses read (with repetition) from the same teacher_set_size rows, per method.
        seen = {"seqkd": total, "gad": total, "offpolicy": cfg.warmup_steps + off_steps}
        results: dict[str, Any] = {
            "config": asdict(cfg),
            "teacher": teacher_reference(teacher, prompts["heldout"], heldout_teacher),
            "init": init_metrics,
            "methods": {
                m: {
                    "final": measure(finals[m]),
                    "late": late_means(curves[m], cfg.late_evals),
                    **trends(metrics[m]),
                    "curve": curves[m],
                    "metrics": [_keep(row) for row in metrics[m]],
                    "teacher_samples_seen": seen[m] * cfg.batch_size,
                }
                for m in methods
            },
            "teacher_set": {"unique_rows": cfg.teacher_set_size, "init_rows": cfg.init_samples},
        }
        if "gad" in methods:  # the student GAD starts from: the warmup's last checkpoint
            results["warmup"] = measure(warm_ckpts[-1][1])
        results["seconds"] = time.perf_counter() - t0
        if cfg.out_dir is not None:
            if cfg.plot and set(methods) == set(METHODS):
                plot_synthetic(results, out / "synthetic.png")
            results["seconds"] = time.perf_counter() - t0
            (out / "synthetic.json").write_text(json.dumps(results, indent=2) + "\n")
        return results
    finally:
        torch.set_num_threads(threads)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def late_means(curve: list[dict[str, float]], k: int) -> dict[str, float]:
    """Means of the last ``k`` held-out measurements: less noisy than one checkpoint."""
    rows = curve[-k:]
    keys = ("precision_per_token", "precision_per_seq", "length_mean", "off_alphabet_rate")
    return {key: sum(r[key] for r in rows) / len(rows) for key in keys} | {"steps": [r["step"] for r in rows]}


def trends(rows: list[dict[str, Any]], k: int = 10) -> dict[str, Any]:
    """D's final accuracy and the reward's first/last level over the GRPO steps (means of ``k`` steps)."""
    acc = [r["disc/accuracy"] for r in rows if "disc/accuracy" in r]
    reward = [r["reward/mean"] for r in rows if "reward/mean" in r]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "disc_accuracy_final": mean(acc[-k:]) if acc else None,
        "reward_trend": {"first": mean(reward[:k]), "last": mean(reward[-k:])} if reward else None,
    }


KEPT_METRICS = ("step", "reward/mean", "reward/group_std", "disc/accuracy", "disc/loss", "disc/margin",
                "policy/kl", "policy/entropy", "sft/nll", "gen/response_length_mean", "gen/truncation_rate")


def _keep(row: dict[str, Any]) -> dict[str, float]:
    return {k: row[k] for k in KEPT_METRICS if k in row}


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def plot_synthetic(results: dict[str, Any], path: Path) -> None:
    """Training curves: precision (held-out), reward, D's accuracy and response length per step."""
    colours = {"seqkd": "tab:blue", "gad": "tab:red", "offpolicy": "tab:purple"}
    labels = {"seqkd": "SeqKD", "gad": "GAD (warmup → train)", "offpolicy": "off-policy (frozen D)"}
    warm = results["config"]["warmup_steps"]
    with figure(path, 2, 2, figsize=(10, 6.4), dpi=80) as (fig, axes):
        ax = axes[0, 0]
        for m in METHODS:
            c = results["methods"][m]["curve"]
            ax.plot([r["step"] for r in c], [r["precision_per_token"] for r in c], "o-", ms=3, color=colours[m], label=labels[m])
        ax.axhline(results["teacher"]["precision_per_token"], color="black", ls=":", lw=1, label="teacher on its own samples")
        ax.set_title("precision: teacher log-lik per token of student samples (held-out)", fontsize=9)
        ax.legend(fontsize=7, frameon=False)

        def smooth(xs: list[float], k: int = 5) -> list[float]:
            return [sum(xs[max(0, i - k + 1) : i + 1]) / len(xs[max(0, i - k + 1) : i + 1]) for i in range(len(xs))]

        panels = [(axes[0, 1], "reward/mean", "reward = D's score of student samples, 5-step mean\n"
                                    "(GAD's D moves, so only the frozen D's level is comparable)", ("gad", "offpolicy")),
                  (axes[1, 0], "disc/accuracy", "D's accuracy (teacher scored above sample), 5-step mean", ("gad", "offpolicy")),
                  (axes[1, 1], "gen/response_length_mean", "student response length in training (tokens)", ("gad", "offpolicy"))]
        for ax, key, title, methods in panels:
            for m in methods:
                rows = [r for r in results["methods"][m]["metrics"] if key in r]
                ax.plot([r["step"] for r in rows], smooth([r[key] for r in rows]), color=colours[m], label=labels[m])
            ax.set_title(title, fontsize=9)
        c = results["methods"]["seqkd"]["curve"]
        axes[1, 1].plot([r["step"] for r in c], [r["length_mean"] + 1 for r in c], "o-", ms=3, color=colours["seqkd"],
                        label="SeqKD (held-out samples)")
        axes[1, 1].axhline(results["teacher"]["length_mean"] + 1, color="black", ls=":", lw=1, label="teacher")
        axes[1, 1].legend(fontsize=7, frameon=False)
        for ax in axes.flat:
            ax.axvline(warm, color="gray", lw=0.8, ls="--")
            ax.set_xlabel("step (dashed: end of warmup)", fontsize=8)
