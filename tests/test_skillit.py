"""Skill-It (strategies/skillit.py): the skills graph and the first mixture by hand, a run of updates
by hand, a run against a transcription of the authors' update rule (HazyResearch/aioli,
``trainer/skillit_trainer.py``, SkillitTrainer.train, with the graph of ``mixing_law_fitting.py``,
skills_graph), the schedule, the refusals and an exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixbench.errors import ConfigError, TrainingError
from models.checkpoint import read_checkpoint, save_checkpoint
from strategies import StepStats, StrategyContext
from strategies.skillit import SkillIt

DOMAINS = ("code", "books", "qa")
# Run i trains on domain i alone; row i: its held-out loss per domain before its first step and after its last.
BEFORE = np.array([[10.0, 8.0, 5.0], [10.0, 8.0, 5.0], [10.0, 8.0, 4.0]])
AFTER = np.array([[6.0, 7.0, 4.5], [9.0, 4.0, 4.0], [9.5, 7.6, 2.0]])
# A_ij = (before_ij − after_ij) / before_ij, worked out by hand.
GRAPH = [[0.4, 0.125, 0.1], [0.1, 0.5, 0.2], [0.05, 0.05, 0.5]]


def names(k=3):
    return [f"swarm-{i}" for i in range(k)]


def skillit(stage="final", total_steps=10, before=BEFORE, after=AFTER, with_initial=True, domains=DOMAINS, **hparams):
    SkillIt.check_hparams(hparams, list(domains))
    replica = int(stage.split("-")[1]) if stage.startswith("swarm-") else None
    kwargs = dict(name="skillit", domains=domains, train_tokens=np.ones(len(domains)), stage=stage,
                  total_steps=total_steps, seed=0, vocab_size=64, replica=replica,
                  upstream_heldout={n: np.array(row) for n, row in zip(names(len(domains)), after)})
    if not with_initial:
        return SkillIt(StrategyContext(**kwargs), **hparams)
    initial = {n: np.array(row) for n, row in zip(names(len(domains)), before)}
    return SkillIt(StrategyContext(**kwargs, upstream_heldout_initial=initial), **hparams)


def stats(step, heldout=None):
    extra = {} if heldout is None else {"heldout_loss": np.array(heldout, dtype=float)}
    return StepStats(step, 1e-3, np.full(3, 5.0), np.full(3, 100.0), extra)


def softmax(exponents):
    scaled = [math.exp(e) for e in exponents]
    return [s / sum(scaled) for s in scaled]


def test_the_graph_and_the_first_mixture_by_hand():
    strategy = skillit(eta=0.2)
    np.testing.assert_allclose(strategy.skills_graph(), GRAPH, rtol=0, atol=1e-15)
    # p_1 ∝ exp(η Σ_j A_ij): row sums 0.625, 0.8, 0.6.
    np.testing.assert_allclose(strategy.initial_weights(), softmax([0.125, 0.16, 0.12]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(strategy.initial_weights(), [0.329964, 0.341717, 0.328318], atol=1e-6)
    # The swarm: run i on domain i alone, one run per domain.
    assert skillit("swarm-1").initial_weights().tolist() == [0, 1, 0]
    assert SkillIt.replicas_for(SkillIt.defaults, list(DOMAINS)) == {"swarm": 3}


def test_a_run_of_updates_by_hand():
    strategy = skillit(total_steps=10, eta=0.2, update_every=2, window=2)
    losses = {1: [10, 8, 5], 3: [7, 6, 4], 5: [6, 5, 3.5], 7: [5.5, 4.5, 3]}  # L(f_t) at each round's first step
    # η A · (sum of the window's losses), by hand: the windows are L1; L1+L3; L3+L5; L5+L7.
    exponents = {2: [1.1, 1.2, 0.68], 4: [1.89, 2.1, 1.21], 6: [1.465, 1.66, 0.99], 8: [1.2875, 1.44, 0.86]}
    for step in range(1, 10):
        mixture = strategy.update(stats(step, losses.get(step)))
        if step in exponents:
            np.testing.assert_allclose(mixture, softmax(exponents[step]), rtol=0, atol=1e-14)
        else:
            assert mixture is None
    assert strategy.rounds_started == 4


class AuthorsSkillit:
    """aioli's skills_graph (mixing_law_fitting.py) and the numpy part of SkillitTrainer.train
    (trainer/skillit_trainer.py), transcribed in their structure: an evaluation at every counter that is
    a multiple of ckpt_steps (after that iteration's optimizer step), rounds of update_steps iterations,
    and at a round's end weights = weights_init · exp(η · graph · Σ of the last `window` evaluations)."""

    def __init__(self, start_losses, end_losses, eta, update_steps, window, total_steps, ckpt_steps):
        k = len(start_losses)
        graph = np.zeros((k, k))
        for i in range(k):
            graph[i] = (start_losses[i] - end_losses[i]) / start_losses[i]
        for i in range(k):
            for j in range(k):
                if i != j and graph[i, j] == 1:
                    graph[i, j] = 0.5
        self.graph, self.eta, self.window = graph, eta, window
        self.update_steps, self.total_steps, self.ckpt_steps = update_steps, total_steps, ckpt_steps
        self.weights_init = np.ones(k)
        self.weights = self.weights_init * np.exp(eta * graph.dot(self.weights_init))

    def train(self, evaluate):
        """Yields (counter, proportions) after each round's update; evaluate(counter) is the validation loss."""
        all_losses, counter = [], 0
        while True:
            dataloader_step = 0
            while True:
                if counter % self.ckpt_steps == 0:
                    all_losses.append(evaluate(counter))
                dataloader_step += 1
                counter += 1
                if dataloader_step == self.update_steps:
                    break
            if counter == self.total_steps:
                break
            idx = len(all_losses)
            loss_arr = np.array(all_losses[max(0, idx - self.window): idx]).sum(axis=0)
            self.weights = np.multiply(self.weights_init, np.exp(self.eta * self.graph.dot(loss_arr)))
            yield counter, self.weights / sum(self.weights)


def test_a_run_matches_a_transcription_of_the_authors_code():
    rng = np.random.default_rng(0)
    before = np.tile(rng.uniform(9, 11, 3), (3, 1))  # one initial model
    after = before * rng.uniform(0.5, 0.95, (3, 3))
    eta, every, window, total = 0.5, 5, 3, 40
    curve = {step: 9.0 * np.exp(-step / 30) * rng.uniform(0.8, 1.2, 3) for step in range(1, total + 1)}
    ours = skillit(total_steps=total, before=before, after=after, eta=eta, update_every=every, window=window)
    authors = AuthorsSkillit(before, after, eta, every, window, total, ckpt_steps=every)
    np.testing.assert_allclose(ours.initial_weights(), authors.weights / authors.weights.sum(), rtol=0, atol=1e-12)
    # Their evaluation at counter c (0-based, during the c+1-th step) is our measurement at step c + 1.
    expected = dict(authors.train(lambda counter: curve[counter + 1]))
    got = {}
    for step in range(1, total + 1):
        heldout = curve[step] if ours.signal_due("heldout_loss", step) else None
        mixture = ours.update(stats(step, heldout))
        if mixture is not None:
            got[step] = mixture
    assert sorted(got) == sorted(expected) == [5, 10, 15, 20, 25, 30, 35]
    for step in got:
        np.testing.assert_allclose(got[step], expected[step], rtol=0, atol=1e-12)
    assert np.ptp(np.array(list(got.values())), axis=0).max() > 0.01  # the mixture moved


def test_the_schedule_asks_for_the_loss_at_each_rounds_start_and_updates_at_its_end():
    strategy = skillit(total_steps=12, update_every=3)
    assert [s for s in range(1, 13) if strategy.signal_due("heldout_loss", s)] == [1, 4, 7]  # 10: no update reads it
    assert [s for s in range(1, 13) if strategy.needs_step_stats(s)] == [1, 3, 4, 6, 7, 9]  # 12 is the last step
    assert strategy.required_signals() == {"heldout_loss"}
    assert strategy.signal_options() == {"heldout_loss": {"windows": 8}}
    swarm = skillit("swarm-2", total_steps=12, update_every=3)
    assert not any(swarm.needs_step_stats(s) or swarm.signal_due("heldout_loss", s) for s in range(1, 13))
    assert swarm.required_signals() == frozenset() and swarm.signal_options() == {} and swarm.trace() is None
    assert SkillIt.stage_hparams("swarm-2", {**SkillIt.defaults, "eta": 1.0}) == {}  # eta retrains no swarm run
    assert SkillIt.stage_hparams("final", SkillIt.defaults) == SkillIt.defaults


def test_the_trace_holds_the_graph_once_then_the_losses_and_mixtures():
    strategy = skillit(total_steps=10, update_every=2, window=2)
    strategy.update(stats(1, [10, 8, 5]))
    first = strategy.trace()
    np.testing.assert_allclose(first["skills_graph"], GRAPH, rtol=0, atol=1e-15)
    assert first["round"] == 1 and first["heldout_loss"] == [10, 8, 5]
    strategy.update(stats(2))
    second = strategy.trace()
    assert "skills_graph" not in second and second["loss_window"] == [10, 8, 5]
    assert second["exponent"] == pytest.approx([1.1, 1.2, 0.68]) and sum(second["mixture"]) == pytest.approx(1)
    strategy.update(stats(3, [7, 6, 4]))
    strategy.trace()
    assert strategy.trace() is None  # a step with nothing new


def test_a_resumed_run_continues_identically(tmp_path):
    def run(strategy, steps, losses):
        out = []
        for step in steps:
            heldout = losses[step] if strategy.signal_due("heldout_loss", step) else None
            out.append((strategy.update(stats(step, heldout)), strategy.trace()))
        return out

    rng = np.random.default_rng(1)
    losses = {s: rng.uniform(3, 8, 3) for s in range(1, 31)}
    whole = skillit(total_steps=30, update_every=4, window=3)
    expected = run(whole, range(1, 31), losses)
    first = skillit(total_steps=30, update_every=4, window=3)
    run(first, range(1, 15), losses)
    resumed = skillit(total_steps=30, update_every=4, window=3)
    saved = save_checkpoint(tmp_path, 14, {"strategy": first.state_dict()})  # the loop's own checkpoint format
    resumed.load_state_dict(read_checkpoint(saved)["strategy"])
    for (a, trace_a), (b, trace_b) in zip(expected[14:], run(resumed, range(15, 31), losses)):
        assert (a is None and b is None) or np.array_equal(a, b)
        assert trace_a == trace_b
    swarm = skillit("swarm-0")  # nothing measured yet: an empty window goes through a checkpoint too
    swarm.record(swarm.initial_weights())
    state = read_checkpoint(save_checkpoint(tmp_path / "swarm", 1, {"strategy": swarm.state_dict()}))["strategy"]
    again = skillit("swarm-0")
    again.load_state_dict(state)
    assert again.window_losses.shape == (0, 3) and again.final_weights().tolist() == [1, 0, 0]


def test_settings_and_missing_inputs_are_refused():
    with pytest.raises(ConfigError, match="eta must be finite and > 0"):
        SkillIt.check_hparams({"eta": 0.0}, list(DOMAINS))
    for key in ("update_every", "window", "heldout_windows"):
        with pytest.raises(ConfigError, match=f"{key} must be >= 1, got 0"):
            SkillIt.check_hparams({key: 0}, list(DOMAINS))
    with pytest.raises(ConfigError, match="needs >= 2"):
        SkillIt.check_hparams({}, ["code"])
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        SkillIt.check_hparams({"rounds": 10}, list(DOMAINS))
    with pytest.raises(ConfigError, match="heldout_windows must be > 0"):
        SkillIt.check_training(SkillIt.defaults, {"heldout_windows": 0}, list(DOMAINS))
    reason = SkillIt.static_reason({**SkillIt.defaults, "update_every": 100}, stage="final", steps=100,
                                   warmup_steps=0, domains=list(DOMAINS))
    assert "update_every 100 leaves no round's end before the last step 100" in reason
    assert SkillIt.static_reason({**SkillIt.defaults, "update_every": 99}, stage="final", steps=100, warmup_steps=0,
                                 domains=list(DOMAINS)) is None
    assert SkillIt.static_reason(SkillIt.defaults, stage="swarm-0", steps=10, warmup_steps=0,
                                 domains=list(DOMAINS)) is None
    with pytest.raises(TrainingError, match=r"which \['swarm-0', 'swarm-1', 'swarm-2'\] lack: retrain them"):
        skillit(with_initial=False).initial_weights()
    with pytest.raises(TrainingError, match=r"missing the held-out losses of \['swarm-2'\]"):
        skillit(after=AFTER[:2]).initial_weights()
    after = AFTER.copy()
    after[1, 2] = 0.0
    with pytest.raises(TrainingError, match="after its last step: run on books, loss of qa: 0.0"):
        skillit(after=after).initial_weights()
    with pytest.raises(TrainingError, match="no 'heldout_loss'"):
        skillit(update_every=2).update(stats(1))
    with pytest.warns(UserWarning, match=r"the weights of \['qa'\] underflow to 0"):
        skillit(eta=4000.0).initial_weights()
