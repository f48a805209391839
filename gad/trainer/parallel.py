"""Processes: how many the launcher started, which share of a step each takes, and the few
collectives the step needs. The GAD step itself knows nothing of ranks; it asks :class:`World`.

``train.parallel``:

- ``none``: one process, as gad always ran. Launched as several, it stops before anything is read.
- ``ddp``: ``torch.nn.parallel.DistributedDataParallel``: every process holds whole models and
  gradients are averaged across processes after each backward pass.
- ``fsdp2``: ``torch.distributed.fsdp.fully_shard`` per decoder layer, then the root: parameters,
  gradients and optimizer state are split across processes; compute in bf16 when
  ``train.mixed_precision: bf16``, master weights and the gradient reduction in fp32.

Launch with ``torchrun`` or ``accelerate launch`` (configs in ``configs/accelerate/``): both give
each process ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` and start the same CLI; the process group is
NCCL on GPUs and gloo on CPU. A parallel mode in a single unlaunched process runs with a
one-process group, so its checkpoints and results are those of the same mode under K processes.

How K processes equal one: ``train.batch_size`` stays the global number of prompts; each
optimizer step's prompts (a mini-batch) are cut into K equal runs of whole prompt groups, one per
process. Every loss is normalised by a count over all processes (groups, tokens), and since
DDP/FSDP2 average gradients over the K processes, :meth:`World.backward` scales the loss by K to
make that average the global sum. Metrics are sums and weights reduced across processes; every
decision (skip an update, stop on NaN, stop on Ctrl-C) is taken on a value all processes share.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gad.errors import UserError

MODES = ("none", "ddp", "fsdp2")


class LaunchError(UserError):
    """A launch the trainer cannot honour (several processes with ``parallel: none``, a world size the
    process group does not see, a batch that does not split into whole groups per process)."""


def launched_world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``; 1 when not launched by one)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"WORLD_SIZE={value!r}: not a number of processes") from None


def require_one_process(stage: str, mode: str = "none") -> None:
    """Stop, in every process, when launched as several with ``parallel: none``: nothing is read or written first."""
    world = launched_world_size()
    if world > 1 and mode == "none":
        raise LaunchError(
            f"launched as {world} processes (WORLD_SIZE={world}), but train.parallel is 'none': each process "
            f"would train on the same batches and write into the same run folder. Set train.parallel=ddp "
            f"(whole models in each process) or train.parallel=fsdp2 (sharded), or run `gad {stage}` as one "
            "process without torchrun / accelerate launch"
        )


@dataclass
class World:
    """This process's place among the K: its rank, the device it computes on, and the collectives."""

    mode: str = "none"
    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    owns_group: bool = False  # this World created the process group (and destroys it at close)
    mesh: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.mode != "none"

    @property
    def reads_weights(self) -> bool:
        """Whether this process reads model weights from disk. Under FSDP2 with several processes only
        rank 0 does; the others build each model's shape on the meta device and receive their shards
        from rank 0 when it is sharded, so host memory does not grow with K."""
        return not (self.mode == "fsdp2" and self.rank > 0)

    # -- the data split ----------------------------------------------------------------------

    def check_batch(self, batch_size: int, mini_batch_size: int) -> None:
        if batch_size % self.size or mini_batch_size % self.size:
            raise LaunchError(
                f"train.batch_size {batch_size} (mini-batch {mini_batch_size} prompts) does not split into "
                f"whole prompt groups over {self.size} processes: use a multiple of {self.size}"
            )

    def share(self, items: list[Any], mini_batch_size: int) -> list[Any]:
        """This process's part of a step's prompts: of each mini-batch (one optimizer step), the
        ``rank``-th of K equal runs, so every optimizer step sees the same prompts as in one process."""
        part = mini_batch_size // self.size
        return [x for start in range(0, len(items), mini_batch_size)
                for x in items[start + self.rank * part : start + (self.rank + 1) * part]]

    # -- collectives (no-ops in one process) -----------------------------------------------------

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return values
        out = values.detach().to(self._comm_device, torch.float64).clone()
        dist.all_reduce(out)
        return out.to(values.device, values.dtype)

    def total(self, value: float) -> float:
        """A count summed over all processes (e.g. the tokens of a mini-batch: a loss normaliser)."""
        return float(self.sum(torch.tensor([value], dtype=torch.float64))[0]) if self.size > 1 else value

    def max(self, values: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return values
        out = values.detach().to(self._comm_device, torch.float64).clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return out.to(values.device, values.dtype)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Every process's ``values`` (same shape everywhere), concatenated in rank order along dim 0."""
        if self.size == 1:
            return values
        parts = [torch.empty_like(values, device=self._comm_device) for _ in range(self.size)]
        dist.all_gather(parts, values.detach().to(self._comm_device).contiguous())
        return torch.cat(parts).to(values.device)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (small picklable values made in this run, e.g. texts), in rank order."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on one: a decision all processes take together."""
        return bool(self.max(torch.tensor([float(flag)]))[0]) if self.size > 1 else flag

    def all(self, flag: bool) -> bool:
        return not self.any(not flag)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (small picklable values made in this run, e.g. a temp name)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean_metrics(self, sums: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
        """Weighted means over all processes' micro-batches (keys sorted: the same order everywhere)."""
        keys = sorted(sums)
        if self.size > 1:
            packed = self.sum(torch.tensor([[sums[k], weights[k]] for k in keys], dtype=torch.float64).view(-1, 2))
            sums = {k: float(packed[i, 0]) for i, k in enumerate(keys)}
            weights = {k: float(packed[i, 1]) for i, k in enumerate(keys)}
        return {k: sums[k] / max(weights[k], 1e-12) for k in keys}

    def backward(self, loss: torch.Tensor, model: nn.Module, last: bool = True) -> None:
        """Back-propagate a loss normalised by global counts: DDP/FSDP2 average gradients over the K
        processes, so the loss is scaled by K to make the average the sum over all processes.

        Under DDP the gradients are all-reduced once, with the last micro-batch of an optimizer step
        (``no_sync`` before it). FSDP2 reduce-scatters every micro-batch's gradients as they come,
        which keeps only 1/K of them in memory.
        """
        scaled = loss * self.size if self.size > 1 else loss
        wrapped = hasattr(model, "no_sync")  # DDP; LoRA models are not wrapped (see prepare_adapters)
        with model.no_sync() if self.mode == "ddp" and wrapped and not last else contextlib.nullcontext():
            scaled.backward()
        if self.mode == "ddp" and not wrapped and last:
            self.average_gradients(list(model.parameters()))

    def average_gradients(self, params: list[nn.Parameter], bucket: int = 2**26) -> None:
        """DDP's all-reduce for parameters no DDP wrapper owns (LoRA adapters and D's head): each
        gradient becomes the mean over processes, packed into flat buckets of ``bucket`` elements."""
        if self.size == 1:
            return
        for p in params:  # a parameter this process's micro-batches did not reach still takes part
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        start = 0
        while start < len(grads):
            end, n = start, 0
            while end < len(grads) and (end == start or n + grads[end].numel() <= bucket):
                n += grads[end].numel()
                end += 1
            flat = torch.cat([g.reshape(-1) for g in grads[start:end]]).to(self._comm_device)
            dist.all_reduce(flat)
            flat /= self.size
            offset = 0
            for g in grads[start:end]:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            start = end

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # -- models ------------------------------------------------------------------------------

    def prepare_trainable(self, model: nn.Module, mixed_precision: str) -> nn.Module:
        """Place a model that trains: on the device, then wrapped (DDP) or sharded (FSDP2)."""
        if self.reads_weights:  # a model on the meta device gets its memory when sharded
            model.to(self.device)
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.mode == "fsdp2":
            self._shard(model, mixed_precision)
        return model

    def prepare_frozen(self, model: nn.Module, mixed_precision: str) -> nn.Module:
        """Place a model that never trains (the reference): replicated under DDP, sharded under FSDP2."""
        if self.reads_weights:
            model.to(self.device)
        if self.mode == "fsdp2":
            self._shard(model, mixed_precision)
        return model

    def prepare_adapters(self, model: nn.Module, mixed_precision: str, decoder_called_alone: bool = False) -> nn.Module:
        """Place a model whose trainable parameters are LoRA adapters (and a discriminator's head) on
        a frozen backbone. Under DDP it is not wrapped: a shared backbone serves two roles, each
        calling a different part of it with its own optimizer, which one DDP wrapper cannot follow;
        the trainable parameters are broadcast from rank 0 here (fresh adapters start equal) and
        :meth:`backward` averages their gradients. Under FSDP2 it is sharded like any model (frozen
        bf16 base and fp32 adapters in the same units, one mixed-precision policy);
        ``decoder_called_alone``: the causal LM whose decoder the shared discriminator calls directly."""
        if self.reads_weights:
            model.to(self.device)
        if self.mode == "ddp" and self.size > 1:
            for p in model.parameters():
                if p.requires_grad:
                    dist.broadcast(p.data, src=0)
        if self.mode == "fsdp2":
            self._shard(model, mixed_precision, decoder_called_alone)
        return model

    def _shard(self, model: nn.Module, mixed_precision: str, decoder_called_alone: bool = False) -> None:
        """``fully_shard`` each decoder layer, then the root; with several processes, rank 0's weights
        (the only ones read) are then broadcast into every process's shards.

        ``decoder_called_alone``: the decoder (``model.base_model``) is also run without the root (the
        shared-base discriminator), so it is a unit of its own, the embedding and the LM head (tied or
        not) one unit between them, and one forward through the root makes it FSDP2's root."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if mixed_precision == "bf16" else None, reduce_dtype=torch.float32
        )
        full = model.state_dict() if self.is_main and self.size > 1 else {}  # rank 0's weights, not copied
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=self.mesh, mp_policy=policy)
        if decoder_called_alone:
            ends = [m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
            fully_shard(ends, mesh=self.mesh, mp_policy=policy)
            fully_shard(model.base_model, mesh=self.mesh, mp_policy=policy)
        fully_shard(model, mesh=self.mesh, mp_policy=policy)
        if self.size > 1:
            if not self.reads_weights:
                model.to_empty(device=self.device)  # meta → uninitialised memory for this process's shards
            set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
            for buffer in model.buffers():  # not sharded, and some are not in the state dict (rotary frequencies)
                dist.broadcast(buffer.data, src=0)
        if decoder_called_alone:  # FSDP2 takes the first module run as the root of all the units below it
            with torch.no_grad():
                model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=self.device))

    def clip_grad_norm(self, params: list[nn.Parameter], max_norm: float) -> float:
        """Clip to a norm over all of ``params`` (all shards, under FSDP2); returns the norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        return float(norm)

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole model's state on rank 0's CPU (collective under FSDP2); None in one process,
        where the model saves itself."""
        if self.mode == "none":
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        # A tied parameter (the LM head sharing the embedding) is gathered once per name, as separate
        # copies; keep its first name only, as the model's own save_pretrained would.
        seen: set[int] = set()
        for name, param in unwrap(model).named_parameters(remove_duplicate=False):
            if id(param) in seen:
                state.pop(name, None)
            seen.add(id(param))
        return state

    @contextlib.contextmanager
    def generation(self, model: nn.Module) -> Iterator[None]:
        """Whole parameters for the length of a ``generate`` call. Under FSDP2 every shard is gathered
        once and kept until the call ends, so processes that decode a different number of tokens run no
        collective in between (a per-forward all-gather would hang when one finishes first)."""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)] if self.mode == "fsdp2" else []
        for m in units:
            m.set_reshard_after_forward(False)
            m.unshard()
        try:
            yield
        finally:
            for m in units:
                m.reshard()
                m.set_reshard_after_forward(True)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


ONE_PROCESS = World()


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks a model names as not to be split (transformers' ``_no_split_modules``)."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself: DDP's ``.module``; a sharded model is its own (FSDP2 wraps in place)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def setup(mode: str, stage: str) -> World:
    """The world this process trains in, with the process group up when ``mode`` is not ``none``.

    Every process calls this first: a launch the config cannot honour stops in all of them before
    anything is read or written.
    """
    if mode not in MODES:
        raise LaunchError(f"train.parallel: must be one of {', '.join(MODES)}, got {mode!r}")
    require_one_process(stage, mode)
    if mode == "none":
        return World()
    size = launched_world_size()
    cuda = torch.cuda.is_available()
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if "MASTER_ADDR" in os.environ and "RANK" in os.environ:
            dist.init_process_group(backend)
        elif size == 1:  # not launched: a one-process group, so the mode runs as it would under K
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            raise LaunchError(f"WORLD_SIZE={size} but no RANK/MASTER_ADDR: launch with torchrun or accelerate launch")
        owns = True
    if dist.get_world_size() != size:
        seen = dist.get_world_size()
        if owns:
            dist.destroy_process_group()
        raise LaunchError(
            f"the launcher started {size} processes (WORLD_SIZE) but the process group has {seen}: "
            "launch with torchrun --nproc_per_node K or accelerate launch --num_processes K (not --cpu, "
            "which starts one process)"
        )
    rank = dist.get_rank()
    device = torch.device("cpu")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (size,)) if mode == "fsdp2" else None
    return World(mode=mode, rank=rank, size=size, device=device, owns_group=owns, mesh=mesh)

