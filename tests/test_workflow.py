"""The real Snakemake workflow, end to end, on the fixture corpus in a temporary folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, make_test_config

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, config_file: Path, *args: str, snakefile: Path = REPO / "Snakefile"):
    # A PATH without the virtualenv: jobs must not depend on which `python` a shell finds.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(workdir), "--configfile", str(config_file),
         "--cores", "2", *args],
        capture_output=True, text=True, env=env, timeout=900,
    )


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


STRATEGIES = ["uniform", "natural", "code_heavy", "doremi", "dograph"]


@pytest.fixture(scope="module")
def finished_workflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    weights = {"code": 0.5, "books": 0.1, "encyclopedic": 0.1, "docs": 0.1, "man": 0.1, "qa": 0.1}
    config = make_test_config(root, grid={"strategies": STRATEGIES},
                              strategies={"code_heavy": {"strategy": "static", "weights": weights}})
    config_file = write_config(root / "config.yaml", config)
    result = snakemake(root, config_file)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, config_file


def test_workflow_produces_the_tables(finished_workflow):
    root, _ = finished_workflow
    long = pd.read_csv(root / "results" / "tables" / "perplexity.csv")
    domains = ["code", "books", "encyclopedic", "docs", "man", "qa"]
    assert len(long) == 1 * 5 * 2 * len(domains)  # size × strategies × seeds × domains
    assert list(dict.fromkeys(long["strategy"])) == STRATEGIES and set(long["seed"]) == {0, 1}
    assert list(dict.fromkeys(long["domain"])) == domains  # corpus order
    for column in ("bits_per_byte", "perplexity", "config_hash", "git_commit", "torch_version", "lm_eval_version"):
        assert long[column].notna().all(), column
    assert long["bits_per_byte"].between(0.5, 12).all()
    table = (root / "results" / "tables" / "perplexity.md").read_text()
    assert "mean ± std over 2 seeds" in table and "| macro avg " in table and "| worst " in table
    for strategy in STRATEGIES:
        assert f"| {strategy} " in table
    # The static strategy trained on its configured mixture.
    log = pd.read_csv(root / "runs" / "test" / "code_heavy" / "seed0" / "final" / "log.csv")
    assert log["weight/code"].eq(0.5).all() and log["weight/qa"].eq(0.1).all()


def test_doremi_runs_reference_proxy_final_and_its_mixture_reaches_the_tables(finished_workflow):
    root, _ = finished_workflow
    cell = root / "runs" / "test" / "doremi" / "seed1"
    assert all((cell / stage / "run.json").exists() for stage in ("reference", "proxy", "final"))
    weights = pd.read_csv(root / "results" / "tables" / "weights.csv")
    learned = weights[(weights.strategy == "doremi") & (weights.seed == 1)].set_index("domain")["weight"]
    proxy_average = json.loads((cell / "proxy" / "weights.json").read_text())["final_weights"]
    assert learned.tolist() == pytest.approx(proxy_average)
    assert not learned.round(6).eq(round(1 / 6, 6)).all()  # it moved away from uniform
    static = weights[weights.strategy == "code_heavy"].groupby("domain")["weight"].first()
    assert static["code"] == pytest.approx(0.5)
    trajectories = pd.read_csv(root / "results" / "tables" / "trajectories.csv")
    proxy = trajectories[(trajectories.strategy == "doremi") & (trajectories.stage == "proxy")]
    assert sorted(proxy.step.unique()) == list(range(1, 11)) and set(proxy.seed) == {0, 1}
    assert "| doremi " in (root / "results" / "tables" / "weights.md").read_text()
    online = trajectories[(trajectories.strategy == "dograph") & (trajectories.stage == "final")]
    assert sorted(online.step.unique()) == [10, 20]  # DoGraph's online schedule, one row per update
    # Logs for every rule, including each training run.
    assert (root / "runs" / "logs" / "train" / "test-natural-seed1-final.log").exists()


def test_a_finished_workflow_has_nothing_left_to_do(finished_workflow):
    root, config_file = finished_workflow
    result = snakemake(root, config_file, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_only_result_relevant_changes_rerun_jobs(finished_workflow, tmp_path):
    root, config_file = finished_workflow
    config = yaml.safe_load(config_file.read_text())
    operational = cfg_with(config, training={"threads": 2, "checkpoint_every": 7}, evaluation={"batch_size": 3})
    result = snakemake(root, write_config(tmp_path / "ops.yaml", operational), "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-2000:]
    relevant = cfg_with(config, training={"lr": 1e-3})
    out = snakemake(root, write_config(tmp_path / "lr.yaml", relevant), "-n").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert jobs.get("train") == "14" and jobs.get("evaluate_perplexity") == "10", out[-2000:]
    assert "build_corpus" not in jobs and "tokenize_corpus" not in jobs


def cfg_with(config: dict, **sections) -> dict:
    from mixbench.config import deep_merge

    return deep_merge(config, sections)


def test_tables_are_rebuilt_without_retraining(finished_workflow):
    root, config_file = finished_workflow
    result = snakemake(root, config_file, "--forcerun", "tables", "-n")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "tables" in out
    assert "rule train:" not in out and "evaluate_perplexity" not in out


def test_a_bad_config_fails_before_any_job(tmp_path):
    config = make_test_config(tmp_path, grid={"strategies": ["uniform", "natrual"]})
    result = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config))
    assert result.returncode != 0
    assert "unknown strategy 'natrual'; registered strategies: doge, dograph, doremi, natural, static, uniform" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_missing_corpus_source_fails_with_its_name(tmp_path):
    config = make_test_config(tmp_path, corpus={"path": str(tmp_path / "nowhere.jsonl")})
    result = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config))
    assert result.returncode != 0
    log = (tmp_path / "runs" / "logs" / "build_corpus.log").read_text()
    assert "nowhere.jsonl' matches no file" in log
