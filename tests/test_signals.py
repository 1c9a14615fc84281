"""Signal providers: a new signal is one provider module plus one registry line, and the loop,
the entry point and the checkpoint carry it without naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import models.signals
import strategies
from strategies import signal_names
from strategies import grid_config
from mixbench.io import read_json
from models.signals import computation_order
from models.signals.base import SignalProvider
from models.train import train
from strategies.base import Strategy


class RunningTokenCount(SignalProvider):
    """A toy signal with state: tokens per domain seen so far (all ranks), and a made-up pass
    kind whose FLOPs must reach run.json."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.total = np.zeros(len(self.handles.domains))
        self.handles.passes.register("toy_pass", 7)

    def compute(self, step):
        counts = torch.bincount(step.batch.domains, minlength=len(self.handles.domains)).double()
        self.handles.passes.all_reduce(counts)
        self.total += counts.cpu().numpy() * self.options["scale"]
        self.handles.passes.count("toy_pass", 1)
        return self.total.copy()

    def state_dict(self):
        return {"total": self.total.copy()}

    def load_state_dict(self, state):
        self.total = np.array(state["total"])


class FollowsTheCount(Strategy):
    """Samples the domain seen least so far, by the toy signal, every other step."""

    signals = frozenset({"running_token_count"})

    def initial_weights(self):
        return np.full(len(self.context.domains), 1 / len(self.context.domains))

    def signal_options(self):
        return {"running_token_count": {"scale": 2.0}}

    def signal_due(self, signal, step):
        return step % 2 == 0

    def update(self, stats):
        self.seen = stats.extra.get("running_token_count")
        if self.seen is None:
            return None
        weights = np.full(len(self.seen), 0.5 / (len(self.seen) - 1))
        weights[np.argmin(self.seen)] = 0.5
        return weights

    def trace(self):
        seen, self.seen = getattr(self, "seen", None), None
        return None if seen is None else {"seen": seen}


@pytest.fixture
def toy_config(built_data, monkeypatch):
    monkeypatch.setitem(models.signals.REGISTRY, "running_token_count", "test_signals:RunningTokenCount")
    monkeypatch.setitem(signal_names.SIGNALS, "running_token_count", "tokens of each domain seen so far (a test signal)")
    monkeypatch.setitem(strategies.REGISTRY, "follow", "test_signals:FollowsTheCount")
    return grid_config.validate(dict(built_data, grid=dict(built_data["grid"], strategies=["follow"])))


def test_a_new_signal_reaches_its_strategy_with_options_schedule_state_and_flops(toy_config, tmp_path):
    assert train(toy_config, "test", "follow", 0, "final", tmp_path / "whole", {})
    records = [json.loads(line) for line in (tmp_path / "whole" / "trace.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(2, 31, 2))  # only when due
    batch = toy_config["training"]["batch_size"]
    assert [sum(r["seen"]) for r in records] == [2.0 * batch * i for i in range(1, 16)]  # the option's scale
    info = read_json(tmp_path / "whole" / "run.json")
    assert info["token_passes"]["toy_pass"] == 15
    assert info["flops"] == 6 * info["parameters"] * info["tokens"] + 7 * 15
    # Its state is checkpointed: a resumed run sees the same running totals.
    assert not train(toy_config, "test", "follow", 0, "final", tmp_path / "split", {}, stop_after=11)
    assert train(toy_config, "test", "follow", 0, "final", tmp_path / "split", {})
    split = [json.loads(line) for line in (tmp_path / "split" / "trace.jsonl").read_text().splitlines()]
    assert split == records


def test_providers_run_after_the_signals_they_use():
    assert computation_order({"domain_gradients", "target_gradient"}) == ["target_gradient", "domain_gradients"]
    assert computation_order({"example_gradient_features"}) == ["example_gradient_features"]
    with pytest.raises(KeyError, match="no provider computes signal 'nope'"):
        computation_order({"nope"})


def test_the_loop_names_no_signal():
    """Only the registry and the providers know signal names: not the loop, the entry point,
    the benchmark, the figures or the strategy base class."""
    from conftest import REPO

    names = list(models.signals.REGISTRY)
    for path in ["models/loop.py", "models/step.py", "models/train.py", "models/run_factory.py",
                 "benchmarks/throughput.py", "eval/analysis/figures.py", "strategies/base.py"]:
        text = (REPO / path).read_text()
        assert not [n for n in names if n in text], path
