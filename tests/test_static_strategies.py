"""Settings under which an adaptive strategy would never change its mixture: refused by the config
check before any job, named with their numbers and fixes, run only with ``allow_static: true``,
which enters the runs' fingerprints and their run.json. Each refused combination is also shown
to be static in the strategy's own arithmetic, so that the refusal refuses nothing that acts."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO, make_test_config
from mixbench import config as cfg
from mixbench.errors import ConfigError
from mixbench.io import read_json
from models.run_factory import run_fingerprint
from models.train import train
from strategies import grid_config
from strategies.base import Strategy, StrategyContext
from strategies.doge import doge_scores, log_softmax
from strategies.dograph import DoGraph
from strategies.doremi import exponentiated_gradient_step
from strategies.regression_mixing import MixtureRegressor, predicted_best

DOMAINS = ["code", "books", "encyclopedic", "docs", "man", "qa"]  # tests/config/test.yaml's


def refusal(tmp_path, **overrides) -> str:
    with pytest.raises(ConfigError) as caught:
        grid_config.validate(make_test_config(tmp_path, **overrides))
    return str(caught.value)


def test_dograph_with_update_every_at_the_step_count_is_refused_with_the_numbers_and_both_fixes(tmp_path):
    message = refusal(tmp_path, grid={"strategies": ["dograph"]}, strategies={"dograph": {"update_every": 30}})
    assert message == (
        "invalid configuration: strategies.dograph: the final run of 'dograph' (30 steps, training.steps) would "
        "never change its mixture: no multiple of update_every 30 falls in steps 4-29 (after the 3 warmup steps, "
        "before the last step), so it never updates and trains on uniform weights; use an update_every with a "
        "multiple in 4-29, e.g. 6, or set `allow_static: true` in strategies.dograph to run it anyway")
    assert "\n" not in message


@pytest.mark.parametrize("overrides, expected", [
    # Above the step count; a proxy in proxy mode (10 steps: its update at 10 is its last step).
    ({"strategies": {"dograph": {"update_every": 500}}}, "the final run of 'dograph' (30 steps, training.steps)"),
    ({"strategies": {"dograph": {"mode": "proxy", "update_every": 10}}},
     "the proxy run of 'dograph' (10 steps, stages.proxy.steps) would never change its mixture: no multiple of "
     "update_every 10 falls in steps 4-9"),
    # Below the step count, but every multiple within the warmup or at the last step: 25 then 50.
    ({"strategies": {"dograph": {"update_every": 25}}, "training": {"steps": 50, "warmup_steps": 30}},
     "no multiple of update_every 25 falls in steps 31-49"),
    # No interval at all works: the warmup ends on the step before the last.
    ({"strategies": {"dograph": {"update_every": 1}}, "training": {"warmup_steps": 29}},
     "no update_every can: lengthen the run or shorten training.warmup_steps"),
])
def test_dograph_schedules_without_an_update_are_refused(tmp_path, overrides, expected):
    assert expected in refusal(tmp_path, grid={"strategies": ["dograph"]}, **overrides)


@pytest.mark.parametrize("name, overrides, expected", [
    ("doremi", {"strategies": {"doremi": {"smoothing": 1.0, "rounds": 2}}},
     "strategies.doremi: the proxy and proxy-r2 runs of 'doremi' (10 steps, stages.proxy.steps) would never change "
     "its mixture: smoothing 1.0 makes every update"),
    ("doge", {"strategies": {"doge": {"dw_min": 2.0, "dw_max": 2.0}}},
     "the proxy run of 'doge' (10 steps, stages.proxy.steps) would never change its mixture: dw_min = dw_max = 2.0"),
    ("doge", {"strategies": {"doge": {"target": "books"}}, "corpus": {"domains": ["code", "books"]}},
     "target 'books' leaves one training domain (code)"),
    ("doge", {"strategies": {"doge": {"target": "train"}}, "corpus": {"domains": ["code", "books"]}},
     "target 'train' over the two domains code and books"),
    ("regmix", {"strategies": {"regmix": {"top_k": 500, "candidates": 500}}},
     "strategies.regmix: the fit run of 'regmix' would never change its mixture: top_k 500 = candidates 500"),
])
def test_every_static_combination_is_refused_and_runs_with_allow_static(tmp_path, name, overrides, expected):
    message = refusal(tmp_path, grid={"strategies": [name]}, **overrides)
    assert expected in message and f"set `allow_static: true` in strategies.{name} to run it anyway" in message
    allowed = cfg.deep_merge(overrides, {"strategies": {name: {"allow_static": True}}})
    grid_config.validate(make_test_config(tmp_path, grid={"strategies": [name]}, **allowed))


def test_a_variant_is_refused_under_its_sweep_and_allowed_on_its_base_entry(tmp_path):
    sweep = {"strategies": ["uniform"], "variants": {"dograph": {"update_every": [10, 30]}}}
    message = refusal(tmp_path, grid=sweep)
    assert message.startswith("invalid configuration: grid.variants.dograph (dograph@update_every=30 over "
                              "strategies.dograph): the final run of 'dograph@update_every=30'")
    assert "update_every=10" not in message.split("):", 1)[1]
    grid_config.validate(make_test_config(tmp_path, grid=sweep, strategies={"dograph": {"allow_static": True}}))


@pytest.mark.parametrize("path", ["config/config.yaml", "config/paper.yaml", "config/try.yaml",
                                  "tests/config/test.yaml", "benchmarks/fixture.yaml"])
def test_the_shipped_configurations_are_not_refused(path):
    grid_config.load(REPO / path)


@pytest.mark.parametrize("name", ["doremi", "doge", "dograph", "regmix"])
def test_each_adaptive_strategy_at_the_test_settings_is_not_refused(tmp_path, name):
    config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": [name]}))
    assert grid_config.static_runs(config, name) == []


def test_allow_static_must_be_a_boolean_and_only_adaptive_strategies_take_it(tmp_path):
    assert "hyperparameter 'allow_static' must be bool, got 'yes'" in refusal(
        tmp_path, grid={"strategies": ["dograph"]}, strategies={"dograph": {"allow_static": "yes"}})
    assert "unknown hyperparameter(s) ['allow_static']; valid: none" in refusal(
        tmp_path, strategies={"uniform": {"allow_static": True}})


def test_a_strategy_that_says_when_it_is_static_must_take_allow_static():
    with pytest.raises(TypeError, match="overrides static_reason needs defaults\\['allow_static'\\] = False"):
        class Forgetful(Strategy):
            @classmethod
            def static_reason(cls, hparams, **run):
                return None

            def initial_weights(self):
                return np.ones(2) / 2
    with pytest.raises(TypeError, match="only such a strategy takes it"):
        class Pretender(Strategy):
            defaults = {"allow_static": False}

            def initial_weights(self):
                return np.ones(2) / 2


def test_allow_static_changes_the_fingerprint_of_the_runs_that_depend_on_it(tmp_path):
    def fingerprints(name, hparams, stages):
        config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": [name]},
                                                       strategies={name: hparams}))
        return [run_fingerprint(config, cfg.Run(strategy=name, stage=s, size="test", seed=0)) for s in stages]

    static = {"update_every": 30}
    assert fingerprints("dograph", {**static, "allow_static": True}, ["final"]) != fingerprints(
        "dograph", {"allow_static": True, "update_every": 10}, ["final"])
    # Writing the default out changes nothing; a RegMix swarm run never depends on the fit's flag.
    assert fingerprints("dograph", {"allow_static": False}, ["final"]) == fingerprints("dograph", {}, ["final"])
    top = {"top_k": 500, "candidates": 500}
    swarm, final = fingerprints("regmix", {**top, "allow_static": True}, ["swarm-0", "final"])
    plain_swarm, = fingerprints("regmix", {}, ["swarm-0"])
    assert swarm == plain_swarm and final != fingerprints("regmix", {"top_k": 400, "candidates": 500}, ["final"])[0]


def test_static_allowed_is_recorded_only_where_the_flag_let_a_static_strategy_run(tmp_path):
    def allowed(name, hparams, stage):
        config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": [name]},
                                                       strategies={name: hparams}))
        return grid_config.static_allowed(config, name, stage)

    assert allowed("dograph", {"update_every": 30, "allow_static": True}, "final") is True
    assert allowed("dograph", {"update_every": 10, "allow_static": True}, "final") is None  # it acts: flag unused
    assert allowed("dograph", {"update_every": 10}, "final") is None
    assert allowed("doremi", {"smoothing": 1.0, "allow_static": True}, "final") is True  # trains on its proxy's u
    assert allowed("regmix", {"top_k": 500, "candidates": 500, "allow_static": True}, "fit") is True  # models/fit.py's
    assert allowed("regmix", {"top_k": 500, "candidates": 500, "allow_static": True}, "swarm-0") is None


def test_an_allowed_static_dograph_trains_and_run_json_records_it(built_data, tmp_path):
    config = grid_config.validate(cfg.deep_merge(built_data, {
        "grid": {"strategies": ["dograph"]}, "training": {"steps": 6},
        "strategies": {"dograph": {"update_every": 6, "allow_static": True}}}))
    assert train(config, "test", "dograph", 0, "final", tmp_path / "run", {})
    record = read_json(tmp_path / "run" / "run.json")
    assert record["allow_static"] is True
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    weights = np.stack([log[f"weight{d}"] for d in config["corpus"]["domains"]], axis=1)
    assert np.allclose(weights, 1 / len(DOMAINS))  # what the refusal said: uniform throughout
    assert not (tmp_path / "run" / "probes").exists() or not list((tmp_path / "run" / "probes").iterdir())


# -- each refused combination is static in the strategy's own arithmetic --------------------------------

def context(steps: int, warmup: int, stage: str = "final") -> StrategyContext:
    return StrategyContext(name="dograph", domains=tuple(DOMAINS), train_tokens=np.ones(len(DOMAINS)), stage=stage,
                           total_steps=steps, seed=0, vocab_size=512, warmup_steps=warmup)


@pytest.mark.parametrize("steps, warmup", [(30, 3), (50, 30), (12, 0), (8, 7)])
def test_dograph_static_reason_matches_the_steps_its_schedule_updates_at(steps, warmup):
    for every in range(1, steps + 3):
        hparams = {**DoGraph.defaults, "update_every": every}
        strategy = DoGraph(context(steps, warmup), **hparams)
        updates = [s for s in range(1, steps + 1) if strategy.needs_step_stats(s)]
        reason = DoGraph.static_reason(hparams, stage="final", steps=steps, warmup_steps=warmup, domains=DOMAINS)
        assert (reason is not None) == (updates == []), (every, updates, reason)
        if reason and warmup + 1 <= steps - 1:  # the suggested interval updates
            suggested = int(reason.rsplit("e.g. ", 1)[1])
            probe = DoGraph(context(steps, warmup), **{**hparams, "update_every": suggested})
            assert any(probe.needs_step_stats(s) for s in range(1, steps + 1))


def test_doremi_smoothing_one_keeps_every_alpha_uniform():
    rng = np.random.default_rng(0)
    alpha = np.full(4, 0.25)
    for _ in range(5):
        alpha = exponentiated_gradient_step(alpha, rng.uniform(0, 3, 4), step_size=1.0, smoothing=1.0)
        assert np.allclose(alpha, 0.25)
    assert not np.allclose(exponentiated_gradient_step(alpha, np.array([0, 1, 2, 3.0]), 1.0, 0.999), 0.25)


def gram(rng, k: int) -> np.ndarray:
    g = rng.normal(size=(k, 16))
    return g @ g.T


def test_doge_equal_clip_bounds_and_target_train_over_two_domains_keep_alpha_uniform():
    rng = np.random.default_rng(1)
    start = np.full(4, -np.log(4))
    for _ in range(5):  # dw_min = dw_max: every score is lr · dw
        scores = doge_scores(gram(rng, 5), np.arange(4), 4, lr=0.1, dw_min=2.0, dw_max=2.0)
        assert np.allclose(log_softmax(start + scores / 0.01), start)
    two = np.full(2, -np.log(2))
    for _ in range(5):  # target train over two domains: W_1 = W_2
        scores = doge_scores(gram(rng, 2), np.arange(2), None, lr=0.1, dw_min=-5.0, dw_max=5.0)
        assert np.allclose(log_softmax(two + scores / 0.01), two)
    moved = doge_scores(gram(rng, 3), np.arange(3), None, lr=0.1, dw_min=-5.0, dw_max=5.0)  # three: they differ
    assert not np.allclose(log_softmax(np.full(3, -np.log(3)) + moved / 0.01), -np.log(3))


def test_regmix_top_k_equal_to_candidates_ignores_the_regression():
    natural = np.array([0.4, 0.3, 0.2, 0.1])
    rng = np.random.default_rng(2)
    mixtures = rng.dirichlet(natural * 5, size=12)
    fits = [MixtureRegressor(kind="linear", seed=0).fit(mixtures, target)
            for target in (mixtures[:, 0], -mixtures[:, 0])]  # opposite orders of preference
    every = [predicted_best(r, natural, candidates=200, top_k=200, seed=3) for r in fits]
    assert np.allclose(every[0], every[1])
    best = [predicted_best(r, natural, candidates=200, top_k=20, seed=3) for r in fits]
    assert not np.allclose(best[0], best[1])
