"""Server mode: rollouts from a separate vLLM server (``vllm serve``, on other GPUs), new weights
pushed to it after every generator update through vLLM's weight-transfer interface.

Generation uses the server's OpenAI-compatible ``/v1/completions`` with token-id prompts and its
``return_token_ids`` extension: token ids in, token ids out, as every rollout engine
(``gad.rollout``). Every sampling field is sent explicitly (temperature, top-p, no top-k, no min-p,
no penalties, stop at the student's EOS only), so the server's defaults (a checkpoint's
``generation_config.json``) never change the distribution the loss assumes.

Weights go through vLLM's RL routes (``/init_weight_transfer_engine``, ``/start_weight_update``,
``/update_weights``, ``/finish_weight_update``) driven by vLLM's own trainer-side engines: ``"nccl"``
(the default, GPU to GPU: the server joins an NCCL group with the trainer and receives a broadcast)
or gad's ``"gad_http"`` (``gad.rollout.vllm_transfer``: the weights inside the requests; CPU servers and
tests). The prefix cache is reset after each push (``/reset_prefix_cache``). vLLM 0.32 serves those
routes only with ``VLLM_SERVER_DEV_MODE=1``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

import torch

DEFAULT_TIMEOUT = 600.0


class ServerError(RuntimeError):
    """The vLLM server refused a request or could not be reached."""


class HTTPClient:
    """JSON over HTTP to one vLLM server; also vLLM's ``VLLMWeightSyncClient`` (its four
    weight-sync methods), which vLLM's trainer-side engines drive."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT):
        self.url, self.timeout = url.rstrip("/"), timeout

    def request(self, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            hint = (" (the weight-transfer routes need the server started with VLLM_SERVER_DEV_MODE=1)"
                    if e.code == 404 else "")
            raise ServerError(f"vLLM server {self.url}{path}: HTTP {e.code}: {detail}{hint}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ServerError(f"vLLM server {self.url}{path}: {getattr(e, 'reason', e)}") from None
        return json.loads(raw) if raw else None

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self.request("/init_weight_transfer_engine", {"init_info": init_info})

    def start_weight_update(self) -> None:
        self.request("/start_weight_update")

    def update_weights(self, update_info: dict[str, Any] | list[dict[str, Any]]) -> None:
        self.request("/update_weights", {"update_info": update_info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.request("/finish_weight_update", None if weight_version is None else {"weight_version": weight_version})

    def reset_prefix_cache(self) -> None:
        self.request("/reset_prefix_cache")


def sampling_fields(temperature: float, top_p: float, eos_id: int, max_new_tokens: int,
                    vocab_size: int | None) -> dict[str, Any]:
    """The request's sampling fields, all explicit: a server default never applies.

    ``ignore_eos`` turns off the stop at the server tokenizer's EOS; ``stop_token_ids`` then stops at
    the student's EOS only (and keeps it in the output). ``allowed_token_ids`` only when the caller
    passes ``vocab_size`` (the tokenizer is shorter than the model's output layer): ids past the
    tokenizer are never sampled.
    """
    fields: dict[str, Any] = {
        "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0,
        "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "min_tokens": 0, "ignore_eos": True, "stop_token_ids": [eos_id],
        "stop": [], "skip_special_tokens": False, "return_token_ids": True,
    }
    if vocab_size is not None:
        fields["allowed_token_ids"] = list(range(vocab_size))
    return fields


def group_choices(choices: list[dict[str, Any]], n_prompts: int, n: int) -> list[list[int]]:
    """The response's samples as token lists grouped by prompt (vLLM indexes choice ``i * n + j`` for
    sample ``j`` of prompt ``i``)."""
    by_index = {c["index"]: c for c in choices}
    if sorted(by_index) != list(range(n_prompts * n)):
        raise ServerError(f"vLLM server returned choices {sorted(by_index)[:8]}..., expected {n_prompts * n}")
    out = []
    for i in range(n_prompts * n):
        ids = by_index[i].get("token_ids")
        if ids is None:
            raise ServerError("vLLM server returned no token_ids: it needs vLLM's return_token_ids extension (vLLM >= 0.10.2)")
        out.append(list(ids))
    return out


class ListSource:
    """A ``WeightSource`` (vLLM's trainer-side weight stream) over the weights of one push."""

    def __init__(self) -> None:
        self.weights: list[tuple[str, torch.Tensor]] = []

    def metadata(self) -> list[Any]:
        from vllm.distributed.weight_transfer.base import ParamMeta

        return [ParamMeta(name, t.dtype, tuple(t.shape)) for name, t in self.weights]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        from vllm.distributed.weight_transfer.base import materialize_full_tensor

        for name, t in self.weights:
            yield name, materialize_full_tensor(t.detach())


class VLLMServerRollout:
    """Rollouts from a running vLLM server at ``url`` (``http://host:port``).

    ``generate(prompts, n)``: ``n`` samples of each prompt, grouped by prompt, each ending with
    ``eos_id`` unless it hit ``max_new_tokens``; ``temperature=0`` decodes greedily.
    ``vocab_size``: the tokenizer's length, when it is shorter than the model's output layer.
    ``model``: the served model name (default: the server's first).

    ``push_weights(weights)`` sends full HF-named weights to the server through vLLM's
    weight-transfer interface and then resets its prefix cache. ``weight_transfer``: ``"nccl"``
    (production: trainer and server GPUs in one NCCL group; the server started with
    ``--weight-transfer-config '{"backend": "nccl"}'``; ``nccl_address`` is this machine's address as
    the server reaches it, ``nccl_port`` a free port there, ``server_world_size`` the server's
    TP × PP × DP) or ``"gad_http"`` (``gad.rollout.vllm_transfer``; the weights in the requests, in
    ``bucket_bytes`` buckets). ``rank``: this trainer process's rank; rank 0 sends, every rank calls
    ``push_weights`` (FSDP gathers are collectives).
    """

    def __init__(
        self, url: str, eos_id: int, max_new_tokens: int, temperature: float = 0.8, top_p: float = 1.0, *,
        vocab_size: int | None = None, timeout: float = DEFAULT_TIMEOUT, model: str | None = None,
        weight_transfer: str = "nccl", nccl_address: str | None = None, nccl_port: int | None = None,
        server_world_size: int = 1, bucket_bytes: int = 64 << 20, rank: int = 0,
    ):
        if weight_transfer not in ("nccl", "gad_http"):
            raise ValueError(f"weight_transfer: {weight_transfer!r} is not one of 'nccl', 'gad_http'")
        self.client = HTTPClient(url, timeout)
        self.eos_id, self.max_new_tokens = eos_id, max_new_tokens
        self.temperature, self.top_p, self.vocab_size = temperature, top_p, vocab_size
        self._model = model
        self.weight_transfer, self.nccl_address, self.nccl_port = weight_transfer, nccl_address, nccl_port
        self.server_world_size, self.bucket_bytes, self.rank = server_world_size, bucket_bytes, rank
        self._source = ListSource()
        self._sender: Any = None  # vLLM's trainer-side engine, made at the first push

    @property
    def model(self) -> str:
        if self._model is None:
            models = self.client.request("/v1/models", method="GET")["data"]
            if not models:
                raise ServerError(f"vLLM server {self.client.url} serves no model")
            self._model = models[0]["id"]
        return self._model

    def greedy(self, max_new_tokens: int = 0) -> VLLMServerRollout:
        """The same server decoding greedily, with its own token budget (0 = this one's). Weights are
        pushed through the engine that trains, not this one."""
        return VLLMServerRollout(
            self.client.url, self.eos_id, max_new_tokens or self.max_new_tokens, 0.0, vocab_size=self.vocab_size,
            timeout=self.client.timeout, model=self._model,
        )

    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        if not prompts:
            return []
        if self.temperature > 0:
            body_prompts, body_n = prompts, n
        else:  # vLLM refuses n > 1 when greedy: repeat each prompt instead (same output each time)
            body_prompts, body_n = [p for p in prompts for _ in range(n)], 1
        body = {"model": self.model, "prompt": body_prompts, "n": body_n,
                **sampling_fields(self.temperature, self.top_p, self.eos_id, self.max_new_tokens, self.vocab_size)}
        response = self.client.request("/v1/completions", body)
        return group_choices(response["choices"], len(body_prompts), body_n)

    def push_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Send ``weights`` (HF names, full tensors or FSDP DTensors) to the server, then reset its prefix cache."""
        self._source.weights = list(weights)
        try:
            if self._sender is None:
                self._sender = self._connect()
            self._sender.send_weights()
        finally:
            self._source.weights = []
        if self.rank == 0:
            self.client.reset_prefix_cache()

    def _connect(self) -> Any:
        """vLLM's trainer-side engine for the chosen backend, after its handshake with the server."""
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

        from gad.rollout import vllm_transfer

        vllm_transfer.register()
        if self.weight_transfer == "gad_http":
            info: Any = vllm_transfer.HTTPTrainerInitInfo(rank=self.rank, bucket_bytes=self.bucket_bytes)
        else:
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo
            from vllm.utils.network_utils import get_ip, get_open_port

            info = NCCLTrainerInitInfo(
                rank=self.rank, master_address=self.nccl_address or get_ip(), master_port=self.nccl_port or get_open_port(),
                world_size=1 + self.server_world_size,
            )
        return WeightTransferTrainerFactory.trainer_init(info, client=self.client, source=self._source)


class PolicyServerRollout:
    """Server rollouts of the live policy: its weights pushed before a rollout whenever they changed
    (``sync``: a :class:`gad.rollout.vllm_engine.WeightSync` whose push is the server's
    ``push_weights``), shared with the greedy view used for validation."""

    def __init__(self, server: VLLMServerRollout, sync: Any):
        self.server, self.sync = server, sync

    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        self.sync.ensure()
        return self.server.generate(prompts, n)

    def greedy(self, max_new_tokens: int = 0) -> PolicyServerRollout:
        return PolicyServerRollout(self.server.greedy(max_new_tokens), self.sync)
