"""ODM (strategies/odm.py): one EXP3 step by hand, a sequence of steps against a transcription of
the authors' update rule (alon-albalak/online-data-mixing, Exp3WeightUpdater.update), its
schedule and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixbench.errors import ConfigError
from strategies import StepStats, StrategyContext, get_strategy_class

ODM = get_strategy_class("odm")
DOMAINS = ("code", "books", "qa")
TOKENS = np.array([500.0, 300.0, 200.0])  # natural: (0.5, 0.3, 0.2)


def odm(**hparams):
    context = StrategyContext(name="odm", domains=DOMAINS, train_tokens=TOKENS, stage="final", total_steps=100,
                              seed=0, vocab_size=8)
    return ODM(context, **hparams)


def stats(step, losses, tokens):
    return StepStats(step, 1e-3, np.array(losses, dtype=float), np.array(tokens, dtype=float))


def test_one_update_by_hand():
    strategy = odm(warmup_steps=9)
    assert strategy.update(stats(9, [4.0, 2.0, np.nan], [10, 5, 0])) is None  # still warming up
    pi = strategy.update(stats(10, [4.0, 2.0, np.nan], [10, 5, 0]))  # qa absent: no reward
    # R̂ = (0.4 / 0.5, 0.2 / 0.3, 0); ε_0 = 1/3; ε_10 = min(1/3, √(ln 3 / 30)).
    reward = [0.4 / 0.5, 0.2 / 0.3, 0.0]
    eps_prev, eps = 1 / 3, min(1 / 3, math.sqrt(math.log(3) / 30))
    exps = [math.exp(eps_prev * r) for r in reward]
    weights = [e * (1 - 3 * eps) / sum(exps) + eps for e in exps]
    expected = [w / sum(weights) for w in weights]
    np.testing.assert_allclose(pi, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pi, [0.347807, 0.341005, 0.311188], atol=1e-5)
    assert strategy.trace()["rewarded"] == ["code", "books"] and strategy.trace()["epsilon"] == eps


class AuthorsExp3:
    """The authors' Exp3WeightUpdater.update, transcribed as its scalar steps (dicts, one domain a call)."""

    def __init__(self, names, weights):
        self.names, self.k = list(names), len(names)
        self.weights = list(weights)
        self.cumulative = {n: 0.0 for n in names}
        total = sum(weights)
        self.probabilities = {n: w / total for n, w in zip(names, weights)}
        self.eps, self.prev_eps = 1 / self.k, None

    def update(self, name, reward, iteration):
        reward = reward / 10
        self.cumulative[name] += reward / self.probabilities[name]
        self.prev_eps = self.eps
        self.eps = min(1 / self.k, math.sqrt(math.log(self.k) / (self.k * iteration)))
        total_rewards = sum(math.exp(r * self.prev_eps) for r in self.cumulative.values())
        scaling = (1 - self.k * self.eps) / total_rewards
        for i, n in enumerate(self.names):
            self.weights[i] = math.exp(self.cumulative[n] * self.prev_eps) * scaling + self.eps
        total = sum(self.weights)
        for i, n in enumerate(self.names):
            self.probabilities[n] = self.weights[i] / total
        return list(self.probabilities.values())


def test_a_sequence_of_one_domain_steps_matches_the_authors_update_rule_to_1e_12():
    strategy, authors = odm(), AuthorsExp3(DOMAINS, list(TOKENS / TOKENS.sum()))
    rng = np.random.default_rng(0)
    for step in range(1, 41):  # as their loop: each step one domain, its loss the reward
        domain = int(rng.integers(3))
        losses, tokens = np.full(3, np.nan), np.zeros(3)
        losses[domain], tokens[domain] = rng.uniform(2, 8), 1024
        ours = strategy.update(stats(step, losses, tokens))
        np.testing.assert_allclose(ours, authors.update(DOMAINS[domain], float(losses[domain]), step), rtol=0, atol=1e-12)
    assert ours.max() - ours.min() > 0.01  # the mixture moved


def test_updates_follow_warmup_and_update_every_and_settings_are_checked():
    strategy = odm(warmup_steps=4, update_every=3)
    assert [s for s in range(1, 16) if strategy.needs_step_stats(s)] == [6, 9, 12, 15]
    assert np.allclose(odm(initial="uniform").initial_weights(), 1 / 3)
    assert np.allclose(odm().initial_weights(), [0.5, 0.3, 0.2])
    reason = ODM.static_reason({**ODM.defaults, "warmup_steps": 99}, stage="final", steps=100, warmup_steps=0,
                               domains=list(DOMAINS))
    assert "never updates" in reason and ODM.static_reason(ODM.defaults, stage="final", steps=100, warmup_steps=0,
                                                           domains=list(DOMAINS)) is None
    with pytest.raises(ConfigError, match="need warmup_steps >= 0, update_every >= 1"):
        ODM.check_hparams({"update_every": 0}, list(DOMAINS))
    with pytest.raises(ConfigError, match="initial must be 'natural' or 'uniform'"):
        ODM.check_hparams({"initial": "pile"}, list(DOMAINS))
