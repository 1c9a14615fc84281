"""DoGE's update (Fan, Pagliardini, Jaggi 2024, arXiv 2310.15393: scores from ⟨g_i, g_target⟩ over the
mean gradient norm, log α ← log_softmax(log α + s / μ)), checked against an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import StepStats, StrategyContext, get_strategy_class

DOMAINS = ("a", "b", "c")
G = {0: np.array([1.0, 0.0, 2.0]), 1: np.array([0.0, 3.0, 1.0]), 2: np.array([-1.0, 1.0, 0.0])}


def make(stage="proxy", upstream=None, **hparams):
    context = StrategyContext(name="doge", domains=DOMAINS, train_tokens=np.array([5, 3, 2]), stage=stage,
                              total_steps=10, seed=0, vocab_size=8, upstream_weights=upstream or {})
    return get_strategy_class("doge")(context, **hparams)


def gram_of(grads: dict[int, np.ndarray], target=None) -> dict:
    """What the domain_gradients provider hands on: inner products of [g_a, g_b, g_c, g_tgt];
    a domain without a gradient is a zero row."""
    rows = [grads.get(i, np.zeros(3)) for i in range(3)] + ([target] if target is not None else [])
    matrix = np.stack(rows)
    return {"gram": matrix @ matrix.T, "norms": np.linalg.norm(matrix[:3], axis=1),
            "present": np.array([i in grads for i in range(3)]), "target_index": 3 if target is not None else None}


def step(strategy, grads, target=None, lr=0.1, n=1):
    extra = {"domain_gradients": gram_of(grads, target)}
    strategy.update(StepStats(step=n, lr=lr, domain_loss=np.zeros(3), domain_tokens=np.ones(3), extra=extra))


def expected_alpha(log_alpha, w, norms, lr, mu, lo=0.0, hi=5.0):
    s = np.clip(lr * w / (np.mean(norms) + 1e-6), lr * lo, lr * hi)
    z = log_alpha + s / mu
    return np.exp(z) / np.exp(z).sum(), s


def test_mix_target_one_step():
    strategy = make()
    target = np.array([0.5, 0.5, 0.5])
    step(strategy, G, target)
    w = np.array([1.5, 2.0, 0.0])  # <g_i, g_tgt> by hand
    norms = [np.sqrt(5), np.sqrt(10), np.sqrt(2)]
    alpha, _ = expected_alpha(np.log(np.full(3, 1 / 3)), w, norms, lr=0.1, mu=0.01)
    assert np.allclose(strategy.alpha(), alpha)
    assert np.allclose(strategy.loss_weights(), alpha)  # the gradient combination weights
    options = strategy.signal_options()
    assert options["target_gradient"]["split"] == "val" and np.allclose(options["target_gradient"]["weights"], 1 / 3)
    assert options["target_gradient"]["clip_norm"] == 5.0 and options["target_gradient"]["batch_fraction"] == 0.5
    assert strategy.required_signals() == {"domain_gradients", "target_gradient"}
    assert options["domain_gradients"] == {"clip_norm": 5.0, "score_params": ".*"}
    assert strategy.stratified_batches()


def test_train_target_excludes_each_domains_own_term():
    strategy = make(target="train")
    step(strategy, G)
    # W_a = <g_a, g_b + g_c> = (0 + 2) + (-1 + 0) = 1; W_b = <g_b, g_a + g_c> = 2 + 3 = 5;
    # W_c = <g_c, g_a + g_b> = -1 + 3 = 2. Including the self term would add |g_i|² = 5, 10, 2.
    w = np.array([1.0, 5.0, 2.0])
    alpha, _ = expected_alpha(np.log(np.full(3, 1 / 3)), w, [np.sqrt(5), np.sqrt(10), np.sqrt(2)], 0.1, 0.01)
    assert np.allclose(strategy.alpha(), alpha)
    assert strategy.required_signals() == {"domain_gradients"} and "target_gradient" not in strategy.signal_options()


def test_out_of_domain_target_is_never_trained_on():
    strategy = make(target="c")
    assert np.allclose(strategy.initial_weights(), [0.5, 0.5, 0.0])
    options = strategy.signal_options()["target_gradient"]
    assert options["split"] == "train" and options["weights"].tolist() == [0.0, 0.0, 1.0]
    assert options["clip_norm"] == 1.0 and strategy.mu == 0.05
    assert strategy.signal_options()["domain_gradients"]["clip_norm"] == 1.0
    target = np.array([1.0, 1.0, 0.0])
    step(strategy, {0: G[0], 1: G[1]}, target, lr=0.2)
    alpha, _ = expected_alpha(np.log([0.5, 0.5]), np.array([1.0, 3.0]), [np.sqrt(5), np.sqrt(10)], 0.2, 0.05)
    assert np.allclose(strategy.alpha(), [*alpha, 0.0])


def test_a_domain_not_seen_yet_scores_zero_and_counts_as_norm_zero():
    """As in the original code: its gradient row is zero, so W = 0 and it lowers the mean norm."""
    strategy = make()
    target = np.array([0.5, 0.5, 0.5])
    step(strategy, {0: G[0], 1: G[1]}, target)  # c has no gradient
    # By hand: W = (1.5, 2.0, 0); mean norm = (√5 + √10 + 0) / 3 = 1.799435...
    mean_norm = (np.sqrt(5) + np.sqrt(10)) / 3
    scores = 0.1 * np.array([1.5, 2.0, 0.0]) / (mean_norm + 1e-6)
    assert np.allclose(strategy.last_scores, [0.0833593, 0.1111457, 0.0], atol=1e-6)
    assert np.allclose(strategy.last_scores, scores)
    z = np.log(1 / 3) + scores / 0.01
    assert np.allclose(strategy.alpha(), np.exp(z) / np.exp(z).sum())


def test_a_clipped_target_changes_the_scores_by_the_clip_factor():
    """The provider clips g_tgt like every g_i; hand-check what that does to one update."""
    big_target = np.array([30.0, 40.0, 0.0])  # norm 50
    clipped = big_target * 5.0 / (50.0 + 1e-6)  # clip_norm 5 (universal)
    a, b = make(dw_max=1e9), make(dw_max=1e9)  # no upper clip: scores stay proportional
    step(a, G, big_target)
    step(b, G, clipped)
    assert np.allclose(b.last_scores, a.last_scores * 5.0 / (50.0 + 1e-6))
    w = np.array([30.0, 120.0, 10.0]) * 5.0 / (50.0 + 1e-6)  # <g_i, clipped target> by hand
    expected, _ = expected_alpha(np.log(np.full(3, 1 / 3)), w, [np.sqrt(5), np.sqrt(10), np.sqrt(2)], 0.1, 0.01,
                                 hi=1e9)
    assert np.allclose(b.alpha(), expected)


def test_scores_are_clipped_and_the_average_skips_alpha_zero():
    strategy = make()
    target = np.array([0.5, 0.5, 0.5])
    step(strategy, G, target, n=1)
    alpha1 = strategy.alpha()
    new_a = np.array([10.0, 10.0, 10.0])
    step(strategy, {0: new_a, 1: G[1], 2: G[2]}, target, n=2)
    grads = [new_a, G[1], G[2]]
    w = np.array([g @ target for g in grads])
    alpha2, s = expected_alpha(np.log(alpha1), w, [np.linalg.norm(g) for g in grads], 0.1, 0.01)
    assert s[0] == pytest.approx(0.1 * 15.0 / (np.mean([np.linalg.norm(g) for g in grads]) + 1e-6))
    assert np.allclose(strategy.alpha(), alpha2)
    # ᾱ = mean(α_1, α_2): the initial uniform vector does not count.
    assert np.allclose(strategy.final_weights(), (alpha1 + alpha2) / 2)
    # Negative alignment is clipped to lr · dw_min = 0, a huge one to lr · dw_max.
    strategy2 = make(dw_max=1.0)
    step(strategy2, {0: np.array([100.0, 0, 0]), 1: np.array([-100.0, 0, 0]), 2: np.array([0.0, 1, 0])},
         np.array([1.0, 0, 0]))
    assert np.allclose(strategy2.last_scores, [0.1, 0.0, 0.0])


def test_final_stage_and_state_round_trip():
    learned = {"proxy": np.array([0.2, 0.5, 0.3])}
    final = make("final", upstream=learned)
    assert np.allclose(final.initial_weights(), learned["proxy"]) and final.required_signals() == frozenset()
    assert not final.stratified_batches() and final.signal_options() == {}
    a = make()
    step(a, G, np.ones(3))
    b = make()
    b.load_state_dict(a.state_dict())
    for s in (a, b):
        step(s, {1: G[0]}, np.ones(3), n=2)
    assert np.array_equal(a.alpha(), b.alpha()) and np.array_equal(a.final_weights(), b.final_weights())


@pytest.mark.parametrize("bad", [{"target": "wiki"}, {"mu": -1.0}, {"dw_min": 2.0, "dw_max": 1.0},
                                 {"target_batch_fraction": 0.0}, {"target_batch_fraction": 1.5},
                                 {"score_params": "transformer.h.(0"}])
def test_bad_hyperparameters_are_refused(bad):
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError):
        get_strategy_class("doge").check_hparams(bad, list(DOMAINS))
