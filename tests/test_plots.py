"""gad.plots.figure: a PNG on success; on an error while drawing, no file and no figure left open."""

from __future__ import annotations

import pytest

from gad.plots import figure


def test_figure_writes_a_png_and_closes(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "a.png"
    with figure(path, 1, 2, figsize=(4, 2)) as (fig, axes):
        axes[0].plot([0, 1], [1, 0])
        assert len(axes) == 2
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()


def test_figure_leaves_nothing_behind_on_error(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "b.png"
    with pytest.raises(RuntimeError, match="while drawing"), figure(path) as (fig, _):
        raise RuntimeError("failed while drawing")
    assert not path.exists()
    assert fig.number not in plt.get_fignums()

