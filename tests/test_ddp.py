"""One process and two gloo processes with the same global batch train on the same sequences.

Every step's rows are drawn from (seed, step, weights) alone and split across ranks by position
(corpus/sampler.py), so a run under torchrun must follow the single-process run: the same losses
per domain, the same mixture weights, the same strategy trace, within floating-point order
(the ranks sum their micro-batches in a different order). Twenty steps of each kind of stage:
a static mixture, DoReMi's proxy (excess losses against a reference), DoGE's proxy (per-domain
gradients and a held-out target gradient) and DoGraph (online, re-solved from gradient probes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from mixbench import config as cfg
from strategies import grid_config
from mixbench.io import read_json
from mixbench.training_log import redirected
from models.train import train

STEPS = 20
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def ddp_config(built_data) -> dict:
    return grid_config.validate(cfg.deep_merge(built_data, {
        "grid": {"strategies": ["uniform", "doremi", "doge", "dograph"]},
        "training": {"steps": STEPS, "batch_size": 8, "micro_batch_size": 2, "warmup_steps": 2},
        "stages": {"reference": {"steps": 6}, "proxy": {"steps": STEPS}},
        "strategies": {"dograph": {"update_every": 5}},
    }))


@pytest.fixture(scope="module")
def reference_run(ddp_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "reference"
    with redirected(out):  # as its job would: a run without its training log is no upstream run
        assert train(ddp_config, "test", "doremi", 0, "reference", out, {})
    return out


def torchrun(config_file: Path, strategy: str, stage: str, out: Path, upstream: list[str], *extra: str,
             finishes: bool = True) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "models.train",
           "--config", str(config_file), "--size", "test", "--strategy", strategy, "--seed", "0", "--stage", stage,
           "--out", str(out), *(["--upstream", *upstream] if upstream else []), *extra]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if finishes:
        assert done.returncode == 0, done.stderr[-3000:]
    else:  # stopped at a checkpoint: torchrun reports the exit code 3 as a failure
        assert list((out / "checkpoints").glob("step*")) and not (out / "run.json").exists(), done.stderr[-3000:]


def per_step(out: Path) -> pd.DataFrame:
    """What a step computed: its loss, per-domain losses and token counts, the weights it used."""
    log = pd.read_csv(out / "log.csv")
    return log[[c for c in log if c == "loss" or c.split("/")[0] in ("loss", "tokens", "weight")]]


def trace_values(out: Path) -> np.ndarray:
    """Every number of every trace record (α, excess losses, scores, ...), flattened in order;
    not timings (``*_seconds``)."""
    path = out / "trace.jsonl"  # static mixtures trace nothing
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    numbers = [np.ravel(np.asarray(v, dtype=float)) for r in records for k, v in sorted(r.items())
               if isinstance(v, (int, float, list)) and not isinstance(v, bool) and not k.endswith("_seconds")]
    return np.concatenate(numbers) if numbers else np.zeros(0)


@pytest.mark.parametrize("strategy, stage", [("uniform", "final"), ("doremi", "proxy"), ("doge", "proxy"),
                                             ("dograph", "final")])
def test_two_processes_train_like_one(ddp_config, reference_run, tmp_path, strategy, stage):
    upstream = {"reference": reference_run} if strategy == "doremi" else {}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(ddp_config))
    # DoReMi's proxy: under DDP the step keeps every micro-batch's graph (one_forward, reduced once
    # by DDP); the single process forwards each again (two_forwards). Both must give one result.
    single = cfg.deep_merge(ddp_config, {"training": {"reweighted_step": "two_forwards"}})
    assert train(single, "test", strategy, 0, stage, tmp_path / "one", upstream)
    upstream_args = [f"{s}={d}" for s, d in upstream.items()]
    if strategy == "uniform":  # also stopped half way and resumed, under DDP
        torchrun(config_file, strategy, stage, tmp_path / "two", upstream_args, "--stop-after", "10", finishes=False)
    torchrun(config_file, strategy, stage, tmp_path / "two", upstream_args)
    assert read_json(tmp_path / "two" / "run.json")["tokens"] == STEPS * 8 * 32  # the global batch, not per rank

    one, two = per_step(tmp_path / "one"), per_step(tmp_path / "two")
    assert list(one.columns) == list(two.columns) and len(one) == STEPS
    # The same rows: token counts per domain are equal exactly, step by step.
    tokens = [c for c in one if c.startswith("tokens/")]
    assert one[tokens].equals(two[tokens])
    difference = np.nanmax(np.abs(one.to_numpy(float) - two.to_numpy(float)))
    assert difference < TOLERANCE, f"{strategy} {stage}: losses/weights differ by up to {difference:.2e}"
    a, b = trace_values(tmp_path / "one"), trace_values(tmp_path / "two")
    assert (tmp_path / "one" / "trace.jsonl").exists() == (tmp_path / "two" / "trace.jsonl").exists()
    assert a.shape == b.shape and np.allclose(a, b, atol=TOLERANCE, rtol=0, equal_nan=True), (
        f"trace differs by up to {np.nanmax(np.abs(a - b)):.2e}")
    # The held-out curve: each process measures half the windows, and the sums are reduced.
    val_one, val_two = (pd.read_csv(d / "val.csv").drop(columns=["elapsed_s", "eval_s"]) for d in (tmp_path / "one", tmp_path / "two"))
    # (FLOPs may differ: DoGraph's probe runs whole on every process, so two processes spend it twice.)
    val_one, val_two = val_one.drop(columns="flops"), val_two.drop(columns="flops")
    assert val_one[["step", "tokens"]].equals(val_two[["step", "tokens"]]) and len(val_one) > 0
    assert np.abs(val_one.to_numpy(float) - val_two.to_numpy(float)).max() < TOLERANCE
    if strategy != "uniform":  # the strategy's state moved, so equal traces are not trivially equal
        assert a.size > 0 and np.ptp(a) > 1e-3
    print(f"{strategy} ({stage}): max |1 process - 2 processes| over {STEPS} steps = {difference:.2e}")


def test_a_checkpoint_of_two_processes_resumes_in_one(ddp_config, tmp_path, capfd):
    """Changing the number of processes mid-run loses nothing: the batches continue unchanged."""
    from safetensors.torch import load_file

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(ddp_config))
    assert train(ddp_config, "test", "uniform", 0, "final", tmp_path / "one", {})
    torchrun(config_file, "uniform", "final", tmp_path / "switched", [], "--stop-after", "10", finishes=False)
    assert train(ddp_config, "test", "uniform", 0, "final", tmp_path / "switched", {})
    assert "written by 2 process(es), this run has 1" in capfd.readouterr().err
    one, switched = per_step(tmp_path / "one"), per_step(tmp_path / "switched")
    assert len(switched) == STEPS and np.nanmax(np.abs(one.to_numpy(float) - switched.to_numpy(float))) < TOLERANCE
    a, b = (load_file(tmp_path / name / "model" / "model.safetensors") for name in ("one", "switched"))
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=TOLERANCE) for k in a)
