"""config/methods.yaml, the grid of every strategy: it is valid, names every registered method,
and shares the default grid's runs (adding the methods retrains none of them)."""

from __future__ import annotations

import pytest

from conftest import REPO
from strategies import available, grid_config
from strategies import runs as strategy_runs

METHODS, DEFAULT = REPO / "config" / "methods.yaml", REPO / "config" / "config.yaml"
# Not methods to compare: a mixture given in the config, and the landscape study's grid search.
NOT_COMPARED = {"static", "lattice"}


def fingerprints(config: dict, strategies) -> dict:
    return {(strategy, stage): strategy_runs.run_fingerprint(config, strategy, strategy_runs.run_chain(
                config, strategy, stage, spec["size"]))
            for size in config["grid"]["sizes"] for strategy in strategies
            for stage, spec in strategy_runs.cell_runs(config, size, strategy).items()}


def test_the_methods_grid_names_every_registered_method():
    methods = grid_config.load(METHODS)
    assert set(methods["grid"]["strategies"]) == set(available()) - NOT_COMPARED


def test_a_finished_default_grid_is_reused_and_nothing_it_ran_is_retrained():
    default, methods = grid_config.load(DEFAULT), grid_config.load(METHODS)
    assert set(default["grid"]["strategies"]) < set(methods["grid"]["strategies"])
    assert (methods["data_dir"], methods["runs_dir"]) == (default["data_dir"], default["runs_dir"])
    assert methods["results_dir"] != default["results_dir"]
    shared = default["grid"]["strategies"]
    assert fingerprints(methods, shared) == fingerprints(default, shared)


# Over config/methods.yaml: the test configuration (fixture corpus of six domains, `test` size,
# 30-step runs), one seed, and the two methods whose stages the workflow wires in ways no other
# workflow test does: Skill-It (one swarm run per domain, each measured before its first step, read
# by a training run) and Chameleon (a proxy that hands on weights it computes at its last step).
METHODS_RUN = {
    "grid": {"strategies": ["uniform", "skillit", "chameleon"], "seeds": [0]},
    "downstream": {"tasks": []},
    "strategies": {"skillit": {"update_every": 10, "stages": {"swarm": {"steps": 12}}},
                   "chameleon": {"windows": 8, "layer": "final"}},  # the test size has one block: no middle
}


def test_the_methods_grid_runs_skillit_and_chameleon_through_the_workflow(tmp_path):
    from conftest import make_test_config, snakemake, write_config

    overlay = write_config(tmp_path / "overlay.yaml", make_test_config(tmp_path, **METHODS_RUN))
    done = snakemake(tmp_path, [METHODS, overlay])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import json

    import pandas as pd

    runs = tmp_path / "runs" / "test"
    swarm = [runs / "skillit" / "seed0" / f"swarm-{i}" for i in range(6)]
    assert all(pd.read_csv(run / "val.csv")["step"].iloc[0] == 0 for run in swarm)  # measured before step 1
    trace = [json.loads(line) for line in (runs / "skillit" / "seed0" / "final" / "trace.jsonl").read_text().splitlines()]
    assert len([r for r in trace if "skills_graph" in r]) == 1 and [r["step"] for r in trace if "mixture" in r] == [10, 20]
    handed_on = json.loads((runs / "chameleon" / "seed0" / "proxy" / "weights.json").read_text())["final_weights"]
    final_log = pd.read_csv(runs / "chameleon" / "seed0" / "final" / "log.csv")
    assert final_log[[c for c in final_log.columns if c.startswith("weight/")]].iloc[0].tolist() == pytest.approx(
        handed_on, abs=1e-8)  # log.csv keeps 8 decimals
    comparison = pd.read_csv(tmp_path / "results" / "tables" / "perplexity.csv")
    assert set(comparison["strategy"]) == {"uniform", "skillit", "chameleon"}
