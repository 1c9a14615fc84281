"""Shared fixtures: the test configuration and a corpus built from the committed fixture."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mixbench import config as cfg  # noqa: E402
from strategies import grid_config

TEST_CONFIG = REPO / "tests" / "config" / "test.yaml"
FIXTURE_CORPUS = REPO / "tests" / "fixtures" / "corpus.jsonl"


SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, config_files: Path | list[Path], *args: str, snakefile: Path = REPO / "Snakefile",
              env: dict[str, str] | None = None):
    """The real workflow in ``workdir`` with the given config file(s), merged in order; ``env``
    adds to (or replaces) the environment's variables."""
    files = [config_files] if isinstance(config_files, Path) else config_files
    # A PATH without the virtualenv: jobs must not depend on which `python` a shell finds.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(workdir), "--configfiles", *map(str, files),
         "--cores", "2", *args],
        capture_output=True, text=True, env=env, timeout=900,
    )


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats" table of Snakemake's output."""
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M) if rule != "total"}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def make_test_config(root: Path, **overrides) -> dict:
    """The test config with every path made absolute under ``root`` (not yet validated)."""
    raw = yaml.safe_load(TEST_CONFIG.read_text())
    raw.update(data_dir=str(root / "data"), runs_dir=str(root / "runs"), results_dir=str(root / "results"))
    raw["corpus"]["path"] = str(FIXTURE_CORPUS)
    return cfg.deep_merge(raw, overrides)


@pytest.fixture(scope="session")
def built_data(tmp_path_factory) -> dict:
    """Validated test config whose corpus, tokenizer and token files are built (once per session)."""
    from corpus import build, tokenizer, tokens

    root = tmp_path_factory.mktemp("data")
    config = grid_config.validate(make_test_config(root))
    build.build(config)
    tokenizer.build(config)
    tokens.build(config)
    return config
