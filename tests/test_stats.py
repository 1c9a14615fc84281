"""The statistics behind the tables, against hand-computed numbers and synthetic data with a known shift."""

import numpy as np
import pandas as pd
import pytest

from eval.stats import mean_std, paired_bootstrap, wins
from eval.tables import comparison_rows, mean_std_cells, per_seed


def test_mean_and_sample_std_by_hand():
    # mean 2.0; squared deviations 1, 0, 1 over n - 1 = 2: variance 1.
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = mean_std([4.0])
    assert mean == 4.0 and np.isnan(std)


def test_bootstrap_of_a_constant_difference_is_that_difference():
    d = paired_bootstrap([3.5, 2.5, 4.5], [3.0, 2.0, 4.0])
    assert (d.mean, d.low, d.high, d.pairs) == (0.5, 0.5, 0.5, 3)
    assert d.excludes_zero()


def test_bootstrap_interval_of_two_pairs_by_hand():
    # Differences 0 and 1: a resample of two is {0,0}, {0,1}, {1,0} or {1,1}, so its mean is 0,
    # 0.5 or 1 with probability 1/4, 1/2, 1/4. The 2.5% and 97.5% quantiles are 0 and 1.
    d = paired_bootstrap([1.0, 3.0], [1.0, 2.0])
    assert d.mean == 0.5 and (d.low, d.high) == (0.0, 1.0) and not d.excludes_zero()


def test_bootstrap_interval_brackets_a_known_shift():
    rng = np.random.default_rng(7)
    baseline = rng.normal(3.0, 0.5, size=40)  # per-seed noise shared by both arms
    strategy = baseline + 0.3 + rng.normal(0, 0.1, size=40)
    d = paired_bootstrap(strategy, baseline)
    assert d.low < 0.3 < d.high and d.excludes_zero()
    assert d.high - d.low < 0.1  # pairing removes the shared noise (std 0.5) from the interval


def test_bootstrap_interval_covers_the_true_shift_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    covered = 0
    trials = 300
    for _ in range(trials):
        baseline = rng.normal(0, 1, size=30)
        d = paired_bootstrap(baseline - 0.2 + rng.normal(0, 0.2, size=30), baseline, samples=2000,
                             seed=int(rng.integers(1 << 31)))
        covered += d.low <= -0.2 <= d.high
    assert 0.88 <= covered / trials <= 0.99  # percentile intervals under-cover slightly at n = 30


def test_bootstrap_is_reproducible_and_checks_its_input():
    a, b = [1.0, 2.0, 4.0], [1.5, 1.0, 3.0]
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_wins_count_the_better_side():
    assert wins([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], lower_is_better=True) == (1, 3)
    assert wins([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], lower_is_better=False) == (1, 3)  # ties win nothing


def long_frame() -> pd.DataFrame:
    """Two strategies, two seeds, two domains, with numbers chosen for hand computation."""
    values = {  # (strategy, seed): (code, books)
        ("uniform", 0): (3.0, 2.0), ("uniform", 1): (3.2, 2.2),
        ("natural", 0): (2.5, 2.1), ("natural", 1): (2.9, 2.3),
    }
    return pd.DataFrame([{"size": "tiny", "strategy": s, "seed": seed, "domain": d, "bits_per_byte": v}
                         for (s, seed), pair in values.items() for d, v in zip(("code", "books"), pair)])


GRID = {"sizes": ["tiny"], "strategies": ["uniform", "natural"], "seeds": [0, 1]}


def test_summary_cells_and_paired_comparison_by_hand():
    wide = per_seed(long_frame(), "bits_per_byte", "domain", summaries=True)
    # uniform: macro avg per seed 2.5 and 2.7 -> 2.6 ± 0.1414; worst = code: 3.0, 3.2.
    cells = mean_std_cells(wide, GRID, ".4f").set_index("strategy")
    assert cells.loc["uniform", "macro avg"] == "2.6000 ± 0.1414"
    assert cells.loc["natural", "worst"] == "2.7000 ± 0.2828"  # natural's worst: code 2.5, then code 2.9
    rows = {r["metric"]: r for r in comparison_rows(wide, GRID, "bpb", ["code", "books"], higher_is_better=False)}
    macro = rows["bpb, macro avg"]
    # natural - uniform per seed: (2.3 - 2.5, 2.6 - 2.7) = (-0.2, -0.1).
    assert macro["difference"] == pytest.approx(-0.15)
    assert (macro["ci_low"], macro["ci_high"]) == pytest.approx((-0.2, -0.1))
    assert (macro["wins"], macro["items"]) == (1, 2)  # better on code, worse on books
    assert macro["verdict"] == "better" and macro["baseline"] == "uniform"
    worst = rows["bpb, worst"]
    assert worst["difference"] == pytest.approx(-0.4) and worst["wins"] is None
