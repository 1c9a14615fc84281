"""Statistics of the result tables: spread over seeds and paired comparisons with a baseline.

Every comparison is paired: a strategy and the baseline trained on the same seed see the same
initial model and data order, so the per-seed differences cancel that shared noise. For n seeds
a comparison gives the mean difference, a paired t confidence interval, an exact sign-flip
permutation p-value (all 2^n sign patterns for n ≤ 16), and the minimum detectable difference at
80% power. p-values are Holm-adjusted across the strategies compared with the same baseline on
the same metric, and a difference counts as significant only if its adjusted p is below 0.05.

What few seeds can show: the sign-flip p is at least 2 / 2^n (0.25 with 3 seeds), so nothing
can be significant below 6 seeds, or below log2(2m / 0.05) seeds with m strategies after Holm.
No bootstrap: with fewer than ~10 pairs its percentile interval is just the range of the
per-seed differences.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.80
EXACT_PERMUTATION_MAX_PAIRS = 16  # 2^16 sign patterns; beyond, PERMUTATION_DRAWS random ones
PERMUTATION_DRAWS = 10_000
PERMUTATION_SEED = 0  # a fixed generator: the same runs always give the same p-value
MAX_SEEDS_SEARCHED = 10_000
SAME_DIFFERENCE_TOLERANCE = 1e-9  # a spread of differences this small relative to their mean is rounding


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else float("nan")


@dataclass(frozen=True)
class PairedTest:
    mean: float  # mean over pairs of (strategy - baseline)
    low: float  # paired t confidence interval of that mean
    high: float
    p_value: float  # exact (n ≤ 16) two-sided sign-flip permutation p
    mdd: float  # minimum detectable |difference| at 80% power, two-sided α = 0.05, given the spread and n
    sd: float  # standard deviation of the per-seed differences
    pairs: int


def _pairs(strategy, baseline) -> np.ndarray:
    a, b = np.asarray(strategy, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two equally long 1-d arrays of at least 2 pairs, got shapes {a.shape} and {b.shape}")
    return a - b


def paired_test(strategy, baseline, level: float = 0.95) -> PairedTest:
    """The paired comparison of ``strategy - baseline`` over seeds (see the module docstring)."""
    a, b = np.asarray(strategy, dtype=float), np.asarray(baseline, dtype=float)
    diff = _pairs(a, b)
    sd = float(diff.std(ddof=1))
    if sd <= SAME_DIFFERENCE_TOLERANCE * abs(float(diff.mean())):
        # Every seed differs by the same amount (up to rounding): the t interval has no width.
        sd = 0.0
        low = high = float(diff.mean())
    else:
        with warnings.catch_warnings():  # SciPy warns of precision loss when the spread is tiny
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = stats.ttest_rel(a, b).confidence_interval(level)
    return PairedTest(float(diff.mean()), float(low), float(high), sign_flip_p(diff),
                      min_detectable_difference(sd, len(diff)), sd, len(diff))


def sign_flip_p(diff) -> float:
    """Two-sided p of the mean paired difference under random signs (SciPy's permutation_test
    with the pairs swapped: exact over all 2^n patterns up to 16 pairs)."""
    diff = np.asarray(diff, dtype=float)
    if not diff.any():
        return 1.0
    exact = len(diff) <= EXACT_PERMUTATION_MAX_PAIRS
    result = stats.permutation_test(
        (diff, np.zeros_like(diff)), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
        vectorized=True, alternative="two-sided", n_resamples=np.inf if exact else PERMUTATION_DRAWS,
        rng=None if exact else np.random.default_rng(PERMUTATION_SEED))
    return float(result.pvalue)


def smallest_p(pairs: int) -> float:
    """The smallest two-sided sign-flip p that ``pairs`` seeds can give: 2 / 2^n."""
    return min(1.0, 2.0 / 2**pairs)


def power(effect: float, sd: float, pairs: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` to detect a true mean difference
    ``effect`` with per-seed spread ``sd`` and ``pairs`` seeds (noncentral t)."""
    df = pairs - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect / sd * math.sqrt(pairs)
    # P(T > c) + P(T < -c); the second as P(T > c) under -shift, which SciPy evaluates without the
    # NaNs its far lower tail gives at 1 degree of freedom.
    value = float(stats.nct.sf(critical, df, shift) + stats.nct.sf(critical, df, -shift))
    if not np.isfinite(value):
        raise ArithmeticError(f"power of the paired t-test is not finite at effect {effect}, sd {sd}, {pairs} pairs")
    return value


def min_detectable_difference(sd: float, pairs: int, target: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true |difference| the paired t-test detects with probability ``target``."""
    if pairs < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    from scipy.optimize import brentq

    upper = sd
    while power(upper, sd, pairs, alpha) < target:
        upper *= 2
    return float(brentq(lambda effect: power(effect, sd, pairs, alpha) - target, 0.0, upper, xtol=sd * 1e-9))


def seeds_needed(effect: float, sd: float, comparisons: int = 1, target: float = POWER, alpha: float = ALPHA) -> int | None:
    """Seeds at which a true difference ``effect`` (with spread ``sd``) would be detected with
    probability ``target``, and could pass Holm over ``comparisons`` strategies with the sign-flip
    test (2 / 2^n < alpha / comparisons). None when not within MAX_SEEDS_SEARCHED."""
    floor = max(2, math.ceil(math.log2(2 * comparisons / alpha) + 1e-12))
    if effect == 0 or not np.isfinite(sd):
        return None
    if sd == 0:
        return floor
    for pairs in range(floor, MAX_SEEDS_SEARCHED + 1):
        if power(abs(effect), sd, pairs, alpha) >= target:
            return pairs
    return None


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979): the i-th smallest of m p-values is multiplied by
    m - i + 1, made monotone, and capped at 1. NaNs are left out of m and stay NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def wins(strategy_means, baseline_means, lower_is_better: bool) -> tuple[int, int]:
    """On how many of n items (domains, tasks) the strategy's mean beats the baseline's: (k, n)."""
    a, b = np.asarray(strategy_means, dtype=float), np.asarray(baseline_means, dtype=float)
    better = a < b if lower_is_better else a > b
    return int(better.sum()), len(a)
