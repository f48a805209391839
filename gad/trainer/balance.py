"""The two-player game's balance, checked as a run goes and read back by ``gad report``.

A discriminator that always wins gives the generator no signal; one that lost the student (accuracy
under chance for long) gives it noise; a reward that climbs while responses grow fast, or samples
that all repeat one phrase or length the teacher does not, look like the student gaming D; a
collapsing entropy means the policy stopped exploring. :func:`imbalances` names the conditions that
hold over a run's metric rows; :class:`BalanceMonitor` feeds it one step at a time, logs each
condition as a ``balance/*`` metric and reports a condition once, when it starts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Limits:
    """When a condition holds. ``window``: steps averaged; the trends compare the run's first and last
    windows (shrunk to half the run when it is shorter than two; under 4 steps there is no trend)."""

    window: int = 5
    d_acc_max: float = 0.95  # D accuracy above this over the last window: D too strong
    d_acc_min: float = 0.5  # below this over the last two windows: D lost the student
    length_growth: float = 1.5  # reward rising while the mean length grows by more than this factor
    entropy_drop: float = 0.3  # entropy in the last window below this fraction of the first's
    repeat_frac: float = 0.8  # most samples share one phrase (or one length) ...
    repeat_excess: float = 0.5  # ... that many more than the teacher's responses do


CONDITIONS = ("d_too_strong", "d_lost", "length_hacking", "entropy_collapse", "repetition")


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def imbalances(rows: list[dict[str, Any]], limits: Limits = Limits()) -> dict[str, str]:
    """The conditions that hold over ``rows`` (metric rows in step order), each with a plain-language
    message; empty when the game looks balanced."""
    w = limits.window
    out: dict[str, str] = {}
    acc = _series(rows, "disc/accuracy")
    if len(acc) >= w and _mean(acc[-w:]) > limits.d_acc_max:
        out["d_too_strong"] = (
            f"D accuracy stuck above {limits.d_acc_max:.2f} (mean {_mean(acc[-w:]):.3f} over the last {w} steps): "
            "the discriminator is too strong and the generator gets little signal; consider a lower "
            "discriminator.lr or more generator steps")
    if len(acc) >= 2 * w and _mean(acc[-2 * w:]) < limits.d_acc_min:
        out["d_lost"] = (
            f"D accuracy below {limits.d_acc_min:.2f} (mean {_mean(acc[-2 * w:]):.3f} over the last {2 * w} steps): "
            "the discriminator has lost the student and its rewards are noise; consider a higher "
            "discriminator.lr")

    def trend(key: str) -> tuple[float, float] | None:
        xs = _series(rows, key)
        k = min(w, len(xs) // 2)
        return (_mean(xs[:k]), _mean(xs[-k:])) if k >= 2 else None

    reward, length = trend("reward/mean"), trend("gen/response_length_mean")
    if reward and length:
        (r0, r1), (l0, l1) = reward, length
        if r1 > r0 and l0 > 0 and l1 / l0 > limits.length_growth:
            out["length_hacking"] = (
                f"reward rising ({r0:.3g} → {r1:.3g}) while responses grow fast ({l0:.1f} → {l1:.1f} tokens): "
                "possible reward hacking; check samples and the discriminator's accuracy")
    ent = trend("policy/entropy")
    if ent and ent[0] > 0 and ent[1] < limits.entropy_drop * ent[0]:
        out["entropy_collapse"] = f"entropy collapse ({ent[0]:.3g} → {ent[1]:.3g}): the policy has stopped exploring"
    for what, key in (("phrase", "ngram"), ("length", "length")):
        student, teacher = _series(rows, f"balance/repeated_{key}_frac"), _series(rows, f"balance/teacher_{key}_frac")
        if len(student) >= w and len(teacher) >= w:
            s, t = _mean(student[-w:]), _mean(teacher[-w:])
            if s > limits.repeat_frac and s - t > limits.repeat_excess:
                out["repetition"] = (
                    f"the student repeats one {what} across samples ({s:.0%} of them over the last {w} steps, "
                    f"the teacher's responses {t:.0%}): it may be gaming the discriminator; read its samples")
                break
    return out


def balance_warnings(rows: list[dict[str, Any]], limits: Limits = Limits()) -> list[str]:
    """The messages of :func:`imbalances`, for a report."""
    return list(imbalances(rows, limits).values())


def repetition_stats(samples: list[list[int]], teacher: list[list[int]], n: int = 4) -> dict[str, float]:
    """How much a step's samples repeat themselves, next to the teacher's responses to the same prompts:
    the share of samples holding the samples' most common ``n``-gram of token ids (and the share of
    teacher responses holding it), and the share of samples of the most common length (and of teacher
    responses of their own most common length)."""

    def grams(ids: list[int]) -> set[tuple[int, ...]]:
        return {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}

    def modal_share(values: list[int]) -> float:
        return Counter(values).most_common(1)[0][1] / len(values) if values else 0.0

    counts = Counter(g for s in samples for g in grams(s))
    top = min(counts, key=lambda g: (-counts[g], g)) if counts else None  # ties: the smallest, whatever the order
    return {
        "balance/repeated_ngram_frac": counts[top] / len(samples) if top else 0.0,
        "balance/teacher_ngram_frac": sum(top in grams(t) for t in teacher) / len(teacher) if top and teacher else 0.0,
        "balance/repeated_length_frac": modal_share([len(s) for s in samples]),
        "balance/teacher_length_frac": modal_share([len(t) for t in teacher]),
    }


@dataclass
class BalanceMonitor:
    """Checks the balance after every step; ``rows``: the run's earlier metric rows (when resuming)."""

    limits: Limits = Limits()
    rows: list[dict[str, Any]] = field(default_factory=list)
    active: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.active = set(imbalances(self.rows, self.limits)) if self.rows else set()

    def update(self, step: int, metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
        """Add one step's metrics; returns the ``balance/*`` flags (1 = the condition holds) and the
        messages of the conditions that started at this step."""
        self.rows.append({"step": step, **metrics})
        now = imbalances(self.rows, self.limits)
        started = [msg for name, msg in now.items() if name not in self.active]
        self.active = set(now)
        return {f"balance/{name}": float(name in now) for name in CONDITIONS}, started
