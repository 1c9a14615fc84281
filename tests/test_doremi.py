"""DoReMi's proxy update (Xie et al. 2023, arXiv 2305.10429: α' = softmax(log α + η λ), α = (1 − c) α' + c u,
λ_i the per-token clipped excess loss averaged over the domain's tokens), checked against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import StepStats, StrategyContext, get_strategy_class
from strategies.doremi import excess_loss_per_domain

DOMAINS = ("a", "b", "c")
VOCAB = 8


def make(stage="proxy", upstream=None, **hparams):
    context = StrategyContext(name="doremi", domains=DOMAINS, train_tokens=np.array([500, 300, 200]), stage=stage,
                              total_steps=10, seed=0, vocab_size=VOCAB, upstream_weights=upstream or {})
    return get_strategy_class("doremi")(context, **hparams)


def stats(step, token_loss, reference_loss, token_domains):
    token_loss, reference_loss = np.asarray(token_loss, float), np.asarray(reference_loss, float)
    return StepStats(step=step, lr=1e-3, domain_loss=np.full(3, np.nan), domain_tokens=np.zeros(3),
                     extra={"reference_token_loss": {"token_loss": token_loss, "reference_token_loss": reference_loss,
                                                     "token_domains": np.asarray(token_domains)}})


def softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def test_first_step_with_domain_c_absent_uses_log_vocab_for_it():
    """Rows: two of domain a, one of domain b, none of c; sequences of two tokens."""
    strategy = make(smoothing=0.0)
    strategy.update(stats(1, [[3.0, 1.0], [2.0, 2.0], [4.0, 4.0]], [[1.0, 2.0], [1.0, 1.0], [1.0, 5.0]], [0, 0, 1]))
    # a: clipped excesses 2, 0, 1, 1 -> mean 1.0; b: 3, 0 -> 1.5; c: absent -> log 8.
    expected_excess = np.array([1.0, 1.5, np.log(8)])
    assert np.allclose(strategy.excess, expected_excess)
    expected = softmax(np.log(np.full(3, 1 / 3)) + expected_excess)
    assert np.allclose(strategy.alpha, expected)
    assert np.allclose(strategy.loss_weights(), expected * 3)  # α / p with p = 1/3


def test_an_absent_domain_keeps_its_previous_excess_and_smoothing_mixes_in_uniform():
    strategy = make(step_size=0.5, smoothing=0.1)
    strategy.update(stats(1, [[2.0], [3.0], [1.0]], [[1.0], [1.0], [1.0]], [0, 1, 2]))  # λ = 1, 2, 0
    alpha1 = 0.9 * softmax(np.log(np.full(3, 1 / 3)) + 0.5 * np.array([1.0, 2.0, 0.0])) + 0.1 / 3
    assert np.allclose(strategy.alpha, alpha1)
    strategy.update(stats(2, [[5.0], [0.0]], [[1.0], [1.0]], [0, 0]))  # only a: λ_a = (4 + 0) / 2
    excess2 = np.array([2.0, 2.0, 0.0])  # b and c keep step 1's values
    alpha2 = 0.9 * softmax(np.log(alpha1) + 0.5 * excess2) + 0.1 / 3  # from the smoothed α_1
    assert np.allclose(strategy.excess, excess2) and np.allclose(strategy.alpha, alpha2)
    # ᾱ = mean(α_0, α_1, α_2): the uniform start counts.
    assert np.allclose(strategy.final_weights(), (np.full(3, 1 / 3) + alpha1 + alpha2) / 3)


def test_excess_is_clipped_per_token_not_per_domain():
    """Domain a's tokens: +3 and -3 against the reference. Per token: mean(3, 0) = 1.5;
    clipping the domain mean instead would give max(0, 0) = 0."""
    excess, counts = excess_loss_per_domain(np.array([[4.0, 1.0]]), np.array([[1.0, 4.0]]), np.array([0]), 3)
    assert excess[0] == 1.5 and counts.tolist() == [2, 0, 0]
    strategy = make(smoothing=0.0)
    strategy.update(stats(1, [[4.0, 1.0], [1.0, 1.0], [1.0, 1.0]], [[1.0, 4.0], [1.0, 1.0], [1.0, 1.0]], [0, 1, 2]))
    assert np.allclose(strategy.excess, [1.5, 0.0, 0.0])


def test_sampling_stays_uniform_and_state_round_trips():
    strategy = make()
    assert np.allclose(strategy.initial_weights(), 1 / 3)
    assert strategy.update(stats(1, [[2.0]], [[1.0]], [1])) is None  # sampling never changes
    clone = make()
    clone.load_state_dict(strategy.state_dict())
    for s in (strategy, clone):
        s.update(stats(2, [[1.0], [3.0]], [[2.0], [1.0]], [0, 2]))
    assert np.allclose(strategy.alpha, clone.alpha) and np.allclose(strategy.final_weights(), clone.final_weights())


def test_stages_reference_weights_and_final_weights():
    cls = get_strategy_class("doremi")
    assert cls.stages_for({}) == ("reference", "proxy", "final")
    assert cls.stages_for({"rounds": 2}) == ("reference", "proxy", "reference-r2", "proxy-r2", "final")
    assert np.allclose(make("reference").initial_weights(), [0.5, 0.3, 0.2])  # natural
    assert np.allclose(make("reference", reference_weights="uniform").initial_weights(), 1 / 3)
    learned = {"proxy": np.array([0.6, 0.3, 0.1]), "proxy-r2": np.array([0.2, 0.2, 0.6])}
    assert np.allclose(make("reference-r2", upstream=learned, rounds=2).initial_weights(), learned["proxy"])
    assert np.allclose(make("final", upstream=learned, rounds=2).initial_weights(), learned["proxy-r2"])
    assert make("final", upstream=learned).update(stats(1, [[1.0]], [[0.0]], [0])) is None
    assert make("proxy-r2", rounds=2).signal_options() == {"reference_token_loss": {"stage": "reference-r2"}}
    assert not make("reference").required_signals() and make("proxy").reweights_current_step()


@pytest.mark.parametrize("bad", [{"reference_weights": "zipf"}, {"step_size": 0.0}, {"rounds": 0}, {"smoothing": 2.0}])
def test_bad_hyperparameters_are_refused(bad):
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError):
        get_strategy_class("doremi").check_hparams(bad, list(DOMAINS))
