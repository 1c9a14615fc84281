"""The regressors behind RegMix's fit (strategies/regressors.py): each recovers its own law from
noise-free data with known parameters, and RegMix's released swarm draws and candidates
(strategies/regression_mixing.py) have the distribution the released code gives them."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.regression_mixing import (RELEASED_MINIMUM, candidate_mixtures, dirichlet_mixtures,
                                          swarm_mixtures)
from strategies.regressors import MixtureRegressor

MIXTURES = np.random.default_rng(0).dirichlet(np.ones(3), size=60)
T = np.array([0.5, -1.0, 0.2])


def test_linear_recovers_its_intercept_and_slopes():
    losses = 3.0 + MIXTURES @ np.array([0.4, -0.2, 0.1])
    fitted = MixtureRegressor(kind="linear").fit(MIXTURES, losses)
    # The simplex makes the intercept and slopes one family: compare predictions, exactly.
    np.testing.assert_allclose(fitted.predict(MIXTURES), losses, atol=1e-12)


@pytest.mark.parametrize("kind", ["mixing_law", "log_linear"])
def test_the_exponential_laws_recover_floor_and_exponents(kind):
    losses = 2.0 + np.exp(MIXTURES @ T)  # c = 2, k = 1, t = (0.5, -1, 0.2): Ye et al.'s law and olmix's
    fitted = MixtureRegressor(kind=kind).fit(MIXTURES, losses)
    floor = fitted.model[0] if kind == "mixing_law" else np.exp(fitted.model[0])
    assert floor == pytest.approx(2.0, abs=1e-4)
    np.testing.assert_allclose(fitted.model[1:], T, atol=1e-4)
    np.testing.assert_allclose(fitted.predict(np.array([[1.0, 0.0, 0.0]])), [2.0 + np.exp(0.5)], atol=1e-4)


def test_bimix_recovers_its_power_law_and_leaves_out_runs_without_the_domain():
    mixtures = np.vstack([MIXTURES, [[0.0, 0.5, 0.5], [0.0, 0.9, 0.1]]])
    share = mixtures[:, 0]
    losses = np.where(share > 0, 3.0 * np.power(np.where(share > 0, share, 1), -0.2), 9.9)  # L = 3 / r^0.2
    with pytest.warns(UserWarning, match="2 of 62 runs give domain 0 no weight"):
        fitted = MixtureRegressor(kind="bimix", domain=0).fit(mixtures, losses)
    np.testing.assert_allclose(fitted.model, [3.0, 0.2], atol=1e-9)
    assert fitted.fitted_runs == 60
    assert fitted.predict(np.array([[0.0, 1.0, 0.0]]))[0] == np.inf  # the law has no value at r = 0
    with pytest.raises(ValueError, match="bimix fits one domain's loss"):
        MixtureRegressor(kind="bimix")


def test_released_lightgbm_is_a_constant_on_a_laptop_swarm_and_says_so():
    mixtures, _ = dirichlet_mixtures(np.full(3, 1 / 3), 12, seed=0)
    with pytest.raises(ValueError, match="the lightgbm fit on 12 runs is constant"):
        MixtureRegressor(kind="lightgbm", settings="released").fit(mixtures, mixtures[:, 0])  # >= 20 runs a leaf
    MixtureRegressor(kind="lightgbm", settings="small_swarm").fit(mixtures, mixtures[:, 0])


def released(natural, count, seed=0):
    return swarm_mixtures(np.asarray(natural), count, seed=np.random.SeedSequence(seed), draws="released")


def test_released_draws_use_fifteen_strengths_equally_and_average_the_flattened_prior():
    natural = np.array([0.6, 0.3, 0.1])  # 15 × every share >= 1: no draw is rejected
    mixtures, strengths = released(natural, 3000)
    levels = np.geomspace(0.1, 5.0, 15)
    assert set(np.round(strengths, 12)) <= set(np.round(levels, 12))
    counts = np.array([np.isclose(strengths, level).sum() for level in levels])
    assert np.all(np.abs(counts - 200) < 4 * np.sqrt(200 * 14 / 15))  # each strength 1/15 of the draws
    flattened = np.sqrt(natural) / np.sqrt(natural).sum()  # the prior to the power 0.5: E[w] at every strength
    np.testing.assert_allclose(mixtures.mean(axis=0), flattened, atol=0.015)


def test_released_draws_respect_the_fifteen_epoch_cap_and_the_weight_grid():
    natural = np.array([0.5, 0.3, 0.17, 0.02, 0.01])  # caps: 1, 1, 1, 0.3, 0.15
    mixtures, strengths = released(natural, 2000)
    assert np.all(mixtures <= np.minimum(15 * natural, 1.0) + 1e-9)
    # Rejection removes sparse draws of the smallest strengths more often than of the largest.
    assert np.isclose(strengths, 0.1).sum() < np.isclose(strengths, 5.0).sum()
    # Zeroed below 2e-4, the rest multiples of 2e-4 up to the final division by their sum (1 ± K · 1e-4).
    assert not np.any((mixtures > 0) & (mixtures < RELEASED_MINIMUM * (1 - 5e-4)))
    grid = np.round(mixtures / RELEASED_MINIMUM) * RELEASED_MINIMUM
    assert np.all(np.abs(mixtures - grid) <= mixtures * 5 * 1e-4 + 1e-12)
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-12)
    # Run r's mixture does not depend on how many runs the swarm has.
    np.testing.assert_array_equal(released(natural, 5)[0], mixtures[:5])


def test_released_candidates_are_one_dirichlet_at_concentration_one_times_the_prior():
    natural = np.array([0.5, 0.3, 0.2])
    pool = candidate_mixtures(natural, 40_000, seed=1, draws="released")
    np.testing.assert_allclose(pool.mean(axis=0), natural, atol=0.006)
    # Var w_j = p_j (1 - p_j) / (α0 + 1) with α0 = Σ α = 1.
    np.testing.assert_allclose(pool.var(axis=0), natural * (1 - natural) / 2, rtol=0.05)
