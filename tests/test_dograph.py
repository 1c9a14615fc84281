"""DoGraph through the loop: probe features, sketch, untouched trajectory, schedule, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import strategies
from eval.analysis.plan_costs import planned_passes
from strategies import grid_config
from mixbench.errors import ConfigError
from mixbench.io import read_json
from models.gpt2 import build_model, gpt2_config
from models.probe import GradientProbe
from models.train import train
from strategies.base import Strategy
from strategies.dograph import DoGraph


def dograph_config(built_data, **hparams):
    hparams = {"update_every": 10, "probe_per_domain": 4, "target_per_domain": 2, "sketch_dim": 256, **hparams}
    return grid_config.validate(dict(built_data, grid=dict(built_data["grid"], strategies=["dograph"]),
                             stages={"proxy": {"steps": 30}}, strategies={"dograph": hparams}))


def trace(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]


def test_probe_features_are_sketched_per_sample_gradients_and_touch_nothing():
    torch.manual_seed(0)
    model = build_model(gpt2_config("test", 512)).train()
    probe = GradientProbe(model, None, sketch_dim=64, seed=3, device=torch.device("cpu"), chunk=3)
    assert probe.names and all(n.startswith("transformer.h.0.") for n in probe.names)  # the last block
    tokens = torch.randint(0, 512, (5, 17))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    features = probe.features(tokens)
    assert model.training and torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[n], p) and p.grad is None for n, p in model.named_parameters())
    model.eval()
    for row in range(5):  # one at a time, with autograd
        model.zero_grad()
        logits = model(input_ids=tokens[row : row + 1, :-1]).logits[0]
        torch.nn.functional.cross_entropy(logits, tokens[row, 1:]).backward()
        flat = torch.cat([dict(model.named_parameters())[n].grad.flatten() for n in probe.names])
        assert np.allclose(features[row], probe.sketch(flat[None])[0].numpy(), atol=1e-5)


def test_count_sketch_preserves_inner_products():
    probe = GradientProbe(build_model(gpt2_config("test", 512)), None, sketch_dim=1024, seed=0,
                          device=torch.device("cpu"))
    size = probe.buckets.numel()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(size, generator=gen)
    y = 0.6 * x + 0.8 * torch.randn(size, generator=gen)  # cosine ≈ 0.6
    sx, sy = probe.sketch(torch.stack([x, y]))
    assert float(sx @ sy) == pytest.approx(float(x @ y), rel=0.15)
    assert float(sx @ sx) == pytest.approx(float(x @ x), rel=0.15)


def test_the_tied_embedding_is_refused():
    with pytest.raises(ConfigError, match="tied token embedding"):
        GradientProbe(build_model(gpt2_config("test", 512)), r"transformer\.wte\.weight", 64, 0, torch.device("cpu"))


class ProbeOnly(Strategy):
    """Probes every 5 steps and never changes the weights."""

    signals = frozenset({"example_gradient_features"})

    def initial_weights(self):
        return np.full(len(self.context.domains), 1 / len(self.context.domains))

    def signal_due(self, signal, step):
        return step % 5 == 0

    def update(self, stats):
        if "example_gradient_features" in stats.extra:
            self.probed = getattr(self, "probed", 0) + 1
        return None


def test_probing_leaves_the_training_trajectory_bit_identical(built_data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setitem(strategies.REGISTRY, "probeonly", "test_dograph:ProbeOnly")
    config = grid_config.validate(dict(built_data, grid=dict(built_data["grid"], strategies=["uniform", "probeonly"]),
                               training=dict(built_data["training"], dropout=0.1)))
    assert train(config, "test", "uniform", 0, "final", tmp_path / "plain", {})
    assert train(config, "test", "probeonly", 0, "final", tmp_path / "probed", {})
    assert len(list((tmp_path / "probed" / "probes").glob("step*.npz"))) == 6
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("plain", "probed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_online_schedule_updates_every_interval_and_traces_the_graph(built_data, tmp_path):
    config = dograph_config(built_data)
    assert train(config, "test", "dograph", 0, "final", tmp_path / "run", {})
    records = trace(tmp_path / "run")
    assert [r["step"] for r in records] == [10, 20]  # after warmup (3), never at the last step (30)
    k = len(config["corpus"]["domains"])
    for r in records:
        assert np.isclose(sum(r["alpha"]), 1) and min(r["alpha"]) >= 0.5 / k - 1e-6
        assert np.array(r["mmd2"]).shape == (k, k) and np.array(r["affinity"]).shape == (k, k)
        assert sorted(i for c in r["communities"] for i in c) == list(range(k)) and r["solved"]
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    weights = np.stack([log[f"weight{d}"] for d in config["corpus"]["domains"]], axis=1)
    assert np.allclose(weights[:10], 1 / k) and np.allclose(weights[10], records[0]["alpha"])
    snapshot = np.load(tmp_path / "run" / "probes" / "step000010.npz")
    assert snapshot["features"].shape == (4 * k, 256) and snapshot["target"].shape == (2 * k, 256)
    # Each of the two probes costs a forward and a backward pass of its 4k + 2k sequences.
    info = read_json(tmp_path / "run" / "run.json")
    probed = 2 * 6 * k * config["training"]["seq_len"]
    assert info["token_passes"] == {"forward": info["tokens"] + probed, "backward": info["tokens"] + probed}
    assert planned_passes(config, "dograph", "final", "test") == info["token_passes"]  # the cost plan's count
    assert info["flops"] == 6 * info["parameters"] * (info["tokens"] + probed)


def test_training_under_torch_compile_probes_the_unwrapped_parameters(built_data, tmp_path):
    """compile: true prefixes parameter names with ``_orig_mod.``; the probe's default pattern
    (the last block) must still match, and probes must run while the compiled model trains."""
    config = dograph_config(built_data, update_every=4)
    config = grid_config.validate(dict(config, training=dict(config["training"], compile=True, steps=9)))
    assert train(config, "test", "dograph", 0, "final", tmp_path / "run", {})
    records = trace(tmp_path / "run")
    assert [r["step"] for r in records] == [4, 8] and all(r["solved"] for r in records)
    assert sorted(p.name for p in (tmp_path / "run" / "probes").glob("*.npz")) == ["step000004.npz", "step000008.npz"]
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert not any(name.startswith("_orig_mod.") for name in saved)


def test_proxy_mode_hands_on_the_average_including_the_initial_weights(built_data, tmp_path):
    config = dograph_config(built_data, mode="proxy")
    assert strategies.get_strategy_class("dograph").stages_for({"mode": "proxy"}) == ("proxy", "final")
    assert train(config, "test", "dograph", 0, "proxy", tmp_path / "proxy", {})
    k = len(config["corpus"]["domains"])
    alphas = [np.full(k, 1 / k)] + [r["alpha"] for r in trace(tmp_path / "proxy")]
    assert np.allclose(read_json(tmp_path / "proxy" / "weights.json")["final_weights"], np.mean(alphas, axis=0))


@pytest.mark.parametrize("hparams, message", [
    ({"community_delta": "0.1"}, "community_delta must be null .* or a finite number >= 0, got '0.1'"),
    ({"community_delta": -0.5}, "community_delta must be null"),
    ({"probe_params": "transformer.h.(0"}, r"probe_params must be a regular expression .* or null .* got 'transformer.h.\(0' \(missing \)"),
    ({"probe_params": 3}, "probe_params must be a regular expression"),
    ({"knn": 4}, "knn 4 asks for 4 neighbours of each domain, but 4 domains give each at most 3: set knn <= 3"),
])
def test_hyperparameters_the_solver_and_the_probe_take_are_checked_before_any_job(hparams, message):
    with pytest.raises(ConfigError, match=message):
        DoGraph.check_hparams(hparams, ["a", "b", "c", "d"])
    DoGraph.check_hparams({"community_delta": 0.5, "probe_params": r"transformer\.h\.0\..*"}, ["a", "b", "c", "d"])
