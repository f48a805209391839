"""LoRA adapters (peft) on a frozen backbone, several of them on one backbone if need be.

One backbone in memory can carry named adapters — ``gen`` (the generator), ``disc`` (the
discriminator, whose linear head lives outside the backbone), ``ref`` (a frozen copy of the adapter
a stage started from) — of which one is active at a time, or none (the backbone itself). A role is
an :class:`AdapterView`: calling it activates its adapter, then calls the model, so the trainer's
``generator(...)``, ``reference(...)`` and ``discriminator(...)`` calls read as in full fine-tuning.

Adapters are injected with ``peft.inject_adapter_in_model``: the model stays the transformers model
it was (``generate``, ``logits_to_keep``, gradient checkpointing behave as before), its linear layers
gain LoRA branches. Switching adapters in peft flips ``requires_grad``; :meth:`Adapters.activate`
puts the flags back as they were set (trainable adapters on, the base and frozen adapters off), and
optimizers own explicit parameter lists, never a ``requires_grad`` filter.

On disk a generator adapter is a standard peft folder (``adapter_config.json`` +
``adapter_model.safetensors``, base named in ``base_model_name_or_path``) that
``PeftModel.from_pretrained`` and vLLM's LoRA support read.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # how a peft adapter file names the weights of the model it wraps


def lora_config(r: int, alpha: float, dropout: float, target_modules: str) -> Any:
    """A ``peft.LoraConfig`` from gad's settings: ``alpha`` 0 = 2·r; ``target_modules`` ``all-linear``
    (every linear layer of the decoder blocks, not the output layer) or comma-separated names."""
    from peft import LoraConfig

    targets: Any = "all-linear" if target_modules == "all-linear" else [
        t.strip() for t in target_modules.split(",") if t.strip()]
    return LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout, target_modules=targets, bias="none")


def is_adapter_folder(path: str | Path) -> bool:
    """A peft adapter folder (as gad writes for a LoRA generator), not a whole model."""
    return (Path(path) / ADAPTER_CONFIG).exists()


def adapter_base(folder: str | Path) -> str:
    """The model an adapter folder was trained on (its ``base_model_name_or_path``)."""
    base = json.loads((Path(folder) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        from gad.errors import UserError

        raise UserError(f"{folder}: the adapter does not name its base model (base_model_name_or_path)")
    return str(base)


def read_adapter_config(folder: str | Path) -> Any:
    from peft import LoraConfig

    return LoraConfig.from_pretrained(str(folder))


def _adapter_key(name: str) -> re.Pattern[str]:
    """``...q_proj.lora_A.<name>.weight`` → group 1 = ``...q_proj.lora_A``, group 2 = ``.weight``."""
    return re.compile(rf"^(.*\.lora_[A-Za-z_]+)\.{re.escape(name)}((?:\..*)?)$")


class Adapters:
    """A frozen backbone ``model`` and the LoRA adapters injected into it, by name.

    ``base`` is where the backbone's weights came from (written into saved adapters).
    """

    def __init__(self, model: nn.Module, base: str):
        self.model = model.requires_grad_(False)
        self.base = base
        self.configs: dict[str, Any] = {}  # the settings each adapter was made with (before peft resolves them)
        self.trainable: dict[str, bool] = {}
        self._active: str | None | bool = False  # False: not known (set on the next activate)

    def add(self, name: str, config: Any, trainable: bool, weights: dict[str, torch.Tensor] | None = None,
            module: nn.Module | None = None) -> list[nn.Parameter]:
        """Inject adapter ``name`` (fresh: LoRA's B = 0, so the model is unchanged) and return its
        parameters; ``weights`` (keys as :meth:`state_dict` names them, relative to ``module``) load
        into it. The adapter's weights are kept in fp32 whatever the backbone's dtype."""
        from peft import inject_adapter_in_model

        self.configs[name] = copy.deepcopy(config)
        with warnings.catch_warnings():  # "multiple adapters in the model": that is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(copy.deepcopy(config), self.model, adapter_name=name)
        self.trainable[name] = trainable
        for p in self.params(name):
            p.data = p.data.float()
        if weights is not None:
            self.load_state_dict(name, weights, module)
        self._active = False
        self._set_flags()
        return self.params(name)

    def params(self, name: str, module: nn.Module | None = None) -> list[nn.Parameter]:
        """Adapter ``name``'s parameters, in a fixed order (an optimizer's list)."""
        pattern = _adapter_key(name)
        return [p for k, p in (module or self.model).named_parameters() if pattern.match(k)]

    def _set_flags(self) -> None:
        for name, trainable in self.trainable.items():
            for p in self.params(name):
                p.requires_grad_(trainable)

    def activate(self, name: str | None) -> None:
        """Make adapter ``name`` the one the model computes with; None = no adapter (the base model)."""
        if name == self._active:
            return
        from peft.tuners.tuners_utils import BaseTunerLayer

        for m in self.model.modules():
            if isinstance(m, BaseTunerLayer):
                if name is None:
                    m.enable_adapters(False)
                else:
                    m.enable_adapters(True)
                    m.set_adapter(name, inference_mode=True)
        self._set_flags()  # peft's switches flip requires_grad; the flags are ours
        self._active = name

    def state_dict(self, name: str, module: nn.Module | None = None, prefix: str = "") -> dict[str, torch.Tensor]:
        """Adapter ``name``'s weights keyed as peft saves them (``...lora_A.weight``), relative to ``module``."""
        pattern = _adapter_key(name)
        out = {}
        for k, p in (module or self.model).named_parameters():
            if m := pattern.match(k):
                out[prefix + m.group(1) + m.group(2)] = whole(p)
        return out

    def load_state_dict(self, name: str, state: dict[str, torch.Tensor], module: nn.Module | None = None,
                        prefix: str = "") -> None:
        """Load :meth:`state_dict`'s output into adapter ``name``; every key must match both ways."""
        pattern = _adapter_key(name)
        own = {prefix + m.group(1) + m.group(2): p for k, p in (module or self.model).named_parameters()
               if (m := pattern.match(k))}
        if set(own) != set(state):
            missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise ValueError(f"adapter {name!r}: weights do not match the model (missing {missing[:3]}, "
                             f"unexpected {extra[:3]}); were they made with other target_modules or another base?")
        with torch.no_grad():
            for k, p in own.items():
                if not p.is_meta:  # a shape-only model (FSDP2, rank > 0) receives its weights from rank 0
                    p.copy_(state[k].to(p.dtype))

    # -- files ----------------------------------------------------------------------------------

    def save_folder(self, name: str, folder: Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """Adapter ``name`` of a causal LM as a peft folder (``PeftModel.from_pretrained`` reads it);
        ``state``: its :meth:`state_dict` with ``prefix=PEFT_PREFIX``, gathered beforehand."""
        folder.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(self.configs[name])
        config.base_model_name_or_path = self.base
        config.task_type = "CAUSAL_LM"
        config.inference_mode = True
        config.save_pretrained(str(folder))
        state = state if state is not None else self.state_dict(name, prefix=PEFT_PREFIX)
        save_file(state, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})

    def add_from_folder(self, name: str, folder: str | Path, trainable: bool) -> list[nn.Parameter]:
        """Inject the adapter saved by :meth:`save_folder` in ``folder`` as ``name``."""
        config = read_adapter_config(folder)
        config.inference_mode = False
        weights = load_file(str(Path(folder) / ADAPTER_WEIGHTS))
        return self.add(name, config, trainable, {k.removeprefix(PEFT_PREFIX): v for k, v in weights.items()})


class AdapterView:
    """One role played by one adapter (or by the bare backbone, ``name=None``) of a shared model.

    Calling the view activates the adapter, then calls ``model``. ``frozen``: a role that never trains
    (the reference), computed in eval mode (no dropout) whatever mode the shared model is in.
    ``params``: what this role's optimizer owns.
    """

    def __init__(self, model: nn.Module, adapters: Adapters, name: str | None, params: list[nn.Parameter],
                 frozen: bool = False):
        self.model, self.adapters, self.name, self.params, self.frozen = model, adapters, name, params, frozen

    def activate(self) -> None:
        self.adapters.activate(self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.activate()
        if not self.frozen:
            return self.model(*args, **kwargs)
        was = self.model.training
        self.model.eval()
        try:
            return self.model(*args, **kwargs)
        finally:
            self.model.train(was)

    def train(self, mode: bool = True) -> AdapterView:
        self.model.train(mode)
        return self

    def eval(self) -> AdapterView:
        return self.train(False)

    def parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.params)

    @contextmanager
    def active(self) -> Iterator[None]:
        """The adapter stays active for the block (e.g. a ``generate`` call on the model itself)."""
        self.activate()
        yield


def whole(p: torch.Tensor) -> torch.Tensor:
    """A parameter's full value on the CPU; a sharded (FSDP2) one is gathered, so every process calls this."""
    full = p.full_tensor() if hasattr(p, "full_tensor") else p
    return full.detach().cpu().contiguous()


def merge_adapter(model: nn.Module, folder: str | Path) -> nn.Module:
    """``model`` (the adapter's base, loaded) with the adapter in ``folder`` merged into its weights:
    a plain transformers model, as ``PeftModel.merge_and_unload`` gives."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


LORA_META = "gad_lora"  # metadata key of a LoRA discriminator file: its adapter settings and base


def discriminator_state(disc: Any, adapters: Adapters, name: str = "disc") -> dict[str, torch.Tensor]:
    """A LoRA discriminator's adapter (keys relative to the backbone) and head, whole (every process
    calls this when they are sharded)."""
    state = adapters.state_dict(name, module=disc.backbone)
    state.update({f"head.{k}": whole(v) for k, v in disc.head.named_parameters()})
    return state


def save_discriminator(path: str | Path, disc: Any, adapters: Adapters, name: str = "disc",
                       state: dict[str, torch.Tensor] | None = None) -> None:
    """A LoRA discriminator as one safetensors file: :func:`discriminator_state` (or ``state``, its
    value gathered beforehand), with the backbone's config and base named in the metadata."""
    state = state if state is not None else discriminator_state(disc, adapters, name)
    config = adapters.configs[name]
    targets = config.target_modules
    meta = {"r": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            "target_modules": targets if isinstance(targets, str) else ",".join(sorted(targets)),
            "base": adapters.base}
    save_file(state, str(path), metadata={"format": "pt", "backbone_config": disc.config.to_json_string(),
                                          LORA_META: json.dumps(meta)})


def discriminator_lora_meta(path: str | Path) -> dict[str, Any] | None:
    """The adapter settings of a LoRA discriminator file; None for a whole (full fine-tuning) one."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[LORA_META]) if LORA_META in meta else None


def load_discriminator_weights(path: str | Path, disc: Any, adapters: Adapters, name: str = "disc") -> None:
    """Load a file written by :func:`save_discriminator` into ``disc`` (adapter ``name`` injected)."""
    state = load_file(str(path))
    head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    adapters.load_state_dict(name, {k: v for k, v in state.items() if not k.startswith("head.")}, module=disc.backbone)
    disc.head.load_state_dict(head)
