"""The data budget: epochs per domain of every run in the compute table (from each run's log and
the token metadata), and the warning before a run that would repeat a domain's train split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_test_config
from corpus import budget
from eval.analysis import collect
from eval.analysis.grid_check import check_grid
from eval.analysis.tables import compute_table, epochs_table
from strategies import grid_config
from mixbench.io import write_json
from models.runlog import StepLog
from models.run_factory import warn_data_budget
from models.train import train
from run_fixture import write_grid
from strategies import StrategyContext
from strategies.static import Uniform

DOMAINS = ["code", "books", "encyclopedic", "docs", "man", "qa"]  # tests/config/test.yaml
AVAILABLE = [1000, 2000, 4000, 500, 1000, 8000]  # train tokens per domain


def write_meta(data_dir, train_tokens) -> None:
    write_json(data_dir / "tokens" / "meta.json", {"vocab_size": 512, "dtype": "uint16", "eos_id": 0, "domains": {
        d: {split: {"file": f"{d}.{split}.bin", "tokens": n if split == "train" else 10, "documents": 1, "sha256": ""}
            for split in ("train", "val", "test")} for d, n in zip(DOMAINS, train_tokens)}})


def write_log(folder, steps: list[list[int]], torn_row: bool = False) -> None:
    log = StepLog(folder / "log.csv", DOMAINS, 0)
    k = len(DOMAINS)
    for step, tokens in enumerate(steps, 1):
        log.write(step, 1e-3, 2.0, 0, 0.1, 0.1, 100.0, None, np.full(k, 2.0), np.array(tokens), np.full(k, 1 / k))
    log.close()
    if torn_row:  # a crash mid-write: not counted
        with open(folder / "log.csv", "a") as f:
            f.write("3,0.001,2.0,0,0.1,0.1,100.0,,2.0,2.0,2")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    config = grid_config.validate(make_test_config(root, grid={"sizes": ["test"], "seeds": [0],
                                                       "strategies": ["uniform", "doremi"]}))
    write_meta(root / "data", AVAILABLE)  # before the runs, which record its digest
    write_grid(config)
    runs = root / "runs" / "test"
    write_log(runs / "uniform" / "seed0" / "final", [[500] * 6, [500] * 6], torn_row=True)
    write_log(runs / "doremi" / "seed0" / "reference", [[100, 200, 400, 50, 100, 800]])
    # doremi's proxy has no log (a run copied without it): its epochs are unknown.
    (runs / "doremi" / "seed0" / "proxy" / "log.csv").unlink()
    write_log(runs / "doremi" / "seed0" / "final", [[1000, 0, 0, 0, 0, 0], [2000, 0, 0, 0, 0, 0]])
    return config


def test_epochs_per_domain_are_tokens_trained_over_train_tokens_available(grid):
    compute = collect.compute(grid).set_index(["strategy", "stage"])
    epochs = compute[[f"epochs/{d}" for d in DOMAINS]]
    # uniform: 1000 tokens of each domain over 1000, 2000, 4000, 500, 1000, 8000 available.
    assert epochs.loc[("uniform", "final")].tolist() == [1.0, 0.5, 0.25, 2.0, 1.0, 0.125]
    assert compute.loc[("uniform", "final"), "tokens/docs"] == 1000
    assert compute.loc[("uniform", "final"), "max_epochs"] == 2.0
    assert compute.loc[("uniform", "final"), "max_epochs_domain"] == "docs"
    assert epochs.loc[("doremi", "reference")].tolist() == [0.1] * 6
    assert epochs.loc[("doremi", "final")].tolist() == [3.0, 0, 0, 0, 0, 0]
    assert compute.loc[("doremi", "proxy"), [f"tokens/{d}" for d in DOMAINS]].isna().all()
    assert np.isnan(compute.loc[("doremi", "proxy"), "max_epochs"])

    table = compute_table(collect.compute(grid), grid["grid"]).set_index("strategy")
    assert table.loc["uniform", "max epochs (domain, stage)"] == "2.00 (docs, final)"
    assert table.loc["doremi", "max epochs (domain, stage)"] == "3.00 (code, final)"

    per_run = epochs_table(collect.compute(grid)).set_index("run")
    assert list(per_run.columns) == [*DOMAINS, "max"]
    assert per_run.loc["test/uniform/seed0/final", "docs"] == "2.00"
    assert per_run.loc["test/doremi/seed0/reference", "max"] == "0.10"
    assert per_run.loc["test/doremi/seed0/proxy", "code"] == "" and per_run.loc["test/doremi/seed0/proxy", "max"] == ""


def test_without_token_metadata_epochs_are_unknown_not_an_error(grid, tmp_path):
    # The runs checked against their data (eval/analysis/grid_check.py), then read without its metadata.
    compute = collect.compute({**grid, "data_dir": str(tmp_path)}, check_grid(grid).kept)
    assert compute["max_epochs"].isna().all() and compute["tokens/code"].notna().any()
    assert epochs_table(compute) is None
    assert "max epochs (domain, stage)" not in compute_table(compute, grid["grid"]).columns


def test_epochs_treat_an_empty_domain_as_infinitely_repeated():
    assert budget.epochs(np.array([0, 10, 5]), np.array([0, 0, 10])).tolist() == [0.0, np.inf, 0.5]


def strategy(cls=Uniform, domains=("a", "b", "c")):
    context = StrategyContext(name="uniform", domains=tuple(domains), train_tokens=np.ones(len(domains)),
                              stage="final", total_steps=10, seed=0, vocab_size=512)
    return cls(context)


def test_a_run_that_would_repeat_a_domain_is_warned_with_every_domains_numbers(capsys):
    # 3000 planned tokens, 1000 per domain: a has exactly one epoch, b ten, c a tenth.
    warn_data_budget(strategy(), "uniform", "uniform final (size test, seed 0)", 3000, np.array([1000, 100, 10000]))
    err = capsys.readouterr().err
    assert err.startswith("warning: uniform final (size test, seed 0) would repeat training data: 3,000 tokens planned")
    lines = {line.split()[0]: line.split() for line in err.splitlines()[2:5]}
    assert lines["a"][1:5] == ["0.3333", "1,000", "1,000", "1.00"] and "repeated" not in lines["a"]
    assert lines["b"][1:5] == ["0.3333", "1,000", "100", "10.00"] and lines["b"][-1] == "repeated"
    assert lines["c"][1:5] == ["0.3333", "1,000", "10,000", "0.10"]
    assert "1 domain(s) would be seen more than once (b)" in err and "Training goes on" in err
    assert "initial weights" not in err


def test_a_strategy_that_moves_its_weights_is_warned_from_its_initial_ones(capsys):
    class Moving(Uniform):
        def update(self, stats):
            return np.array([1.0, 0.0, 0.0])

    warn_data_budget(strategy(Moving), "moving", "moving final", 3000, np.array([100, 100, 100]))
    assert "its initial weights (an estimate: the strategy may move its weights" in capsys.readouterr().err


def test_a_run_within_its_budget_is_not_warned(capsys):
    warn_data_budget(strategy(), "uniform", "uniform final", 3000, np.array([1000, 1000, 1000]))
    assert capsys.readouterr().err == ""


def test_training_warns_before_its_first_step(built_data, tmp_path, capfd):
    available = budget.available_train_tokens(built_data["data_dir"], built_data["corpus"]["domains"])
    steps = int(available.max() * len(available) // (8 * 32)) + 1  # uniform: more than every domain holds
    config = {**built_data, "training": {**built_data["training"], "steps": steps}}
    train(config, "test", "uniform", 0, "final", tmp_path / "run", {}, stop_after=1)
    err = capfd.readouterr().err
    assert f"warning: uniform final (size test, seed 0) would repeat training data: {steps * 8 * 32:,} tokens" in err
    assert err.index("would repeat training data") < err.index("memory estimate")  # before the model is built
    rows = [line for line in err.splitlines() if line.split()[:1] and line.split()[0] in DOMAINS]
    assert len(rows) == len(DOMAINS) and all(line.endswith("> 1: repeated") for line in rows)
    assert pd.read_csv(tmp_path / "run" / "log.csv")["step"].tolist() == [1]
