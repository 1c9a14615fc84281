"""The real Snakemake workflow, end to end, on the fixture corpus in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, make_test_config

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, config_file: Path, *args: str, snakefile: Path = REPO / "Snakefile"):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(workdir), "--configfile", str(config_file),
         "--cores", "2", *args],
        capture_output=True, text=True, env=env, timeout=900,
    )


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def finished_workflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    config_file = write_config(root / "config.yaml", make_test_config(root))
    result = snakemake(root, config_file)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, config_file


def test_workflow_produces_the_tables(finished_workflow):
    root, _ = finished_workflow
    long = pd.read_csv(root / "results" / "tables" / "perplexity.csv")
    domains = ["code", "books", "encyclopedic", "docs", "man", "qa"]
    assert len(long) == 1 * 2 * 2 * len(domains)  # size × strategies × seeds × domains
    assert set(long["strategy"]) == {"uniform", "natural"} and set(long["seed"]) == {0, 1}
    assert set(long["domain"]) == set(domains)
    for column in ("bits_per_byte", "perplexity", "config_hash", "git_commit", "torch_version", "lm_eval_version"):
        assert long[column].notna().all(), column
    assert long["bits_per_byte"].between(0.5, 12).all()
    table = (root / "results" / "tables" / "perplexity.md").read_text()
    assert "mean ± std over 2 seeds" in table and "macro avg" in table
    for strategy in ("uniform", "natural"):
        assert f"| {strategy} " in table
    # Logs for every rule, including each training run.
    assert (root / "runs" / "logs" / "train" / "test-natural-seed1-final.log").exists()


def test_a_finished_workflow_has_nothing_left_to_do(finished_workflow):
    root, config_file = finished_workflow
    result = snakemake(root, config_file, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


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
    assert "unknown strategy 'natrual'; registered strategies: natural, static, uniform" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_missing_corpus_source_fails_with_its_name(tmp_path):
    config = make_test_config(tmp_path, corpus={"path": str(tmp_path / "nowhere.jsonl")})
    result = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config))
    assert result.returncode != 0
    log = (tmp_path / "runs" / "logs" / "build_corpus.log").read_text()
    assert "nowhere.jsonl' matches no file" in log
