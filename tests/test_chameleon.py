"""Chameleon (Xie, Tonin, Cevher, ICML 2025): domain embeddings → centred linear kernel → kernel ridge
leverage scores S_λ(D_i) = [Ω(Ω + λkI)^{-1}]_ii → α = softmax(S^{-1} / τ), checked against a separate
transcription of the authors' released computation (LIONS-EPFL/Chameleon, utils.py and
compute_chameleon_weights.py --mode pretrain), and the proxy's life: uniform sampling, the signal
asked for at its last step only, the weights it hands on."""

from __future__ import annotations

import numpy as np
import pytest

from mixbench.errors import ConfigError, TrainingError
from strategies import StepStats, StrategyContext
from strategies.chameleon import Chameleon, chameleon_weights
from strategies.signal_names import SIGNALS

DOMAINS = ("a", "b", "c")
STEPS = 10
# The test vector: three domains, d = 4. The centred kernel's eigenvalues (0, 14.5, 30.9) are of the
# order of the ridge λk = 30, so the scores depend on how the ridge is scaled (λ alone gives other weights).
EMBEDDINGS = np.array([[4.0, 1.0, -2.0, 3.0],
                       [1.5, 3.5, 0.5, -1.0],
                       [-2.0, 0.5, 3.0, 2.5]])


# -- the authors' computation, transcribed in their structure and names --------------------------
def authors_kernel_centerer(K):
    """sklearn.preprocessing.KernelCenterer().fit_transform(K), spelled out."""
    n_samples = K.shape[0]
    K_fit_rows_ = K.sum(axis=0) / n_samples
    K_fit_all_ = K_fit_rows_.sum() / n_samples
    K_pred_cols = (K.sum(axis=1) / n_samples)[:, None]
    return K - K_fit_rows_ - K_pred_cols + K_fit_all_


def authors_compute_domain_affinity_matrix(embeddings):
    affinity_matrix = embeddings @ embeddings.T  # linear kernel
    return authors_kernel_centerer(affinity_matrix)


def authors_compute_ridge_leverage_scores(K, lambda_reg=10, normalise=True):
    """S_lambda(D_i) = [K (K + lambda_reg * k * I)^(-1)]_ii; the current utils.py then divides by the sum
    (its first version returned the raw diagonal: ``normalise=False``)."""
    k = K.shape[0]
    K_reg_inv = np.linalg.inv(K + lambda_reg * k * np.eye(k))
    leverage_scores = np.diag(K @ K_reg_inv)
    if normalise:
        leverage_scores = leverage_scores / np.sum(leverage_scores)
    return leverage_scores


def authors_pretrain_weights(domain_average_embeddings, lambda_reg=10.0, pt_temperature=5.0, normalise=True):
    domain_affinity_matrix = authors_compute_domain_affinity_matrix(domain_average_embeddings)
    leverage_scores = authors_compute_ridge_leverage_scores(domain_affinity_matrix, lambda_reg, normalise)
    pt_logits = 1.0 / (leverage_scores + 1e-12) / pt_temperature  # inverse KRLS for pre-training
    pt_weights = np.exp(pt_logits) / np.sum(np.exp(pt_logits))
    return domain_affinity_matrix, leverage_scores, pt_weights


# -- helpers ---------------------------------------------------------------------------------------
def make(stage="proxy", upstream=None, domains=DOMAINS, **hparams):
    context = StrategyContext(name="chameleon", domains=domains, train_tokens=np.full(len(domains), 100),
                              stage=stage, total_steps=STEPS, seed=0, vocab_size=8,
                              upstream_weights=upstream or {})
    return Chameleon(context, **hparams)


def stats(step, embeddings=None):
    extra = {} if embeddings is None else {"domain_embeddings": np.asarray(embeddings, dtype=np.float64)}
    return StepStats(step=step, lr=1e-3, domain_loss=np.ones(3), domain_tokens=np.full(3, 10.0), extra=extra)


def run_proxy(embeddings=EMBEDDINGS, **hparams):
    strategy = make(**hparams)
    for step in range(1, STEPS + 1):
        due = strategy.signal_due("domain_embeddings", step)
        assert strategy.needs_step_stats(step) == due == (step == STEPS)
        strategy.record(strategy.initial_weights())
        if due:
            assert strategy.update(stats(step, embeddings)) is None  # sampling stays uniform
    return strategy


# -- the test vector -------------------------------------------------------------------------------
@pytest.mark.parametrize("hparams, authors", [
    ({}, {}),  # the released defaults: λ = 10, τ = 5, normalised scores
    ({"normalize_scores": False}, {"normalise": False}),  # the first version of utils.py
    ({"lambda_reg": 2.5, "temperature": 0.5}, {"lambda_reg": 2.5, "pt_temperature": 0.5}),
])
def test_weights_match_the_authors_computation_on_the_test_vector(hparams, authors):
    kernel, scores, weights = authors_pretrain_weights(EMBEDDINGS, **authors)
    strategy = run_proxy(**hparams)
    assert np.allclose(strategy.kernel, kernel, rtol=0, atol=1e-6)
    assert np.allclose(strategy.scores, scores, rtol=0, atol=1e-6)
    assert np.allclose(strategy.final_weights(), weights, rtol=0, atol=1e-6)


def test_the_test_vectors_numbers():
    """The default weights, written out (from the transcription above); the ridge λ alone (not λk)
    or raw scores would move them by 5e-3 or more."""
    _, scores, weights = authors_pretrain_weights(EMBEDDINGS)
    assert np.allclose(scores, [0.35811831, 0.26156787, 0.38031382], rtol=0, atol=1e-6)
    assert np.allclose(weights, [0.31280655, 0.38441789, 0.30277556], rtol=0, atol=1e-6)
    assert np.allclose(run_proxy().final_weights(), weights, rtol=0, atol=1e-6)
    assert not np.allclose(authors_pretrain_weights(EMBEDDINGS, lambda_reg=10 / 3)[2], weights, atol=5e-3)
    assert not np.allclose(authors_pretrain_weights(EMBEDDINGS, normalise=False)[2], weights, atol=4e-3)


def test_the_transcribed_centring_is_sklearns_kernel_centerer():
    sklearn = pytest.importorskip("sklearn.preprocessing")
    gram = EMBEDDINGS @ EMBEDDINGS.T
    assert np.allclose(authors_kernel_centerer(gram), sklearn.KernelCenterer().fit_transform(gram), atol=1e-12)


def test_a_common_shift_of_the_embeddings_changes_nothing_and_the_central_domain_gains():
    _, _, weights = chameleon_weights(EMBEDDINGS, lambda_reg=10.0, temperature=5.0)
    _, _, shifted = chameleon_weights(EMBEDDINGS + 7.0, lambda_reg=10.0, temperature=5.0)
    assert np.allclose(weights, shifted, atol=1e-12)  # the kernel is centred
    # b is the nearest to the embeddings' mean: the smallest leverage, the largest weight.
    centred = np.linalg.norm(EMBEDDINGS - EMBEDDINGS.mean(axis=0), axis=1)
    assert np.argmin(centred) == np.argmax(weights) == 1


def test_a_score_of_zero_gives_a_one_hot_mixture_not_nan():
    """A domain at the embeddings' mean has score 0; the released exp(1e12 / τ) overflows to nan."""
    embeddings = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    _, scores, weights = chameleon_weights(embeddings, lambda_reg=10.0, temperature=5.0)
    assert abs(scores[2]) < 1e-15 and np.allclose(weights, [0.0, 0.0, 1.0])


# -- the proxy and the final run -------------------------------------------------------------------
def test_proxy_samples_uniformly_asks_for_the_embeddings_at_its_last_step_and_hands_on_chameleons_weights():
    strategy = make()
    assert Chameleon.stages == ("proxy", "final") and "domain_embeddings" in SIGNALS
    assert np.allclose(strategy.initial_weights(), 1 / 3)
    assert strategy.required_signals() == {"domain_embeddings"}
    assert strategy.signal_options() == {"domain_embeddings": {"split": "train", "windows": 2048, "layer": "middle"}}
    assert strategy.trace() is None
    assert strategy.update(stats(3)) is None and strategy.alpha is None  # not the last step: nothing asked
    with pytest.raises(TrainingError, match="never received"):
        strategy.final_weights()
    done = run_proxy()
    expected = authors_pretrain_weights(EMBEDDINGS)[2]
    assert set(done.trace()) == {"kernel", "leverage_scores", "alpha"}
    assert np.allclose(done.trace()["alpha"], expected)
    assert not np.allclose(done.final_weights(), done.initial_weights())  # not the mean of the sampling weights


def test_final_trains_on_the_proxys_weights_and_needs_no_signal():
    learned = np.array([0.5, 0.3, 0.2])
    final = make("final", upstream={"proxy": learned})
    assert np.allclose(final.initial_weights(), learned)
    assert final.required_signals() == frozenset() and final.signal_options() == {}
    assert not final.signal_due("domain_embeddings", STEPS) and not final.needs_step_stats(STEPS)
    assert final.update(stats(STEPS, EMBEDDINGS)) is None and final.trace() is None
    for _ in range(3):
        final.record(learned)
    assert np.allclose(final.final_weights(), learned)


def test_options_reach_the_signal():
    strategy = make(windows=64, split="val", layer="final")
    assert strategy.signal_options() == {"domain_embeddings": {"split": "val", "windows": 64, "layer": "final"}}


def test_state_round_trips_before_and_after_the_weights():
    fresh = make()
    clone = make()
    clone.load_state_dict(fresh.state_dict())
    assert clone.alpha is None
    done = run_proxy()
    clone = make()
    clone.load_state_dict(done.state_dict())
    assert np.array_equal(clone.final_weights(), done.final_weights())
    assert np.array_equal(clone.scores, done.scores) and np.array_equal(clone.kernel, done.kernel)


@pytest.mark.parametrize("embeddings, message", [
    (np.ones((3, 4)), "same embedding"),
    (np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 0.0]]), "not all finite"),
    (np.ones((2, 4)), "shape"),
])
def test_embeddings_that_cannot_give_weights_are_refused_with_the_step(embeddings, message):
    with pytest.raises(TrainingError, match=rf"'chameleon' at step {STEPS}.*{message}"):
        make().update(stats(STEPS, embeddings))


@pytest.mark.parametrize("bad", [{"lambda_reg": 0.0}, {"temperature": -1.0}, {"windows": 0}, {"split": "test"},
                                 {"layer": "first"}, {"normalize_scores": 1}, {"mode": "finetune"}])
def test_bad_hyperparameters_are_refused(bad):
    with pytest.raises(ConfigError):
        Chameleon.check_hparams(bad, list(DOMAINS))


def test_one_domain_is_refused():
    with pytest.raises(ConfigError, match="at least two"):
        Chameleon.check_hparams({}, ["a"])
    Chameleon.check_hparams({}, list(DOMAINS))


def test_a_middle_layer_the_proxy_size_lacks_is_refused_before_any_job(tmp_path):
    from conftest import make_test_config
    from strategies import grid_config

    one_block = make_test_config(tmp_path, grid={"strategies": ["chameleon"]})  # the `test` size: one block
    with pytest.raises(ConfigError, match=r"stages.proxy.size: chameleon embeds with the proxy's middle layer, but "
                                          r"size 'test' has 1 block"):
        grid_config.validate(one_block)
    grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["chameleon"]},
                                          strategies={"chameleon": {"layer": "final"}}))
