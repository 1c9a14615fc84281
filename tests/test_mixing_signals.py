"""The signals that steer by held-out data (models/signals/heldout_loss.py, embeddings.py): what
they measure, on which parameters, and that their forwards are counted as the run's compute."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

import strategies
from eval.analysis.plan_costs import planned_passes
from mixbench.errors import ConfigError
from mixbench.io import read_json
from models.train import train
from strategies import grid_config
from strategies.base import Strategy

ASKED_AT = 5  # the step the toy strategy asks for both signals


class AsksOnce(Strategy):
    """Uniform; asks for each held-out signal at one step and keeps what it got."""

    signals = frozenset({"heldout_loss", "domain_embeddings"})

    def initial_weights(self):
        return np.full(len(self.context.domains), 1 / len(self.context.domains))

    def signal_options(self):
        return {"heldout_loss": {"windows": 3}, "domain_embeddings": {"split": "val", "windows": 3}}

    def signal_due(self, signal, step):
        return step == ASKED_AT

    def needs_step_stats(self, step):
        return step == ASKED_AT

    def update(self, stats):
        self.got = {name: np.asarray(value).tolist() for name, value in stats.extra.items()}

    def trace(self):
        got, self.got = getattr(self, "got", None), None
        return got


@pytest.fixture
def asking_config(built_data, monkeypatch):
    monkeypatch.setitem(strategies.REGISTRY, "asks", "test_mixing_signals:AsksOnce")
    training = dict(built_data["training"], steps=6, eval_every=4, heldout_windows=3, dropout=0.0)
    return grid_config.validate(dict(built_data, training=training,
                                     grid=dict(built_data["grid"], strategies=["asks"])))


def test_heldout_loss_is_the_curve_of_the_previous_step_and_embeddings_are_the_last_hidden_states(
        asking_config, tmp_path):
    out = tmp_path / "run"
    assert train(asking_config, "test", "asks", 0, "final", out, {})
    (record,) = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    assert record["step"] == ASKED_AT
    # With the curves' own windows, the signal at step 5 (the parameters after step 4) is the
    # learning curve's measurement after step 4.
    curve = pd.read_csv(out / "val.csv").set_index("step")
    domains = asking_config["corpus"]["domains"]
    np.testing.assert_allclose(record["heldout_loss"], curve.loc[4, [f"val_loss/{d}" for d in domains]],
                               rtol=1e-6)
    embeddings = np.array(record["domain_embeddings"])
    assert embeddings.shape == (len(domains), read_json(out / "model" / "config.json")["n_embd"])
    assert np.all(np.isfinite(embeddings)) and not np.allclose(embeddings[0], embeddings[1])
    # Both measurements' forwards count: 2 signals x K domains x 3 windows x seq_len tokens.
    info = read_json(out / "run.json")
    training = asking_config["training"]
    trained = training["steps"] * training["batch_size"] * training["seq_len"]
    assert info["token_passes"]["forward"] == trained + 2 * len(domains) * 3 * training["seq_len"]
    # The cost plan counts the same passes before anything runs.
    assert planned_passes(asking_config, "asks", "final", "test") == info["token_passes"]


@pytest.mark.parametrize("layer", ["final", "middle"])
def test_embeddings_are_token_means_of_the_hidden_states_of_the_layer_asked_for(built_data, layer):
    from pathlib import Path

    from corpus.tokens import TokenStore
    from models.heldout import HeldOutSet
    from models.gpt2 import build_model, gpt2_config
    from models.loop import LoopSettings
    from models.signals import provider_class
    from models.signals.base import ProviderHandles, SignalSources, StepContext
    from models.step import StepPasses

    store = TokenStore(Path(built_data["data_dir"]) / "tokens", "train")
    torch.manual_seed(3)
    model = build_model(gpt2_config("tiny", store.vocab_size)).eval()  # 2 blocks: the middle is not the last
    settings = LoopSettings.from_config(dict(built_data["training"], micro_batch_size=2), steps=1)
    passes = StepPasses(model=model, seq_len=settings.seq_len, num_domains=len(store.domains),
                        device=torch.device("cpu"), bf16=False, world_size=1, num_parameters=1)
    handles = ProviderHandles(model=model, raw_model=model, passes=passes, settings=settings,
                              domains=tuple(store.domains),
                              sources=SignalSources(data_dir=Path(built_data["data_dir"]), seed=0))
    provider = provider_class("domain_embeddings")(name="domain_embeddings", handles=handles,
                                                   options={"split": "train", "windows": 2, "layer": layer})
    got = provider.compute(StepContext(step=1, lr=0.0, batch=None))
    windows = HeldOutSet(store, seq_len=settings.seq_len, windows_per_domain=2)
    with torch.no_grad():
        states = model(input_ids=torch.from_numpy(windows.tokens[:, :-1]), output_hidden_states=True).hidden_states
    hidden = states[-1] if layer == "final" else states[len(states) // 2]  # the middle one: transformers' indexing
    expected = np.stack([hidden[windows.domain_ids == j].double().mean(dim=(0, 1)).numpy()
                         for j in range(len(store.domains))])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert passes.token_passes["forward"] == len(windows.tokens) * settings.seq_len
    with pytest.raises(ConfigError, match="options are split"):
        provider_class("domain_embeddings")(name="domain_embeddings", handles=handles, options={"layer": "first"})
    one_block = build_model(gpt2_config("test", store.vocab_size))
    with pytest.raises(ConfigError, match="layer 'middle' needs a model of 2 or more blocks; this one has 1"):
        provider_class("domain_embeddings")(name="domain_embeddings", options={"layer": "middle"},
                                            handles=dataclasses.replace(handles, model=one_block, raw_model=one_block))


def test_a_window_count_that_is_not_a_positive_integer_is_refused():
    from models.signals.heldout_loss import windows_option

    assert windows_option({}, "heldout_loss") == 8
    for bad in (0, -1, 2.5, "4", True):
        with pytest.raises(ValueError, match="windows must be a positive integer"):
            windows_option({"windows": bad}, "heldout_loss")
