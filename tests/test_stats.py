"""The statistics behind the tables, against hand-computed numbers and synthetic data with a known shift."""

import numpy as np
import pandas as pd
import pytest

from eval.analysis.stats import (holm, mean_std, min_detectable_difference, paired_test, power, seeds_needed, sign_flip_p,
                        smallest_p, wins)
from eval.analysis.tables import comparison_rows, mean_std_cells, per_seed


def test_mean_and_sample_std_by_hand():
    # mean 2.0; squared deviations 1, 0, 1 over n - 1 = 2: variance 1.
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = mean_std([4.0])
    assert mean == 4.0 and np.isnan(std)


T_975 = {1: 12.706204736, 2: 4.302652730}  # Student t quantiles from a table


def test_paired_t_interval_by_hand():
    # Differences 0.5, 0.5, 0.6: mean 0.5333, sd 0.057735, standard error 0.033333.
    test = paired_test([3.5, 2.5, 4.6], [3.0, 2.0, 4.0])
    assert test.mean == pytest.approx(0.53333333) and test.sd == pytest.approx(0.05773503) and test.pairs == 3
    half = T_975[2] * 0.05773503 / np.sqrt(3)
    assert (test.low, test.high) == pytest.approx((0.53333333 - half, 0.53333333 + half), abs=1e-7)


def test_a_constant_difference_has_an_interval_of_no_width():
    test = paired_test([3.5, 2.5, 4.5], [3.0, 2.0, 4.0])
    assert (test.mean, test.low, test.high, test.sd, test.mdd) == pytest.approx((0.5, 0.5, 0.5, 0.0, 0.0))


def test_sign_flip_p_by_hand():
    # Three differences of one sign: of the 8 sign patterns only all-plus and all-minus reach
    # |mean| >= the observed one, so p = 2/8 = 0.25, the smallest three seeds can give.
    assert sign_flip_p([0.5, 0.5, 0.6]) == pytest.approx(0.25) == smallest_p(3)
    # 1, -1, 2, 0.5 (sum 2.5): 8 of the 16 patterns have |sum| >= 2.5.
    assert sign_flip_p([1.0, -1.0, 2.0, 0.5]) == pytest.approx(0.5)
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert smallest_p(6) == pytest.approx(2 / 64)


def test_holm_by_hand():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> 0.06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.25, 0.25, 0.5, np.nan])  # m = 3: the NaN is not a comparison
    assert adjusted[:3] == pytest.approx([0.75, 0.75, 0.75]) and np.isnan(adjusted[3])


def test_power_and_minimum_detectable_difference_match_g_power():
    # G*Power 3.1, t test, difference of matched pairs, two tails, alpha 0.05, power 0.80,
    # effect size dz = 0.5: total sample size 34, actual power 0.8077775.
    assert power(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
    assert power(0.5, 1.0, 33) < 0.8
    assert min_detectable_difference(1.0, 34) < 0.5 < min_detectable_difference(1.0, 33)
    assert min_detectable_difference(2.0, 34) == pytest.approx(2 * min_detectable_difference(1.0, 34))
    assert seeds_needed(0.5, 1.0) == 34
    # A large effect is held back by the sign-flip floor: with 4 strategies 2/2^n x 4 < 0.05 needs n = 8.
    assert seeds_needed(3.0, 1.0, comparisons=4) == 8 and seeds_needed(0.0, 1.0) is None


def test_t_interval_covers_the_true_shift_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    trials, covered = 400, 0
    for _ in range(trials):
        baseline = rng.normal(0, 1, size=5)
        test = paired_test(baseline - 0.2 + rng.normal(0, 0.2, size=5), baseline)
        covered += test.low <= -0.2 <= test.high
    assert 0.92 <= covered / trials <= 0.98


def test_paired_test_checks_its_input():
    with pytest.raises(ValueError, match="equally long"):
        paired_test([1.0, 2.0], [1.0])


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
    # sd of (-0.2, -0.1) is 0.0707107; the t interval is -0.15 ± 12.706 × 0.05.
    assert (macro["ci_low"], macro["ci_high"]) == pytest.approx((-0.15 - T_975[1] * 0.05, -0.15 + T_975[1] * 0.05))
    assert macro["p_sign_flip"] == pytest.approx(0.5) and macro["p_holm"] == pytest.approx(0.5)
    assert (macro["wins"], macro["items"]) == (1, 2)  # better on code, worse on books
    assert macro["verdict"] == "cannot be significant with 2 seeds" and macro["baseline"] == "uniform"
    assert rows["bpb, code"]["difference"] == pytest.approx(-0.4) and rows["bpb, code"]["wins"] is None
    worst = rows["bpb, worst"]
    assert worst["difference"] == pytest.approx(-0.4) and worst["wins"] is None
