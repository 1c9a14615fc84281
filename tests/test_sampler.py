"""The domain sampler: frequencies match the weights, windows are real, state restores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from corpus.sampler import DomainSampler
from corpus.tokens import TokenStore


@pytest.fixture(scope="module")
def store(built_data):
    return TokenStore(f"{built_data['data_dir']}/tokens", "train")


def test_domain_frequencies_match_the_weights(store):
    """Chi-square goodness of fit over 20,000 draws; the same test rejects a wrong weight vector."""
    k = len(store.domains)
    weights = np.arange(1, k + 1, dtype=float)
    weights /= weights.sum()
    sampler = DomainSampler(store, seq_len=32, seed=123)
    counts = np.bincount(np.concatenate([sampler.sample_domains(weights, 500) for _ in range(40)]), minlength=k)
    n = counts.sum()
    assert stats.chisquare(counts, weights * n).pvalue > 1e-3
    # Power check: swapping the two largest weights is detected at this sample size.
    wrong = weights.copy()
    wrong[[-1, -2]] = wrong[[-2, -1]]
    assert stats.chisquare(counts, wrong * n).pvalue < 1e-6


def test_zero_weight_domains_are_never_drawn(store):
    weights = np.zeros(len(store.domains))
    weights[2] = 1.0
    _, domains = DomainSampler(store, 32, seed=0).sample(weights, 200)
    assert np.all(domains == 2)


def test_window_starts_are_uniform_over_the_domain(store):
    """Kolmogorov-Smirnov on the window offsets of one domain against the uniform distribution."""
    sampler = DomainSampler(store, 32, seed=5)
    domains = np.zeros(5000, dtype=np.int64)
    offsets = sampler.rng.integers(0, sampler.starts[domains])  # the same call windows() makes
    assert stats.kstest(offsets / sampler.starts[0], "uniform").pvalue > 1e-3


def test_windows_are_contiguous_slices_of_the_domain(store):
    weights = np.full(len(store.domains), 1 / len(store.domains))
    tokens, domains = DomainSampler(store, 32, seed=1).sample(weights, 16)
    assert tokens.shape == (16, 33) and tokens.dtype == np.int64
    for row, d in zip(tokens, domains):
        array = np.asarray(store.arrays[d])
        starts = np.flatnonzero(array == row[0])
        assert any(np.array_equal(array[s : s + 33], row) for s in starts)


def test_state_restore_reproduces_the_next_batches(store):
    weights = np.full(len(store.domains), 1 / len(store.domains))
    a = DomainSampler(store, 32, seed=9)
    a.sample(weights, 8)
    saved = a.state_dict()
    expected = [a.sample(weights, 8) for _ in range(3)]
    b = DomainSampler(store, 32, seed=9)
    b.load_state_dict(saved)
    for (t1, d1), (t2, d2) in zip(expected, [b.sample(weights, 8) for _ in range(3)]):
        assert np.array_equal(t1, t2) and np.array_equal(d1, d2)


def test_seeds_and_streams_give_different_batches(store):
    weights = np.full(len(store.domains), 1 / len(store.domains))
    draws = [DomainSampler(store, 32, seed=s, stream=r).sample(weights, 8)[0] for s, r in ((0, 0), (1, 0), (0, 1))]
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])
    again = DomainSampler(store, 32, seed=0, stream=0).sample(weights, 8)[0]
    assert np.array_equal(draws[0], again)


def test_a_domain_of_exactly_one_window_always_gives_that_window(store):
    class OneWindowStore:
        domains = ["tiny", "big"]
        arrays = [np.arange(33, dtype=np.uint16), np.arange(1000, dtype=np.uint16)]

    sampler = DomainSampler(OneWindowStore(), seq_len=32, seed=0)
    windows = sampler.windows(np.zeros(50, dtype=np.int64))
    assert (windows == np.arange(33)).all()
    big = sampler.windows(np.ones(2000, dtype=np.int64))
    assert big[:, 0].min() == 0 and big[:, -1].max() == 999  # both ends of the array are reachable


def test_a_domain_shorter_than_a_window_is_refused():
    from mixbench.errors import DataError

    class ShortStore:
        domains = ["short"]
        arrays = [np.arange(32, dtype=np.uint16)]

    with pytest.raises(DataError, match=r"\['short'\] have fewer than seq_len \+ 1 = 33 tokens"):
        DomainSampler(ShortStore(), seq_len=32, seed=0)


def test_stratified_batches_hold_every_domain_in_equal_shares(store):
    k = len(store.domains)
    sampler = DomainSampler(store, 32, seed=5)
    for n in (k, 8, 16, 31):
        for _ in range(50):
            _, domains = sampler.sample_stratified(np.full(k, 1 / k), n)
            counts = np.bincount(domains, minlength=k)
            assert counts.sum() == n and counts.min() == n // k and counts.max() <= n // k + 1
    # The remainder goes to random domains, each equally often (chi-square over 3,000 batches of 8).
    extra = np.zeros(k)
    for _ in range(3000):
        extra += np.bincount(sampler.stratified_domains(np.full(k, 1 / k), 8), minlength=k) - 1
    assert stats.chisquare(extra, np.full(k, extra.sum() / k)).pvalue > 1e-3


def test_stratified_counts_have_the_iid_expectation_for_any_weights(store):
    """Each domain gets ⌊n w⌋ or ⌈n w⌉ rows, and n w on average; zero weight never appears."""
    k = len(store.domains)
    weights = np.array([0.0, 0.05, 0.1, 0.15, 0.3, 0.4])[:k]
    weights /= weights.sum()
    sampler = DomainSampler(store, 32, seed=9)
    draws = np.stack([np.bincount(sampler.stratified_domains(weights, 10), minlength=k) for _ in range(4000)])
    assert np.all(draws >= np.floor(10 * weights)) and np.all(draws <= np.ceil(10 * weights))
    assert draws[:, 0].max() == 0
    se = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - 10 * weights) <= 4 * se + 1e-12)
    # Unequal fractional parts: n·w = (1.8, 1.6, 1.6) takes its two extra rows with probabilities
    # 0.8, 0.6, 0.6 (drawing without replacement ∝ the fractions would give ≈ 0.74, 0.63, 0.63).
    uneven = np.array([0.36, 0.32, 0.32, 0.0, 0.0, 0.0])[:k]
    draws = np.stack([np.bincount(sampler.stratified_domains(uneven, 5), minlength=k) for _ in range(6000)])
    extra = draws[:, :3].mean(axis=0) - 1
    assert np.all(np.abs(extra - [0.8, 0.6, 0.6]) <= 4 * np.sqrt(np.array([0.16, 0.24, 0.24]) / len(draws)))
    # The rows are shuffled: the first row is not always the same domain.
    firsts = [sampler.stratified_domains(weights, 10)[0] for _ in range(200)]
    assert len(set(firsts)) > 2
