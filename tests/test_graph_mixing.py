"""DoGraph's graph machinery: MMD identities, unbiased estimators, communities, the mixture QP."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from strategies.graph_mixing import (MixtureQP, gaussian_affinity, knn_communities, mmd2_matrix, normalised_laplacian,
                                     standardise, unbiased_sq_norms, utilities)

rng = np.random.default_rng(0)


def test_squared_distance_of_mean_gradients_is_mmd_under_the_gradient_kernel():
    g, h = rng.normal(size=(5, 12)), rng.normal(size=(7, 12)) + 0.3
    kernel = lambda a, b: a @ b.T  # k(x, x') = <∇ℓ(x), ∇ℓ(x')>
    kernel_form = kernel(g, g).mean() + kernel(h, h).mean() - 2 * kernel(g, h).mean()
    assert np.isclose(np.sum((g.mean(0) - h.mean(0)) ** 2), kernel_form)


def test_unbiased_norm_equals_the_u_statistic_over_distinct_pairs():
    phi = rng.normal(size=(6, 9)) + 0.5
    pairs = [phi[a] @ phi[b] for a, b in itertools.permutations(range(6), 2)]
    assert np.isclose(unbiased_sq_norms([phi])[0], np.mean(pairs))


def test_mmd2_equals_the_direct_u_statistic_and_is_clamped():
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(8, 5)) + 1.0
    xx = np.mean([x[a] @ x[b] for a, b in itertools.permutations(range(6), 2)])
    yy = np.mean([y[a] @ y[b] for a, b in itertools.permutations(range(8), 2)])
    direct = xx + yy - 2 * np.mean(x @ y.T)
    mmd2 = mmd2_matrix([x, y])
    assert np.isclose(mmd2[0, 1], direct) and mmd2[0, 1] == mmd2[1, 0] and mmd2[0, 0] == 0
    same = rng.normal(size=(4, 5))
    assert mmd2_matrix([same, same.copy()])[0, 1] == 0.0  # a negative unbiased estimate is clamped


def test_affinity_laplacian_and_communities_on_two_clear_clusters():
    centres = [np.zeros(8), np.full(8, 3.0)]
    features = [rng.normal(size=(8, 8)) * 0.1 + centres[i // 3] for i in range(6)]
    mmd2 = mmd2_matrix(features)
    affinity = gaussian_affinity(mmd2)
    # 9 of the 15 pairs cross clusters, so the median heuristic puts σ² at a cross distance: e^-1.
    assert affinity[0, 1] > 0.99 and affinity[0, 5] == pytest.approx(np.exp(-mmd2[0, 5] / np.median(
        mmd2[np.triu_indices(6, 1)])), rel=1e-9) and 0.3 < affinity[0, 5] < 0.4 and np.all(np.diag(affinity) == 0)
    laplacian = normalised_laplacian(affinity)
    assert np.isclose(np.linalg.eigvalsh(laplacian)[-1], 1.0) and np.allclose(laplacian.sum(axis=1), 0)
    from strategies.graph_mixing import as_graph, graph_laplacian

    assert np.allclose(graph_laplacian(as_graph(affinity, list("abcdef"))), laplacian)  # the networkx graph agrees
    assert knn_communities(mmd2, k=2, seed=0) == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="knn 6: each of 6 domains has 1 to 5 neighbours"):
        knn_communities(mmd2, k=6, seed=0)  # never clamped to what there is


def test_utilities_inner_and_cosine():
    features = [rng.normal(size=(10, 4)) * 0.01 + v for v in (np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0]))]
    target = rng.normal(size=(10, 4)) * 0.01 + np.array([1.0, 0, 0, 0])
    u = utilities(features, target)
    assert u[0] == pytest.approx(1.0, rel=0.05) and abs(u[1]) < 0.05
    cos = utilities(features, target, kind="cosine")
    assert cos[0] == pytest.approx(1.0, rel=0.05)
    z = standardise(np.array([1.0, 1.0001, 0.9999]))
    assert np.allclose(z, [0.0, 0.002, -0.002])  # the 0.05 floor keeps noise small


def test_qp_without_graph_term_goes_to_the_best_domain_up_to_alpha_min():
    k, alpha_min = 4, 0.05
    qp = MixtureQP(k, lam=0.0, rho=1e-4, alpha_min=alpha_min, community_delta=None)
    alpha, seconds = qp.solve(np.array([0.1, 2.0, -1.0, 0.3]), np.zeros((k, k)), np.full(k, 1 / k))
    assert np.allclose(alpha, [alpha_min, 1 - 3 * alpha_min, alpha_min, alpha_min], atol=1e-4)
    assert seconds < 5


def test_a_large_graph_penalty_on_a_connected_graph_drives_weights_equal():
    k = 5
    affinity = np.ones((k, k)) - np.eye(k)
    qp = MixtureQP(k, lam=1e4, rho=1e-3, alpha_min=0.0, community_delta=None)
    alpha, _ = qp.solve(np.array([2.0, -1.0, 0.5, 0.0, 1.0]), normalised_laplacian(affinity), np.full(k, 1 / k))
    assert np.allclose(alpha, 1 / k, atol=1e-3)


def test_solutions_are_feasible_and_community_mass_bounds_hold():
    k = 6
    qp = MixtureQP(k, lam=0.5, rho=1.0, alpha_min=0.02, community_delta=0.2)
    for trial in range(5):
        u = standardise(rng.normal(size=k))
        affinity = gaussian_affinity(mmd2_matrix([rng.normal(size=(4, 3)) for _ in range(k)]))
        communities = [[0, 1, 2], [3, 4], [5]]
        alpha, _ = qp.solve(u, normalised_laplacian(affinity), np.full(k, 1 / k), communities)
        assert np.isclose(alpha.sum(), 1) and alpha.min() >= 0.02 - 1e-6
        for community in communities:
            share = len(community) / k
            assert 0.8 * share - 1e-5 <= alpha[community].sum() <= 1.2 * share + 1e-5


def test_a_failing_solver_keeps_the_previous_weights_with_a_warning(monkeypatch):
    from strategies import StepStats, StrategyContext, get_strategy_class

    context = StrategyContext(name="dograph", domains=("a", "b", "c"), train_tokens=np.ones(3), stage="final",
                              total_steps=100, seed=0, vocab_size=8)
    strategy = get_strategy_class("dograph")(context, knn=2)  # at most K - 1 neighbours
    previous = strategy.alpha.copy()

    def broken(*args, **kwargs):
        raise RuntimeError("solver crashed")

    monkeypatch.setattr(strategy._solver().problem, "solve", broken)
    probe = {"domains": [rng.normal(size=(4, 6)) for _ in range(3)], "target": rng.normal(size=(3, 6))}
    with pytest.warns(UserWarning, match="keeping the previous weights"):
        alpha = strategy.update(StepStats(50, 1e-3, np.zeros(3), np.ones(3), {"example_gradient_features": probe}))
    assert np.array_equal(alpha, previous) and np.all(np.isfinite(alpha))
    assert strategy.trace()["solved"] is False


def test_lambda_zero_is_warned_about():
    from strategies import get_strategy_class

    with pytest.warns(UserWarning, match="vertex"):
        get_strategy_class("dograph").check_hparams({"lam": 0.0, "knn": 1}, ["a", "b"])
