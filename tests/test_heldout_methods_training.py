"""Skill-It and Aioli through the real loop on the fixture corpus: the runs they make, the signals
they read, what they hand on, and that the cost plan counts their held-out forwards as the runs do."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eval.analysis.plan_costs import planned_passes
from mixbench.io import read_json
from models.train import train
from strategies import grid_config
from strategies import runs as strategy_runs


def traced(out, key):
    return [r for r in map(json.loads, (out / "trace.jsonl").read_text().splitlines()) if key in r]


@pytest.fixture(scope="module")
def methods_config(built_data):
    return grid_config.validate(dict(
        built_data, grid=dict(built_data["grid"], strategies=["skillit", "aioli"]),
        strategies={"skillit": {"update_every": 6, "eta": 2.0, "stages": {"swarm": {"steps": 8}}},
                    "aioli": {"update_steps": 12, "lp_rounds": 1, "lp_steps": 1, "eta": 5.0,
                              "heldout_windows": 2}}))


def test_skillit_builds_its_graph_from_one_domain_runs_and_moves_its_mixture(methods_config, tmp_path):
    domains = methods_config["corpus"]["domains"]
    swarm = [f"swarm-{i}" for i in range(len(domains))]
    assert strategy_runs.strategy_stages(methods_config, "skillit") == (*swarm, "final")
    upstream = {}
    for i, stage in enumerate(swarm):
        out = upstream[stage] = tmp_path / stage
        assert train(methods_config, "test", "skillit", 0, stage, out, {})
        log, curve = pd.read_csv(out / "log.csv"), pd.read_csv(out / "val.csv")
        assert log[f"weight/{domains[i]}"].eq(1.0).all()  # domain i alone
        assert curve["step"].iloc[0] == 0 and curve["step"].iloc[-1] == 8  # where it started, where it ended
    final = tmp_path / "final"
    assert train(methods_config, "test", "skillit", 0, "final", final, upstream)
    (first,) = traced(final, "skills_graph")
    before = np.stack([pd.read_csv(upstream[s] / "val.csv")[[f"val_loss/{d}" for d in domains]].iloc[0] for s in swarm])
    after = np.stack([pd.read_csv(upstream[s] / "val.csv")[[f"val_loss/{d}" for d in domains]].iloc[-1] for s in swarm])
    np.testing.assert_allclose(first["skills_graph"], (before - after) / before, rtol=1e-9)
    updates = traced(final, "mixture")
    assert [r["step"] for r in updates] == [6, 12, 18, 24]  # every 6 steps, before the last (30)
    assert [r["step"] for r in traced(final, "heldout_loss")] == [1, 7, 13, 19]  # each round's start
    log = pd.read_csv(final / "log.csv")
    np.testing.assert_allclose(log.loc[log.step == 7, [f"weight/{d}" for d in domains]].to_numpy()[0],
                               updates[0]["mixture"], atol=1e-8)  # log.csv keeps 8 decimals
    info = read_json(final / "run.json")
    assert planned_passes(methods_config, "skillit", "final", "test") == info["token_passes"]
    # Stopped inside its second round (its window of losses and the graph in the checkpoint), resumed.
    split = tmp_path / "split"
    assert not train(methods_config, "test", "skillit", 0, "final", split, upstream, stop_after=9)
    assert train(methods_config, "test", "skillit", 0, "final", split, upstream)
    weights = [c for c in log.columns if c.startswith("weight/")]
    pd.testing.assert_frame_equal(pd.read_csv(split / "log.csv")[weights], log[weights])
    assert traced(split, "mixture") == updates


def test_aioli_learns_an_interaction_matrix_each_round_and_counts_its_heldout_forwards(methods_config, tmp_path):
    out = tmp_path / "final"
    assert train(methods_config, "test", "aioli", 0, "final", out, {})
    rounds = traced(out, "interaction_matrix")
    k = len(methods_config["corpus"]["domains"])
    assert len(rounds) == 2 and all(np.shape(r["interaction_matrix"]) == (k, k) for r in rounds)  # rounds at 1, 13
    mixtures = np.array([r["mixture"] for r in rounds])
    assert np.allclose(mixtures.sum(axis=1), 1) and np.abs(mixtures - 1 / k).max() > 1e-3  # the mixture moved
    info = read_json(out / "run.json")
    assert planned_passes(methods_config, "aioli", "final", "test") == info["token_passes"]
    training = methods_config["training"]
    trained = training["steps"] * training["batch_size"] * training["seq_len"]
    assert info["token_passes"]["forward"] > trained  # the held-out readings count
