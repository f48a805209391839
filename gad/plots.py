"""The one way gad draws a PNG: an off-screen matplotlib figure, laid out, saved and closed.

    with figure(path, 1, 3, figsize=(11, 3.2), sharey=True) as (fig, axes):
        axes[0].bar(...)

matplotlib is imported on first use, so importing a module that plots costs nothing until it does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def figure(path: str | os.PathLike, *grid: int, dpi: int = 100, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``plt.subplots(*grid, **subplots)`` on the Agg backend; on leaving the block the figure is laid
    out tight and written to ``path`` at ``dpi``. The figure is closed either way, so an error while
    drawing leaves no figure open and no file behind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*grid, **subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
