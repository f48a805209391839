"""Small statistics both the trainer (validation during training) and ``gad eval`` use."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (better than p ± 1.96·se near 0 or 1).

    ``(p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)``. Example: 8 of 10 at 95% gives
    (0.4902, 0.9433).
    """
    if n <= 0:
        return (0.0, 1.0)
    z = _normal_quantile(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, (centre - half) / denom)  # exact ends, no rounding dust
    high = 1.0 if successes == n else min(1.0, (centre + half) / denom)
    return (low, high)


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def binomial_two_sided_p(successes: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: the probability, under ``p``, of an outcome no likelier than
    the observed one (the rule scipy's ``binomtest`` uses)."""
    if n == 0:
        return 1.0
    if p in (0.0, 1.0):
        return 1.0 if successes == round(p * n) else 0.0

    def log_pmf(k: int) -> float:  # in logs: C(1610, 805) / 2**1610 overflows a float
        return (
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * math.log(p)
            + (n - k) * math.log1p(-p)
        )

    observed = log_pmf(successes) + 1e-7  # relative tolerance, as scipy uses
    return min(1.0, sum(math.exp(q) for q in map(log_pmf, range(n + 1)) if q <= observed))
