"""Plays the README's "Add a strategy" section on a copy of the repository.

The module, registry line, config and test are taken verbatim from the README's marked code
blocks, so the instructions cannot drift from what works.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from conftest import REPO, make_test_config, snakemake, write_config
from mixbench.config import deep_merge


def readme_blocks() -> dict[str, str]:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"<!-- add-strategy: (\S+) -->\n```\w+\n(.*?)```", readme, flags=re.S)
    return dict(blocks)


def copy_repo(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_readme_story_adds_a_strategy_that_reaches_the_tables(tmp_path):
    blocks = readme_blocks()
    assert set(blocks) == {"strategies/temperature.py", "registry", "config", "tests/test_temperature.py"}
    repo = copy_repo(tmp_path / "repo")

    # 1. the module, 4. its test: files exactly as the README shows them.
    for path in ("strategies/temperature.py", "tests/test_temperature.py"):
        (repo / path).write_text(blocks[path])
    # 2. the registry line, added to REGISTRY.
    registry = repo / "strategies" / "__init__.py"
    source = registry.read_text()
    assert "REGISTRY: dict[str, str] = {\n" in source
    registry.write_text(source.replace("REGISTRY: dict[str, str] = {\n", "REGISTRY: dict[str, str] = {\n" + blocks["registry"], 1))
    # 3. the config snippet, on top of the test config (one seed keeps this test short), and a
    # sweep of the new strategy's hyperparameter in place of natural: variants need no code.
    config = deep_merge(make_test_config(tmp_path), yaml.safe_load(blocks["config"]))
    config["grid"].update(seeds=[0], strategies=["uniform", "temperature"],
                          variants={"temperature": {"temperature": [0.5, 8.0]}})
    config["downstream"]["tasks"] = []
    config_file = write_config(tmp_path / "config.yaml", config)

    test_run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_temperature.py"],
                              cwd=repo, capture_output=True, text=True)
    assert test_run.returncode == 0, test_run.stdout + test_run.stderr

    result = snakemake(tmp_path, config_file, snakefile=repo / "Snakefile")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    long = pd.read_csv(tmp_path / "results" / "tables" / "perplexity.csv")
    sweep = ["temperature@temperature=0.5", "temperature@temperature=8"]
    assert list(dict.fromkeys(long["strategy"])) == ["uniform", "temperature", *sweep]
    assert (long["strategy"] == "temperature").sum() == len(config["corpus"]["domains"])
    assert "| temperature " in (tmp_path / "results" / "tables" / "perplexity.md").read_text()
    # Each variant trained on its own mixture: a lower temperature leans harder towards the large domains.
    weights = pd.read_csv(tmp_path / "results" / "tables" / "weights.csv").groupby("strategy")["weight"]
    assert weights.max()[sweep[1]] < weights.max()["temperature"] < weights.max()[sweep[0]]
    for name in sweep:
        assert (tmp_path / "runs" / "test" / name / "seed0" / "final" / "val.csv").exists()
    # One seed: nothing to compare, and the table says why.
    assert "needs at least 2 seeds" in (tmp_path / "results" / "tables" / "comparison.md").read_text()
    assert (tmp_path / "results" / "figures" / "sweeps.png").stat().st_size > 1000
