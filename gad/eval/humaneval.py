"""Human evaluation: a blind pairwise comparison page, and the scoring of what raters export from it.

:func:`build_page` pairs the cached generations of two models (folders in the
:mod:`gad.eval.generations` format) by ``(set, id)`` and writes one self-contained HTML file: no
network, no external scripts. For each item a seeded coin decides which model's response is shown
as "Response 1" (left); the rater picks left / tie / right. Judgments stay in the browser's
localStorage, so closing the tab loses nothing, and are exported as JSON (a download, or text to
copy)::

    {"format": "gad-humaneval-results", "version": 1, "page_id": "...", "a": "NAME_A", "b": "NAME_B",
     "seed": 0, "rater": "...", "n_items": 80,
     "judgments": [{"set": "vicuna80", "id": "1", "left": "a", "choice": "left", "at": "..."}]}

``left`` says which model was shown on the left, so :func:`score_results` can undo the shuffle:
``choice == "left"`` is a win for the model in ``left``.

Blindness is to the screen: model names and the side assignment are in the page's source for the
scorer's sake, so raters should not be the people reading it.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from gad.errors import UserError
from gad.eval.generations import read_generations
from gad.stats import binomial_two_sided_p, wilson_interval
from gad.textfile import read_text

RESULTS_FORMAT = "gad-humaneval-results"
CHOICES = ("left", "right", "tie")



class HumanEvalError(UserError, ValueError):
    """Two generation folders that cannot be compared on one page."""


class ExportError(HumanEvalError):
    """Exports that cannot be read or scored together; the message names the file or judgment."""

def side_of_a(seed: int, set_name: str, item_id: str) -> str:
    """``"left"`` or ``"right"``: where model A's response goes for this item.

    A hash of ``(seed, set, id)`` rather than a running RNG, so an item keeps its sides when the
    page is rebuilt with more or fewer items.
    """
    digest = hashlib.sha256(f"{seed}\x00{set_name}\x00{item_id}".encode()).digest()
    return "left" if digest[0] & 1 else "right"


def page_data(
    dir_a: str | os.PathLike,
    dir_b: str | os.PathLike,
    *,
    name_a: str | None = None,
    name_b: str | None = None,
    sets: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    title: str = "Which response is better?",
) -> dict[str, Any]:
    """The JSON the page embeds: items present in both folders, in A's order, sides shuffled.

    Raises :class:`HumanEvalError` when the two folders share no item, or an item's prompts differ.
    """
    gens_a, gens_b = read_generations(dir_a), read_generations(dir_b)
    name_a = name_a or Path(dir_a).name or str(dir_a)
    name_b = name_b or Path(dir_b).name or str(dir_b)
    items = []
    for key, ga in gens_a.items():
        if key not in gens_b or (sets and ga.set not in sets):
            continue
        gb = gens_b[key]
        if ga.messages != gb.messages:
            raise HumanEvalError(
                f"item {key}: the two folders asked different prompts; compare generations of one set"
            )
        a_left = side_of_a(seed, ga.set, ga.id) == "left"
        items.append(
            {
                "set": ga.set,
                "id": ga.id,
                "messages": ga.messages,
                "left": "a" if a_left else "b",
                "responses": [ga.response, gb.response] if a_left else [gb.response, ga.response],
            }
        )
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise HumanEvalError(
            f"{dir_a} and {dir_b} have no (set, id) in common" + (f" in sets {list(sets)}" if sets else "")
        )
    digest = hashlib.sha256(json.dumps([name_a, name_b, seed, items], sort_keys=True).encode()).hexdigest()
    return {
        "format": "gad-humaneval-page",
        "version": 1,
        "page_id": digest[:16],
        "title": title,
        "a": name_a,
        "b": name_b,
        "seed": seed,
        "items": items,
    }


def render_page(data: dict[str, Any]) -> str:
    """The HTML page for :func:`page_data`'s output."""
    template = resources.files("gad").joinpath("resources/humaneval.html").read_text(encoding="utf-8")
    # JSON inside <script>: escape what could close the element or confuse the HTML parser.
    payload = (
        json.dumps(data, ensure_ascii=False)
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return template.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)


def build_page(dir_a: str | os.PathLike, dir_b: str | os.PathLike, out: str | os.PathLike, **kwargs) -> Path:
    """Writes the comparison page to ``out`` (see :func:`page_data` for the options); returns its path."""
    data = page_data(dir_a, dir_b, **kwargs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(data), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95% Wilson interval."""

    count: int
    n: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.count / self.n if self.n else float("nan")

    @classmethod
    def of(cls, count: int, n: int) -> Rate:
        low, high = wilson_interval(count, n)
        return cls(count, n, low, high)

    def to_dict(self) -> dict[str, float]:
        return {"count": self.count, "n": self.n, "rate": self.rate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class HumanEvalScore:
    """Win / tie / loss of model A against model B, de-shuffled.

    ``a_preferred`` is A's share of the decisive (non-tie) judgments, with ``p_value`` the two-sided
    sign test of that share against 1/2.
    """

    a: str
    b: str
    win: Rate
    tie: Rate
    loss: Rate
    a_preferred: Rate
    p_value: float
    n_raters: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "n": self.win.n,
            "n_raters": self.n_raters,
            "win": self.win.to_dict(),
            "tie": self.tie.to_dict(),
            "loss": self.loss.to_dict(),
            "a_preferred": self.a_preferred.to_dict(),
            "p_value": self.p_value,
        }

    def format(self) -> str:
        def line(label: str, r: Rate) -> str:
            return f"{label:<26} {r.count:>5} / {r.n:<5} {100 * r.rate:6.1f}%  [{100 * r.low:5.1f}%, {100 * r.high:5.1f}%]"

        rows = [
            f"A = {self.a}   B = {self.b}   ({self.win.n} judgments from {self.n_raters} export(s))",
            line("A wins", self.win),
            line("tie", self.tie),
            line("B wins", self.loss),
            line("A preferred (no ties)", self.a_preferred) + f"  sign test p = {self.p_value:.3g}",
        ]
        return "\n".join(rows)


def outcome(judgment: dict[str, Any]) -> str:
    """``"a"``, ``"b"`` or ``"tie"``: the winner of one exported judgment, with the sides undone."""
    choice, left = judgment.get("choice"), judgment.get("left")
    if choice not in CHOICES:
        raise ExportError(
            f"judgment {judgment.get('set')}/{judgment.get('id')}: choice {choice!r} is not one of {CHOICES}"
        )
    if left not in ("a", "b"):
        raise ExportError(
            f"judgment {judgment.get('set')}/{judgment.get('id')}: left {left!r} is not 'a' or 'b'"
        )
    if choice == "tie":
        return "tie"
    right = "b" if left == "a" else "a"
    return left if choice == "left" else right


def read_export(path: str | os.PathLike) -> dict[str, Any]:
    """A page export, checked for its format (UTF-8, a byte-order mark allowed)."""
    try:
        data = json.loads(read_text(path, ExportError))
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != RESULTS_FORMAT
        or not isinstance(data.get("judgments"), list)
    ):
        raise ExportError(
            f'{path}: not a humaneval export (expected "format": "{RESULTS_FORMAT}" and a judgments list)'
        )
    return data


def score_results(exports: Iterable[dict[str, Any]]) -> HumanEvalScore:
    """Win/tie/loss rates of A over every judgment in one or more exports (e.g. several raters).

    All exports must compare the same two models (the same ``a`` and ``b``).
    """
    exports = list(exports)
    if not exports:
        raise ExportError("no exports to score")
    names = {(e.get("a"), e.get("b")) for e in exports}
    if len(names) != 1:
        raise ExportError(f"the exports compare different models: {sorted(map(str, names))}")
    a, b = names.pop()
    counts = {"a": 0, "b": 0, "tie": 0}
    for e in exports:
        for j in e["judgments"]:
            counts[outcome(j)] += 1
    n = sum(counts.values())
    if n == 0:
        raise ExportError("the exports hold no judgments")
    decisive = counts["a"] + counts["b"]
    return HumanEvalScore(
        a=str(a),
        b=str(b),
        win=Rate.of(counts["a"], n),
        tie=Rate.of(counts["tie"], n),
        loss=Rate.of(counts["b"], n),
        a_preferred=Rate.of(counts["a"], decisive),
        p_value=binomial_two_sided_p(counts["a"], decisive),
        n_raters=len(exports),
    )
