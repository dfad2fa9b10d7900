"""Confidence intervals: Wilson score interval for proportions and a seeded percentile bootstrap."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from alignscope.hooks.errors import AlignscopeError


class StatsError(AlignscopeError, ValueError):
    """Invalid input to an interval computation."""


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: Number of successes (0 <= successes <= n).
        n: Number of trials (> 0).
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)``, both within [0, 1].

    Raises:
        StatsError: ``n`` is not positive or ``successes`` is out of range.
    """
    if n <= 0:
        raise StatsError(f"wilson_interval needs n > 0, got n={n}.", "Evaluate on at least one prompt.")
    if not 0 <= successes <= n:
        raise StatsError(f"successes={successes} is outside [0, n={n}].", "Pass a count between 0 and n.")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    *,
    seed: int,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values``.

    Args:
        values: The per-item values (e.g. per-example CE losses).
        seed: Seed of the resampling generator (the result is a function of it).
        statistic: Reduces a 1-D array to a number; the mean by default.
        n_resamples: Number of bootstrap resamples.
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)`` percentiles of the bootstrap distribution.

    Raises:
        StatsError: ``values`` is empty.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise StatsError("bootstrap_interval got no values.", "Pass at least one value.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_resamples, arr.size))
    stats = np.array([statistic(arr[i]) for i in idx]) if statistic is not np.mean else arr[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise StatsError(f"confidence must be in (0, 1), got {confidence}.", "Use e.g. 0.95.")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)
