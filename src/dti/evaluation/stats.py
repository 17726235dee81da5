"""Bootstrap confidence intervals: every mean a report quotes carries one, and so does every difference.

Resampling is over the units given (images, or subject means when a caller wants subjects to
count once each); seeded, so a report is reproducible to the digit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with its percentile bootstrap interval at ``level`` over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "level": self.level}

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


# Resampled indices are drawn in blocks of at most this many, so memory stays bounded (the paper's
# protocol, 30 subjects x 25 prompts x 4 seeds = 3000 images, would need 480 MB in one block).
_BLOCK = 1 << 21


def _means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(values)
    rows = max(1, _BLOCK // n)
    out = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        picks = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[picks].mean(axis=1)
    return out


def _check_settings(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"bootstrap resamples must be a positive integer, got {resamples!r}")
    if not (isinstance(level, (int, float, np.floating)) and 0.0 < float(level) < 1.0):
        raise ValueError(f"bootstrap level must lie strictly between 0 and 1 (e.g. 0.95), got {level!r}")


def bootstrap(values: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Interval:
    """The mean of ``values`` and its percentile bootstrap interval (a single value: a zero-width interval)."""
    _check_settings(resamples, level)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"bootstrap needs a non-empty list of numbers, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("bootstrap values must be finite")
    with np.errstate(over="ignore"):
        mean = float(x.mean())
    if not np.isfinite(mean):
        raise ValueError("bootstrap values are too large to average (their sum overflows)")
    if len(x) == 1:
        return Interval(mean, mean, mean, 1, level)
    means = _means(x, resamples, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(mean, float(min(low, mean)), float(max(high, mean)), len(x), level)


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Interval:
    """mean(a - b) over paired values (same subject, prompt and seed) with its bootstrap interval."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in shape: {x.shape} vs {y.shape}; pass two equally long lists of paired numbers")
    return bootstrap(x - y, resamples, level, seed)
