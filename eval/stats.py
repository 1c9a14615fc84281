"""Statistics of the result tables: spread over seeds and paired comparisons with a baseline.

Every comparison is paired: a strategy and the baseline trained on the same seed see the same
initial model and data order, so the per-seed differences cancel that shared noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0  # a fixed generator: the same runs always give the same interval


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else float("nan")


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over pairs of (strategy - baseline)
    low: float  # bootstrap percentile interval of that mean
    high: float
    pairs: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(strategy, baseline, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> PairedDifference:
    """Percentile bootstrap interval of the mean paired difference ``strategy - baseline``.

    The pairs (one per seed) are resampled with replacement ``samples`` times; the interval is
    the (1-level)/2 and (1+level)/2 quantiles of the resampled means. With n pairs the mean of
    a resample takes at most C(2n-1, n) values, so with 3 seeds the interval is coarse: it is
    what those seeds support, not a parametric guess.
    """
    a, b = np.asarray(strategy, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equally long, non-empty 1-d arrays, got shapes {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(float(diff.mean()), float(low), float(high), len(diff))


def wins(strategy_means, baseline_means, lower_is_better: bool) -> tuple[int, int]:
    """On how many of n items (domains, tasks) the strategy's mean beats the baseline's: (k, n)."""
    a, b = np.asarray(strategy_means, dtype=float), np.asarray(baseline_means, dtype=float)
    better = a < b if lower_is_better else a > b
    return int(better.sum()), len(a)
