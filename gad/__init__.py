"""gad: black-box on-policy distillation of LLMs with Generative Adversarial Distillation.

The Python API mirrors the CLI: build a config, call one function per stage.

    from gad import load_config, warmup, train
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Config", "load_config", "seqkd", "warmup", "train", "offpolicy"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import gad` (and `gad --help`) does not pay for torch.
    if name in ("seqkd", "warmup", "train", "offpolicy"):
        from gad import stages

        return getattr(stages, name)
    if name in ("Config", "load_config"):
        from gad import config

        return getattr(config, name)
    raise AttributeError(f"module 'gad' has no attribute {name!r}")
