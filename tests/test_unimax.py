"""UniMax (strategies/unimax.py): Algorithm 1 by hand, the budget above N epochs of the corpus,
and the run's budget and token counts as the workflow hands them to it."""

from __future__ import annotations

import numpy as np
import pytest

from mixbench.config import Run
from mixbench.errors import ConfigError
from models.upstream import strategy_context
from strategies import StrategyContext, get_strategy_class
from strategies.unimax import unimax_allocation

UniMax = get_strategy_class("unimax")


def unimax(available, budget, **hparams):
    context = StrategyContext(name="unimax", domains=tuple("abcd"[: len(available)]), train_tokens=np.ones(len(available)),
                              stage="final", total_steps=10, seed=0, vocab_size=8,
                              available_tokens=np.asarray(available, dtype=float), planned_tokens=budget)
    return UniMax(context, **hparams).initial_weights()


def test_small_domains_take_their_epochs_and_the_rest_split_evenly_by_hand():
    # B = 400, N = 2, c = (1000, 10, 100, 50), visited smallest first:
    #   c=10:  share 400/4 = 100, 2·10 = 20 < 100  -> 20, 380 left
    #   c=50:  share 380/3 ≈ 126.7, 2·50 = 100     -> 100, 280 left
    #   c=100: share 280/2 = 140 < 2·100 = 200     -> 140, 140 left
    #   c=1000: share 140                          -> 140
    weights = unimax([1000, 10, 100, 50], 400, max_epochs=2.0)
    np.testing.assert_allclose(weights, np.array([140, 20, 140, 100]) / 400, atol=1e-15)
    np.testing.assert_allclose(unimax_allocation(400, [1000, 10, 100, 50], 2.0), [140, 20, 140, 100])


def test_with_data_to_spare_every_domain_gets_an_even_share():
    np.testing.assert_allclose(unimax([1000, 2000, 3000], 300), np.full(3, 1 / 3), atol=1e-15)


def test_a_budget_above_n_epochs_of_every_domain_is_proportional_and_says_so():
    with pytest.warns(UserWarning, match=r"the budget of 1,000 tokens exceeds 1 epoch\(s\) of every domain \(600 tokens\)"
                                         r".*repeated 1.67 times"):
        weights = unimax([100, 200, 300], 1000)
    np.testing.assert_allclose(weights, np.array([100, 200, 300]) / 600, atol=1e-15)


def test_max_epochs_must_be_a_positive_number():
    with pytest.raises(ConfigError, match="max_epochs must be a positive number of passes over a domain, got 0"):
        UniMax.check_hparams({"max_epochs": 0}, ["a", "b"])
    with pytest.raises(ConfigError, match="hyperparameter 'max_epochs' must be float"):
        UniMax.check_hparams({"max_epochs": "2"}, ["a", "b"])


def test_the_workflow_hands_it_the_runs_budget_and_the_tokenized_counts(built_data):
    from corpus.tokens import TokenStore

    context = strategy_context(built_data, Run(strategy="uniform", stage="final", size="test", seed=0), 30, {})
    training = built_data["training"]
    assert context.planned_tokens == 30 * training["batch_size"] * training["seq_len"]
    store = TokenStore(f"{built_data['data_dir']}/tokens", "train", built_data["corpus"]["domains"])
    np.testing.assert_array_equal(context.available_tokens, store.token_counts())
    weights = UniMax(context, max_epochs=1.0).initial_weights()
    # No domain over one epoch, unless the budget exceeds the corpus (it does not here).
    assert np.all(weights * context.planned_tokens <= context.available_tokens + 1e-6)
    assert np.isclose(weights.sum(), 1.0)
