"""Collecting finished runs (eval/analysis/collect.py) from the fixture grid (tests/run_fixture.py):
files a run should have and lacks stop the tables with one line that names them and the fix."""

import json

import pytest

from conftest import make_test_config
from eval.analysis import collect, collect_curves
from eval.metrics import HELDOUT_METRICS
from mixbench.errors import DataError
from run_fixture import write_grid
from strategies import grid_config


def written_grid(root, strategies):
    config = grid_config.validate(make_test_config(root, grid={"seeds": [0], "strategies": strategies}))
    write_grid(config)
    return config


def test_the_fixture_scores_every_listed_metric_and_collection_reads_each(tmp_path):
    config = written_grid(tmp_path, ["uniform"])
    frame = collect.perplexity(config)
    assert [m.column for m in HELDOUT_METRICS] == [c for c in frame.columns if c in {m.column for m in HELDOUT_METRICS}]
    assert frame[[m.column for m in HELDOUT_METRICS]].notna().all().all()


def test_a_perplexity_file_scored_before_a_metric_was_listed_names_it_and_the_fix(tmp_path):
    config = written_grid(tmp_path, ["uniform"])
    path = tmp_path / "runs" / "test" / "uniform" / "seed0" / "final" / "eval" / "perplexity.json"
    scores = json.loads(path.read_text())
    metric, domain = HELDOUT_METRICS[-1].name, config["corpus"]["domains"][1]
    del scores["tasks"][domain][metric]
    path.write_text(json.dumps(scores))
    with pytest.raises(DataError) as error:
        collect.perplexity(config)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and f"no {metric} for domain {domain!r}" in message
    assert "--forcerun lm_eval_tasks" in message


def test_a_trained_stage_without_its_log_stops_the_tables_and_a_fit_needs_none(tmp_path):
    config = written_grid(tmp_path / "doremi", ["uniform", "doremi"])
    log = tmp_path / "doremi" / "runs" / "test" / "doremi" / "seed0" / "proxy" / "log.csv"
    log.unlink()
    for table in (collect.trajectories, collect_curves.entropy):
        with pytest.raises(DataError, match=f"^{log} is missing, though its proxy stage trains and writes it"):
            table(config)
    # RegMix's fit trains nothing and writes no log.csv: its swarm and final runs are read, the fit left out.
    fitted = written_grid(tmp_path / "regmix", ["uniform", "regmix"])
    fit = tmp_path / "regmix" / "runs" / "test" / "regmix" / "seed0" / "fit"
    assert (fit / "run.json").is_file() and not (fit / "log.csv").exists()
    stages = set(collect_curves.entropy(fitted).query("strategy == 'regmix'").stage)
    assert "final" in stages and "fit" not in stages and any(s.startswith("swarm-") for s in stages)
