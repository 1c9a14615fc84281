"""Static strategies, weight validation, the registry and the stage declaration."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from mixbench.errors import ConfigError, TrainingError
from strategies import StrategyContext, available, get_strategy_class, validate_weights
from strategies.base import Strategy, StepStats

DOMAINS = ("code", "books", "qa")


def context(**kw) -> StrategyContext:
    base = dict(name="x", domains=DOMAINS, train_tokens=np.array([600, 300, 100]), stage="final",
                total_steps=10, seed=0, vocab_size=512)
    return StrategyContext(**{**base, **kw})


def test_uniform_natural_static_weights_by_hand():
    assert np.allclose(get_strategy_class("uniform")(context()).initial_weights(), [1 / 3, 1 / 3, 1 / 3])
    assert np.allclose(get_strategy_class("natural")(context()).initial_weights(), [0.6, 0.3, 0.1])
    static = get_strategy_class("static")(context(), weights={"code": 0.5, "books": 0.25, "qa": 0.25})
    assert np.allclose(static.initial_weights(), [0.5, 0.25, 0.25])
    # A list (as a published mixture over other domains is overlaid) is read in corpus order;
    # relative weights are divided by their sum only when the entry says so.
    listed = get_strategy_class("static")(context(), weights=[2, 1, 1], normalize=True)
    assert np.allclose(listed.initial_weights(), [0.5, 0.25, 0.25])
    with pytest.raises(ConfigError, match=r"weights sum to 4, not 1 \(within 1e-06\): \{'code': 2, 'books': 1, 'qa': 1\}"):
        get_strategy_class("static")(context(), weights=[2, 1, 1]).initial_weights()


def test_static_strategies_never_update_and_hand_on_their_weights():
    strategy = get_strategy_class("natural")(context())
    stats = StepStats(step=1, lr=1e-3, domain_loss=np.array([3.0, np.nan, 2.0]), domain_tokens=np.array([64, 0, 64]))
    assert strategy.update(stats) is None
    assert strategy.loss_weights() is None
    for _ in range(3):
        strategy.record(strategy.initial_weights())
    assert np.allclose(strategy.final_weights(), [0.6, 0.3, 0.1])


def test_final_weights_default_to_the_mean_over_recorded_steps_and_survive_state_roundtrip():
    strategy = get_strategy_class("uniform")(context())
    strategy.record(np.array([1.0, 0.0, 0.0]))
    strategy.record(np.array([0.0, 0.5, 0.5]))
    clone = get_strategy_class("uniform")(context())
    clone.load_state_dict(strategy.state_dict())
    assert np.allclose(clone.final_weights(), [0.5, 0.25, 0.25])


def test_unknown_strategy_lists_the_registered_ones():
    with pytest.raises(KeyError) as err:
        get_strategy_class("doremy")
    assert all(name in str(err.value) for name in available())


@pytest.mark.parametrize(
    "weights, message",
    [
        ([0.5, 0.5], "shape (2,), expected (3,)"),
        ([0.5, np.nan, 0.5], "non-finite"),
        ([1.2, -0.2, 0.0], "negative"),
        ([0.5, 0.3, 0.1], "summing to 0.9"),
    ],
)
def test_validate_weights_names_strategy_and_step(weights, message):
    with pytest.raises(TrainingError) as err:
        validate_weights(weights, 3, strategy="mine", step=7)
    assert message in str(err.value) and "strategy 'mine' at step 7" in str(err.value)


def test_hyperparameter_types_are_checked():
    class Tempered(Strategy):
        defaults = {"temperature": 1.0, "rounds": 1, "warm": False}

        def initial_weights(self):
            return np.ones(3) / 3

    Tempered.check_hparams({"temperature": 2, "rounds": 3, "warm": True}, list(DOMAINS))  # int is a fine float
    for bad in ({"temperature": "hot"}, {"rounds": 1.5}, {"warm": 1}, {"rounds": True}):
        with pytest.raises(ConfigError, match="must be"):
            Tempered.check_hparams(bad, list(DOMAINS))


def test_bad_declarations_are_rejected_when_the_class_is_defined():
    # (A signal no provider computes is refused by the config check: tests/test_config.py.)
    with pytest.raises(TypeError, match="ending in 'final'"):
        type("Bad", (Strategy,), {"stages": ("final", "proxy"), "initial_weights": lambda self: None})


def test_reading_stage_declarations_does_not_import_torch():
    code = (
        "import sys; from strategies import REGISTRY, get_strategy_class\n"
        "stages = {n: get_strategy_class(n).stages for n in REGISTRY}\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(stages)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "'uniform': ('final',)" in out.stdout
