"""RegMix's regression machinery (strategies/regression_mixing.py): the swarm's Dirichlet draws,
the regressors and the top-k search, on synthetic problems whose optimum is known."""

import numpy as np
import pytest
from scipy import stats

from strategies.regression_mixing import (MixtureRegressor, dirichlet_mixtures, kfold_rank_correlation,
                                          predicted_best)

NATURAL = np.array([0.4, 0.3, 0.2, 0.1])


def test_draws_are_seeded_on_the_simplex_and_log_uniform_in_concentration():
    mixtures, scales = dirichlet_mixtures(NATURAL, 4000, seed=3, min_concentration=0.1, max_concentration=5.0)
    again, _ = dirichlet_mixtures(NATURAL, 4000, seed=3, min_concentration=0.1, max_concentration=5.0)
    other, _ = dirichlet_mixtures(NATURAL, 4000, seed=4, min_concentration=0.1, max_concentration=5.0)
    assert np.array_equal(mixtures, again) and not np.array_equal(mixtures, other)
    assert mixtures.shape == (4000, 4) and (mixtures >= 0).all()
    assert np.abs(mixtures.sum(axis=1) - 1).max() < 1e-12
    assert scales.min() >= 0.1 and scales.max() <= 5.0
    # log(scale) uniform on [log 0.1, log 5]: Kolmogorov-Smirnov at the 0.1% level.
    low, high = np.log(0.1), np.log(5.0)
    assert stats.kstest(np.log(scales), stats.uniform(loc=low, scale=high - low).cdf).pvalue > 1e-3
    # Whatever the concentration, a Dirichlet(c·p) draw has mean p: the swarm is centred on natural.
    standard_error = mixtures.std(axis=0) / np.sqrt(len(mixtures))
    assert (np.abs(mixtures.mean(axis=0) - NATURAL) < 4 * standard_error).all()


@pytest.mark.parametrize("concentration", [0.5, 5.0, 50.0])
def test_the_concentration_sets_the_spread_as_configured(concentration):
    # Var(w_i) = p_i (1 − p_i) / (c + 1) for w ~ Dir(c·p): a small c gives sparse mixtures, a large
    # one mixtures near natural. Checked within 10% on 20,000 draws (the sampling error is ~2%).
    mixtures, scales = dirichlet_mixtures(NATURAL, 20000, seed=0, min_concentration=concentration,
                                          max_concentration=concentration)
    assert np.allclose(scales, concentration)
    expected = NATURAL * (1 - NATURAL) / (concentration + 1)
    assert np.allclose(mixtures.var(axis=0), expected, rtol=0.1)


def test_bad_swarm_settings_fail_with_their_numbers():
    with pytest.raises(ValueError, match="sum to 1"):
        dirichlet_mixtures(np.array([0.5, 0.6]), 3, seed=0)
    with pytest.raises(ValueError, match="min_concentration <= max_concentration < inf, got 5.0, 0.1"):
        dirichlet_mixtures(NATURAL, 3, seed=0, min_concentration=5.0, max_concentration=0.1)
    with pytest.raises(ValueError, match="< inf, got 0.1, inf"):
        dirichlet_mixtures(NATURAL, 3, seed=0, max_concentration=np.inf)
    with pytest.raises(ValueError, match="regressor 'ridge'"):
        MixtureRegressor(kind="ridge")
    with pytest.raises(ValueError, match="top_k=20, candidates=10"):
        predicted_best(MixtureRegressor(kind="linear"), NATURAL, candidates=10, top_k=20, seed=0)


def quadratic_swarm(runs: int, optimum: np.ndarray, seed: int = 1):
    """Held-out loss 2 + 3‖w − w*‖² plus noise (σ = 0.005): its best mixture is w*."""
    mixtures, _ = dirichlet_mixtures(NATURAL, runs, seed=0)
    noise = np.random.default_rng(seed).normal(0, 0.005, size=runs)
    return mixtures, 2.0 + 3.0 * ((mixtures - optimum) ** 2).sum(axis=1) + noise


def test_lightgbm_and_the_top_k_mean_recover_a_known_optimum():
    optimum = np.array([0.1, 0.2, 0.3, 0.4])  # far from natural (L1 distance 0.8)
    mixtures, losses = quadratic_swarm(64, optimum)
    regressor = MixtureRegressor(kind="lightgbm", seed=0).fit(mixtures, losses)
    best = predicted_best(regressor, NATURAL, candidates=20000, top_k=100, seed=1)
    assert abs(best.sum() - 1) < 1e-12
    # Measured: 0.12 from the optimum (L1) with 64 runs, 0.10 with 128; natural is 0.8 away.
    assert np.abs(best - optimum).sum() < 0.25, best
    fit = kfold_rank_correlation(mixtures, losses, kind="lightgbm", folds=5, seed=0)
    assert fit["spearman"] > 0.85 and fit["folds"] == 5 and len(fit["predicted"]) == 64  # measured: 0.93


def test_linear_regression_finds_the_cheapest_domain_of_a_linear_loss():
    mixtures, _ = dirichlet_mixtures(NATURAL, 32, seed=0)
    slopes = np.array([3.0, 2.0, 1.0, 0.5])  # the loss falls most with the last domain
    losses = 1.0 + mixtures @ slopes + np.random.default_rng(1).normal(0, 0.01, size=32)
    regressor = MixtureRegressor(kind="linear").fit(mixtures, losses)
    # Exact up to the noise: the fitted slopes differ from the true ones by a constant (Σw = 1).
    fitted = regressor.model[:-1] - regressor.model[:-1].mean()
    assert np.allclose(fitted, slopes - slopes.mean(), atol=0.1)
    best = predicted_best(regressor, NATURAL, candidates=20000, top_k=100, seed=1)
    assert best[3] > 0.9, best
    assert kfold_rank_correlation(mixtures, losses, kind="linear", folds=4, seed=0)["spearman"] > 0.95


def test_a_fit_that_cannot_rank_anything_is_an_error():
    mixtures, _ = dirichlet_mixtures(NATURAL, 8, seed=0)
    with pytest.raises(ValueError, match="constant .*observed losses span 0"):
        MixtureRegressor(kind="lightgbm").fit(mixtures, np.full(8, 3.0))
    with pytest.raises(ValueError, match="need >= 4 swarm runs with finite losses"):
        MixtureRegressor(kind="linear").fit(mixtures[:3], np.array([1.0, 2.0, np.nan]))
    with pytest.raises(ValueError, match=r"2 <= folds <= swarm runs \(8\), got 9"):
        kfold_rank_correlation(mixtures, np.arange(8.0), kind="linear", folds=9, seed=0)
