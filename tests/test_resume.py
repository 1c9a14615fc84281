"""Every strategy's working stage resumes bit-identically: the model, the traced weights and
the weights it hands on, whether stopped before or after the strategy last updated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from strategies import grid_config
from mixbench.io import read_json
from models.checkpoint import checkpoint_dirs
from models.train import train

CASES = {  # strategy: (stage, stop after this step)
    "uniform": ("final", 13),
    "static": ("final", 13),
    "doremi": ("proxy", 5),
    "doge": ("proxy", 5),
    "dograph": ("final", 15),  # between its updates at steps 10 and 20: the solver restarts in between
    "odm": ("final", 13),  # updating every step after its 5 warmup steps: its bandit's state resumes
    "chameleon": ("proxy", 5),  # embeds the domains at its last step: after the resume
    "aioli": ("final", 16),  # inside its second round's LearnParams, between two held-out readings
}


@pytest.fixture(scope="module")
def resume_config(built_data):
    domains = built_data["corpus"]["domains"]
    return grid_config.validate(dict(
        built_data, grid=dict(built_data["grid"], strategies=list(CASES)),
        training=dict(built_data["training"], dropout=0.1),
        stages={"reference": {"steps": 6}, "proxy": {"steps": 10}},
        strategies={"static": {"weights": {d: (i + 1) / 21 for i, d in enumerate(domains)}},
                    "dograph": {"update_every": 10, "probe_per_domain": 4, "target_per_domain": 2,
                                "sketch_dim": 128},
                    "odm": {"warmup_steps": 5}, "chameleon": {"windows": 16, "layer": "final"},  # the test size has one block
                    "aioli": {"update_steps": 12, "lp_rounds": 1, "lp_steps": 1, "heldout_windows": 2}}))


@pytest.fixture(scope="module")
def doremi_reference(resume_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "reference"
    assert train(resume_config, "test", "doremi", 0, "reference", out, {})
    return out


def traced(out: Path, key: str) -> list:
    path = out / "trace.jsonl"
    if not path.exists():
        return []
    return [r[key] for r in map(json.loads, path.read_text().splitlines()) if key in r]


@pytest.mark.parametrize("strategy", list(CASES))
def test_a_resumed_run_is_bit_identical(resume_config, doremi_reference, strategy, tmp_path):
    from safetensors.torch import load_file

    stage, stop = CASES[strategy]
    upstream = {"reference": doremi_reference} if strategy == "doremi" else {}
    run = lambda out, stop_after=None: train(resume_config, "test", strategy, 1, stage, out, upstream, stop_after)
    assert run(tmp_path / "whole")
    assert not run(tmp_path / "split", stop_after=stop)
    assert checkpoint_dirs(tmp_path / "split" / "checkpoints")
    assert run(tmp_path / "split")
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("whole", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    whole, split = traced(tmp_path / "whole", "alpha"), traced(tmp_path / "split", "alpha")
    assert whole == split
    # log.csv's weights, and the loss weights of a stage that weights its loss, resume exactly too.
    logs = [(tmp_path / d / "log.csv").read_text().splitlines() for d in ("whole", "split")]
    header = logs[0][0].split(",")
    assert logs[0][0] == logs[1][0] and len(logs[0]) == len(logs[1]) > 5
    assert any(c.startswith("loss_weight/") for c in header) == (strategy in ("doremi", "doge"))
    weights = [i for i, c in enumerate(header) if c.startswith(("weight/", "loss_weight/"))]
    assert [[row.split(",")[i] for i in weights] for row in logs[0]] == [[row.split(",")[i] for i in weights]
                                                                          for row in logs[1]]
    if strategy in ("doremi", "doge", "dograph"):
        assert len(whole) >= 2 and np.abs(np.array(whole[-1]) - 1 / 6).max() > 1e-4  # the weights did move
    assert read_json(tmp_path / "whole" / "weights.json") == read_json(tmp_path / "split" / "weights.json")
    if strategy == "chameleon":  # the proxy sampled uniformly and hands on its leverage scores' weights
        handed_on = read_json(tmp_path / "whole" / "weights.json")["final_weights"]
        assert np.abs(np.array(handed_on) - 1 / 6).max() > 1e-4 and traced(tmp_path / "whole", "leverage_scores")
    if strategy == "dograph":  # its α moved, but the first step sampled the uniform start
        assert read_json(tmp_path / "whole" / "weights.json")["initial_weights"] == pytest.approx([1 / 6] * 6, abs=1e-12)
