"""config/methods.yaml, the grid of every strategy: it is valid, names every registered method,
and shares the default grid's runs (adding the methods retrains none of them)."""

from __future__ import annotations

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
