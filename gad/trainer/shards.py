"""Sharded model and optimizer state, written by every process with ``torch.distributed.checkpoint``
(DCP) and read back under any number of processes (DCP reshards on load), or in one process.

DCP's own reader unpickles its ``.metadata`` file and every non-tensor item, so a checkpoint
from elsewhere could run code on load. Here the metadata goes through an unpickler that builds only
DCP's metadata classes and a few torch/pathlib types, and non-tensor items (the optimizer's
hyper-parameters) load with ``torch.load(weights_only=True)``; tensors already do.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from gad.errors import UserError

# What a DCP .metadata file may contain, and nothing else.
_ALLOWED = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "ChunkStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "WindowsPath", "Path"},
    "collections": {"OrderedDict"},
}


class UnsafeCheckpointError(UserError):
    """A checkpoint's metadata names something other than DCP's own record types."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()) or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise UnsafeCheckpointError(f"checkpoint metadata refers to {module}.{name}: not a DCP record; not loaded")


class SafeReader(dcp.FileSystemReader):
    """DCP's file reader with the metadata read by :class:`_MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise UnsafeCheckpointError(f"{path}: not DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """Non-tensor items (an optimizer's lr, betas, …) with ``weights_only=True``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._nested_dict import set_element

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


# Frozen weights (a LoRA model's backbone) are read from where they came from, not checkpointed;
# ``strict=False`` lets them be absent from what is set back. Every trainable key is still required:
# ``dcp.load`` fails on one the checkpoint lacks.
OPTIONS = StateDictOptions(ignore_frozen_params=True, strict=False)


def _state(models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    out = {}
    for name, model in models.items():
        model_sd, optim_sd = get_state_dict(model, optimizers[name], options=OPTIONS)
        out[name] = {"model": model_sd, "optim": optim_sd}
    return out


def save(folder: Path, models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Every process writes its shards of each model and its optimizer into ``folder`` (a collective)."""
    dcp.save(_state(models, optimizers), storage_writer=dcp.FileSystemWriter(str(folder)))


def load(folder: Path, models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Load ``save``'s state into the placed models and their optimizers, resharded to this run's
    processes (a collective; in one process it needs no process group)."""
    state = _state(models, optimizers)
    dcp.load(state, storage_reader=SafeReader(str(folder)), planner=SafeLoadPlanner())
    for name, model in models.items():
        set_state_dict(model, optimizers[name], model_state_dict=state[name]["model"],
                       optim_state_dict=state[name]["optim"], options=OPTIONS)
