"""Aioli (strategies/aioli.py): two rounds by hand, whole runs against a transcription of the authors'
loop (HazyResearch/aioli ``trainer/aioli_trainer.py``, ``AioliTrainer.train`` and
``AioliTrainer.learn_params_subroutine``), the schedule of readings and mixtures, a resume mid-round,
and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from mixbench.errors import ConfigError, TrainingError
from models.checkpoint import read_checkpoint, save_checkpoint
from strategies.aioli import Aioli
from strategies.base import StepStats, StrategyContext

DOMAINS = ("code", "books", "qa")
TOKENS = np.array([500.0, 300.0, 200.0])


def aioli(total_steps=20, seed=0, **hparams):
    context = StrategyContext(name="aioli", domains=DOMAINS, train_tokens=TOKENS, stage="final",
                              total_steps=total_steps, seed=seed, vocab_size=8)
    Aioli.check_hparams(hparams, list(DOMAINS))
    return Aioli(context, **hparams)


def step_stats(step, heldout=None):
    extra = {} if heldout is None else {"heldout_loss": np.array(heldout, dtype=float)}
    return StepStats(step, 1e-3, np.full(3, 4.0), np.full(3, 100.0), extra)


class ToyModel:
    """Held-out loss that falls linearly in the mixture trained on, plus a fixed wobble per step:
    L ← L − rate · A_true w_n − wobble_n."""

    def __init__(self, seed, steps):
        rng = np.random.default_rng(seed)
        self.true_interactions = rng.uniform(-0.2, 1.0, (3, 3)) + np.eye(3)
        self.wobble = rng.normal(0, 0.002, (steps + 1, 3))
        self.loss, self.steps = np.array([6.0, 5.0, 7.0]), 0

    def train(self, weights):
        self.loss = self.loss - 0.01 * self.true_interactions @ weights - self.wobble[self.steps]
        self.steps += 1


def drive(strategy, model, first, last, weights):
    """Steps first … last as the loop runs them: read the loss of the model so far, update, train."""
    used, traces = {}, {}
    for step in range(first, last + 1):
        new = None
        if strategy.needs_step_stats(step):
            due = strategy.signal_due("heldout_loss", step)
            new = strategy.update(step_stats(step, model.loss.copy() if due else None))
        traces[step] = strategy.trace()
        used[step] = weights
        model.train(weights)
        weights = weights if new is None else new
    return used, traces, weights


def test_two_rounds_by_hand():
    # ε = 0.5, K = 3: W = 0.25 (I + 11ᵀ), W⁻¹ = 4I − 11ᵀ, so A = 4β − (row sums of β) 1ᵀ.
    drops = [{0: [0.4, 0.1, 0.0], 1: [0.1, 0.2, 0.1], 2: [0.0, 0.1, 0.3]},  # round 0: column j of β
             {0: [0.2, 0.0, 0.0], 1: [0.0, 0.2, 0.0], 2: [0.0, 0.0, 0.6]}]  # round 1
    results = {}
    for ema in (0.5, None):
        strategy = aioli(update_steps=5, lp_rounds=1, lp_steps=1, one_hot_factor=0.5, ema=ema)
        assert np.allclose(strategy.initial_weights(), [0.5 if j == strategy.order(0)[0] else 0.25 for j in range(3)])
        mixtures = []
        for round_index, start in ((0, 1), (1, 6)):  # LearnParams reads at steps start … start + 3
            loss = np.array([3.0, 3.0, 3.0])
            for q in range(4):
                if q:
                    loss = loss - np.array(drops[round_index][strategy.order(round_index)[q - 1]])
                out = strategy.update(step_stats(start + q, loss))
                if q == 2:  # the step after LearnParams trains on the mixture before this round's
                    assert np.allclose(out, [1 / 3] * 3 if round_index == 0 else mixtures[0], rtol=0, atol=1e-15)
            mixtures.append(out)
            record = strategy.trace()
            if round_index == 0:
                np.testing.assert_allclose(record["interaction_matrix"],
                                           [[1.1, -0.1, -0.5], [0.0, 0.4, 0.0], [-0.4, 0.0, 0.8]], atol=1e-12)
                # shifted by 0.5, divided by its sum 5.8
                np.testing.assert_allclose(record["applied_matrix"],
                                           np.array([[1.6, 0.4, 0.0], [0.5, 0.9, 0.5], [0.1, 0.5, 1.3]]) / 5.8,
                                           atol=1e-12)
        results[ema] = mixtures
    first = np.exp(np.array([2.2, 1.8, 1.8]) / 5.8)
    second_columns = np.array([0.25, 0.25, 0.5])  # round 1: A = [[.6,-.2,-.2],[-.2,.6,-.2],[-.6,-.6,1.8]], +0.6, /6.4
    for ema in (0.5, None):
        np.testing.assert_allclose(results[ema][0], first / first.sum(), rtol=0, atol=1e-12)
    ema_second = np.exp(0.5 * second_columns + 0.5 * np.array([2.2, 1.8, 1.8]) / 5.8)
    np.testing.assert_allclose(results[0.5][1], ema_second / ema_second.sum(), rtol=0, atol=1e-12)
    cumulative = first * np.exp(second_columns)
    np.testing.assert_allclose(results[None][1], cumulative / cumulative.sum(), rtol=0, atol=1e-12)
    assert abs(results[None][1][2] - 0.38267) < 1e-5  # e^0.81034 / (e^0.62931 + e^0.56034 + e^0.81034)


class AuthorsAioli:
    """AioliTrainer.train's dynamic stage (no prior) with learn_params_subroutine, in their structure:
    ``train(weights)`` takes one optimizer step, ``evaluate()`` returns the per-domain val loss. Their
    ``np.random.permutation`` draws are replaced by the same generator as ours (the RNG stream is not
    part of the method)."""

    def __init__(self, k, seed, eta, lp_rounds, lp_steps, update_steps, one_hot_factor, ema, normalize, diagonal):
        self.k, self.seed, self.eta, self.lp_rounds, self.lp_steps = k, seed, eta, lp_rounds, lp_steps
        self.update_steps, self.one_hot_factor, self.ema = update_steps, one_hot_factor, ema
        self.normalize, self.diagonal = normalize, diagonal
        self.graphs, self.mixtures, self.trained = [], [], []

    def learn_params_subroutine(self, loss_0, i, train, evaluate):
        previous_loss = loss_0.copy()
        new_graph = np.zeros((self.k, self.k))
        rng = np.random.default_rng([self.seed, i])
        mixture_order = np.concatenate([rng.permutation(self.k) for _ in range(self.lp_rounds)])
        for onehot_idx in mixture_order:
            weights = np.ones(self.k) * (1 - self.one_hot_factor) / (self.k - 1)
            weights[onehot_idx] = self.one_hot_factor
            for _ in range(self.lp_steps):
                train(weights)
            new_loss = evaluate()
            new_graph[:, onehot_idx] += previous_loss - new_loss
            previous_loss = new_loss
        new_graph /= self.lp_rounds
        if self.one_hot_factor != 1 and not self.diagonal:
            weight_matrix = np.zeros((self.k, self.k))
            for row in range(self.k):
                weight_matrix[row] = (1 - self.one_hot_factor) / (self.k - 1)
                weight_matrix[row, row] = self.one_hot_factor
            a = np.zeros((self.k, self.k))
            for row_index, row in enumerate(new_graph):
                a[row_index] = np.linalg.solve(weight_matrix, row)
            new_graph = a
        elif self.diagonal:  # theirs: only when one_hot_factor != 1 (ours applies it at 1 as well)
            a = np.zeros((self.k, self.k))
            for row in range(self.k):
                a[row, row] = new_graph[row, row] / self.one_hot_factor
            new_graph = a
        return new_graph

    def run(self, total_steps, train, evaluate):
        weights_init = np.ones(self.k)
        weights, ema_graph = weights_init, None
        counter = 0
        lp_duration = self.lp_rounds * self.lp_steps * self.k

        def step(w):
            self.trained.append(w / w.sum())
            train(w / w.sum())

        for i in range(-(-total_steps // self.update_steps)):
            loss_0 = evaluate()
            graph = self.learn_params_subroutine(loss_0, i, step, evaluate)
            self.graphs.append(graph.copy())
            counter += lp_duration
            if self.normalize:
                min_entry = graph.min()
                if min_entry < 0:
                    graph -= min_entry
                graph /= graph.sum()
            if self.ema is not None:
                ema_graph = graph if i == 0 else (1 - self.ema) * graph + self.ema * ema_graph
                weights = np.multiply(weights_init, np.exp(self.eta * ema_graph.sum(axis=0)))
            elif i == 0:
                weights = np.multiply(weights_init, np.exp(self.eta * graph.sum(axis=0)))
            else:
                weights = np.multiply(weights, np.exp(self.eta * graph.sum(axis=0)))
            self.mixtures.append(weights / sum(weights))
            while True:
                step(weights)
                counter += 1
                if counter % self.update_steps == 0:
                    break
            if counter == total_steps:
                break


@pytest.mark.parametrize("settings", [
    dict(one_hot_factor=0.5, ema=0.5, normalize_a=True, diagonal=False, eta=1.0),
    dict(one_hot_factor=0.6, ema=None, normalize_a=False, diagonal=False, eta=20.0),
    dict(one_hot_factor=0.75, ema=0.1, normalize_a=True, diagonal=True, eta=2.0),
    dict(one_hot_factor=1.0, ema=None, normalize_a=True, diagonal=False, eta=3.0),
])
def test_whole_runs_match_the_authors_loop_to_1e_9(settings):
    total, update_steps, lp_rounds, lp_steps = 120, 30, 2, 3  # L = 18: steps 1-18 LearnParams, 19 the lag
    strategy = aioli(total_steps=total, seed=7, update_steps=update_steps, lp_rounds=lp_rounds, lp_steps=lp_steps,
                     **settings)
    ours_model, authors_model = ToyModel(1, total), ToyModel(1, total)
    used, traces, _ = drive(strategy, ours_model, 1, total, strategy.initial_weights())
    authors = AuthorsAioli(3, 7, settings["eta"], lp_rounds, lp_steps, update_steps, settings["one_hot_factor"],
                           settings["ema"], settings["normalize_a"], settings["diagonal"])
    authors.run(total, authors_model.train, lambda: authors_model.loss.copy())
    learned = [t for t in traces.values() if t and "mixture" in t]
    assert len(learned) == len(authors.mixtures) == 4
    for record, graph, mixture in zip(learned, authors.graphs, authors.mixtures):
        np.testing.assert_allclose(record["interaction_matrix"], graph, rtol=0, atol=1e-9)
        np.testing.assert_allclose(record["mixture"], mixture, rtol=0, atol=1e-9)
    lag_steps = {r * update_steps + 19 for r in range(4)}
    for step in range(1, total + 1):  # every step trains on their mixture but the one lag step a round
        if step not in lag_steps:
            np.testing.assert_allclose(used[step], authors.trained[step - 1], rtol=0, atol=1e-9, err_msg=f"step {step}")
    assert np.ptp(authors.mixtures[-1]) > 0.02  # the mixture moved


def test_schedule_of_readings_and_mixtures():
    strategy = aioli(total_steps=37, update_steps=10, lp_rounds=1, lp_steps=2)  # L = 6; round 3 would need 38
    assert strategy.rounds == 3
    assert [s for s in range(1, 38) if strategy.signal_due("heldout_loss", s)] == \
        [1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 25, 27]
    assert [s for s in range(1, 38) if strategy.needs_step_stats(s)] == \
        [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 22, 23, 24, 25, 26, 27]
    assert not strategy.signal_due("domain_embeddings", 1)
    assert strategy.signal_options() == {"heldout_loss": {"windows": 8}} and strategy.stratified_batches()
    prior = aioli(total_steps=33, prior_steps=3, prior="natural", update_steps=10, lp_rounds=1, lp_steps=2)
    assert np.allclose(prior.initial_weights(), [0.5, 0.3, 0.2])
    assert [s for s in range(1, 34) if prior.signal_due("heldout_loss", s)] == \
        [4, 6, 8, 10, 14, 16, 18, 20, 24, 26, 28, 30]
    assert [s for s in range(1, 34) if prior.needs_step_stats(s)] == [*range(3, 11), *range(13, 21), *range(23, 31)]
    # a run too short for any round keeps the prior and reads nothing
    short = aioli(total_steps=7, update_steps=10, lp_rounds=1, lp_steps=2)
    assert short.rounds == 0 and not any(short.needs_step_stats(s) for s in range(1, 8))


def test_a_resume_mid_learn_params_continues_identically(tmp_path):
    hparams = dict(total_steps=80, update_steps=20, lp_rounds=1, lp_steps=2, one_hot_factor=0.6, ema=0.3)
    model = ToyModel(3, 80)
    first = aioli(**hparams)
    _, _, weights = drive(first, model, 1, 24, first.initial_weights())  # inside round 1's LearnParams
    saved = save_checkpoint(tmp_path, 24, {"strategy": first.state_dict()})  # the loop's own checkpoint format
    resumed = aioli(**hparams)
    resumed.load_state_dict(read_checkpoint(saved)["strategy"])
    twin = ToyModel(3, 80)
    twin.loss, twin.steps = model.loss.copy(), model.steps
    a = drive(first, model, 25, 80, weights)
    b = drive(resumed, twin, 25, 80, weights)
    assert all(np.array_equal(a[0][s], b[0][s]) for s in range(25, 81)) and a[1] == b[1]
    assert sum(1 for t in a[1].values() if t and "mixture" in t) == 3


def test_trace_readings_and_a_constant_matrix_warns():
    strategy = aioli(update_steps=5, lp_rounds=1, lp_steps=1, one_hot_factor=0.5)
    strategy.update(step_stats(1, [3.0, 3.0, 3.0]))
    assert strategy.trace() == {"round": 0, "heldout_loss": [3.0, 3.0, 3.0], "trained_on": None}
    strategy.update(step_stats(2, [3.0, 3.0, 3.0]))
    assert strategy.trace()["trained_on"] == DOMAINS[strategy.order(0)[0]]
    strategy.update(step_stats(3, [3.0, 3.0, 3.0]))
    with pytest.warns(UserWarning, match=r"constant \(0.0\).*moves no weight"):
        out = strategy.update(step_stats(4, [3.0, 3.0, 3.0]))
    assert np.allclose(out, 1 / 3)
    with pytest.raises(TrainingError, match="reads 'heldout_loss' at step 6"):
        strategy.update(step_stats(6))
    with pytest.raises(TrainingError, match="3 finite losses"):
        strategy.update(step_stats(6, [3.0, np.nan, 3.0]))


def test_refusals():
    for hparams, message in [({"update_steps": 61}, r"= 60 steps and one more .* use update_steps >= 62"),
                             ({"one_hot_factor": 1 / 3}, r"one_hot_factor must be in \(1/3, 1\]"),
                             ({"ema": 1.0}, r"ema must be in \[0, 1\)"), ({"eta": 0.0}, "eta must be"),
                             ({"lp_steps": 0}, "lp_steps must be >= 1"), ({"prior": "pile"}, "prior must be"),
                             ({"prior_steps": -1}, "prior_steps must be >= 0"), ({"ema": "x"}, "ema")]:
        with pytest.raises(ConfigError, match=message):
            Aioli.check_hparams(hparams, list(DOMAINS))
    Aioli.check_hparams({"ema": None}, list(DOMAINS))
    with pytest.raises(ConfigError, match=">= 2 domains"):
        Aioli.check_hparams({}, ["code"])
    with pytest.raises(ConfigError, match="batch_size >= 3"):
        Aioli.check_training({}, {"batch_size": 2}, list(DOMAINS))
    Aioli.check_training({"stratified": False}, {"batch_size": 2}, list(DOMAINS))
    h = {**Aioli.defaults, "update_steps": 10, "lp_rounds": 1, "lp_steps": 2}
    reason = Aioli.static_reason(h, stage="final", steps=7, warmup_steps=0, domains=list(DOMAINS))
    assert "needs prior_steps 0 + LearnParams 6 + 2 = 8 steps but the run has 7" in reason
    assert Aioli.static_reason(h, stage="final", steps=8, warmup_steps=0, domains=list(DOMAINS)) is None
    # update_steps past the run's end is the authors' "aioli static" ablation: one round, then its mixture
    assert Aioli.static_reason({**h, "update_steps": 500}, stage="final", steps=8, warmup_steps=0,
                               domains=list(DOMAINS)) is None
