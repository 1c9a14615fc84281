"""The cost plan (eval/analysis/plan.py) on the paper grid in a fresh folder: FLOP ratios from the passes
each stage makes, MFU per size, jobs' start-up and evaluation, optimistic and conservative totals."""

from __future__ import annotations

import math
import re

import pytest

from conftest import REPO, make_test_config
from eval.analysis.plan import main as plan_main, plan
from eval.analysis.plan_costs import MfuTable, flop_ratio, parse_mfu
from strategies import grid_config
from mixbench.errors import ConfigError

PAPER = REPO / "config" / "paper.yaml"


@pytest.fixture(scope="module")
def paper():
    return grid_config.load(PAPER)


@pytest.mark.parametrize("mode, forwards", [("two_forwards", 2), ("one_forward", 1)])
def test_doremi_s_proxy_costs_its_forwards_and_the_reference_s(paper, mode, forwards):
    config = dict(paper, training=dict(paper["training"], reweighted_step=mode))
    # Per token: forward 2N (twice with two_forwards: a no-grad pass, then again with the graph),
    # backward 4N, the same-sized reference's forward 2N; over training's 6N.
    expected = (forwards * 2 + 4 + 2) / 6
    assert expected == pytest.approx({"two_forwards": 1.667, "one_forward": 1.333}[mode], abs=1e-3)
    assert flop_ratio(config, "doremi", "proxy", "small") == pytest.approx(expected, rel=1e-12)
    assert flop_ratio(config, "doremi", "reference", "small") == 1.0


def test_doge_and_dograph_ratios_follow_their_settings(paper):
    # DoGE: the target batch is target_batch_fraction (0.5) of the 256-sequence batch.
    assert flop_ratio(paper, "doge", "proxy", "proxy-82m") == pytest.approx(1.5)
    # DoGraph: a probe after steps 1500, 2000, … 19500 (every 500, after 1000 warmup steps, not at
    # the last): 37 probes of 7 domains × (8 + 4) sequences, over 20000 steps of 256.
    assert flop_ratio(paper, "dograph", "final", "small") == pytest.approx(1 + 37 * 84 / (20000 * 256), rel=1e-12)
    assert flop_ratio(paper, "regmix", "swarm-0", "regmix-1m") == 1.0


def test_the_plan_runs_on_the_paper_grid_in_a_fresh_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no results/ here: nothing finished is read
    plan_main(["--config", str(PAPER)])
    out = capsys.readouterr().out
    assert re.search(r"\| small doremi proxy .*\| 1\.67 \(derived\) \| 35%/25% ", out)
    assert re.search(r"\| regmix-1m regmix swarm .*\| 10%/7% ", out)
    optimistic, conservative = (float(x.replace(",", "")) for x in
                                re.search(r"Total: ([\d,]+) GPU-hours optimistic, ([\d,]+) conservative", out).groups())
    assert 0 < optimistic < conservative
    assert "| every job's start-up " in out and "| every final model's evaluation " in out


def test_start_up_counts_packed_jobs_and_evaluation_every_final_model(tmp_path):
    config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["regmix"]}, strategies={
        "regmix": {"swarm_runs": 5, "folds": 5, "stages": {"swarm": {"size": "test", "steps": 7, "pack": 2}}}}))
    rows = plan(config, startup_s=(10.0, 20.0)).set_index("stage")
    assert rows.loc["swarm", "runs"] == 10 and rows.loc["swarm", "jobs"] == 2 * 3  # 5 runs in packs of 2, two seeds
    jobs = 6 + 2  # and the two final models
    assert rows.loc["start-up", "jobs"] == jobs
    assert rows.loc["start-up", "optimistic_hours"] == pytest.approx(jobs * 10 / 3600)
    assert rows.loc["start-up", "conservative_hours"] == pytest.approx(jobs * 20 / 3600)
    assert rows.loc["evaluation", "jobs"] == 2 and rows.loc["evaluation", "optimistic_hours"] > 2 * 10 / 3600
    assert (rows["optimistic_hours"] <= rows["conservative_hours"]).all()


def test_the_mfu_table_is_read_and_checked():
    table = parse_mfu("50M=0.10/0.07,1.5B=0.4/0.3,inf=0.5/0.35")
    assert table.at(14_700_000) == (0.10, 0.07) and table.at(774_000_000) == (0.4, 0.3)
    assert table.at(2_000_000_000) == (0.5, 0.35) and parse_mfu("0.4").at(10) == (0.4, 0.4)
    assert MfuTable().at(124_000_000) == (0.35, 0.25)
    with pytest.raises(ConfigError, match="conservative <= optimistic"):
        parse_mfu("inf=0.3/0.4")
    with pytest.raises(ConfigError, match="the last one unlimited"):
        parse_mfu("50M=0.1/0.1")
    with pytest.raises(ConfigError, match="expected a number"):
        parse_mfu("fast")
    assert math.isinf(MfuTable().rows[-1][0])
