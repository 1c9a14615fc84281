"""Plays the README's "Add a strategy" section on a copy of the repository.

The module, registry line, config file and test are taken verbatim from the README's marked code
blocks, and the section's commands (its `run` block) run as written, in the copy's root: the
instructions cannot drift from what works. The config file's base is config/try.yaml, so this
also runs the README's two-minute grid (its own data/try, runs/try, results/try folders).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from conftest import REPO

# How each command of the `run` block starts, and the interpreter running it here: the suite's
# own, whichever `python` a shell would find (the PATH below holds no virtualenv).
ENTRY_POINTS = {"pytest": [sys.executable, "-m", "pytest"], "snakemake": [sys.executable, "-m", "snakemake"]}


def readme_blocks() -> dict[str, str]:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"<!-- add-strategy: (\S+) -->\n```\w+\n(.*?)```", readme, flags=re.S)
    return dict(blocks)


def copy_repo(dest: Path) -> Path:
    """The repository's tracked and unignored files, copied to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def run_commands(block: str, cwd: Path) -> None:
    """Each line of a shell block, run in ``cwd`` as the README says; stops at the first failure."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    for line in block.strip().splitlines():
        program, *args = shlex.split(line)
        done = subprocess.run([*ENTRY_POINTS[program], *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_readme_story_adds_a_strategy_that_reaches_the_tables(tmp_path):
    blocks = readme_blocks()
    assert set(blocks) == {"strategies/temperature.py", "registry", "temperature.yaml", "tests/test_temperature.py",
                           "run"}
    repo = copy_repo(tmp_path / "repo")

    # 1. the module, 3. its config file, 4. its test: files exactly as the README shows them.
    for path in ("strategies/temperature.py", "temperature.yaml", "tests/test_temperature.py"):
        (repo / path).write_text(blocks[path])
    # 2. the registry line, added to REGISTRY.
    registry = repo / "strategies" / "__init__.py"
    source = registry.read_text()
    assert "REGISTRY: dict[str, str] = {\n" in source
    registry.write_text(source.replace("REGISTRY: dict[str, str] = {\n", "REGISTRY: dict[str, str] = {\n" + blocks["registry"], 1))
    # The two-minute grid under it: one seed keeps this test short, perplexity only.
    config = yaml.safe_load(blocks["temperature.yaml"])
    assert config["base"] == "config/try.yaml"
    try_grid = yaml.safe_load((repo / "config" / "try.yaml").read_text())
    assert try_grid["grid"]["seeds"] == [0] and try_grid["downstream"]["tasks"] == []

    # 5. the commands: the strategy's test, then the grid.
    run_commands(blocks["run"], cwd=repo)

    results, runs = repo / try_grid["results_dir"], repo / try_grid["runs_dir"]
    long = pd.read_csv(results / "tables" / "perplexity.csv")
    sweep = ["temperature@temperature=0.5", "temperature@temperature=8"]
    assert list(dict.fromkeys(long["strategy"])) == ["uniform", "temperature", *sweep]
    domains = yaml.safe_load((REPO / "tests" / "config" / "test.yaml").read_text())["corpus"]["domains"]
    assert (long["strategy"] == "temperature").sum() == len(domains)
    assert "| temperature " in (results / "tables" / "perplexity.md").read_text()
    # Each variant trained on its own mixture: a lower temperature leans harder towards the large domains.
    weights = pd.read_csv(results / "tables" / "weights.csv").groupby("strategy")["weight"]
    assert weights.max()[sweep[1]] < weights.max()["temperature"] < weights.max()[sweep[0]]
    for name in sweep:
        assert (runs / "test" / name / "seed0" / "final" / "val.csv").exists()
    # One seed: nothing to compare, and the table says why.
    assert "needs at least 2 seeds" in (results / "tables" / "comparison.md").read_text()
    assert (results / "figures" / "sweeps.png").stat().st_size > 1000
    # Nothing of the default grid's folders was touched.
    assert not (repo / "results" / "tables").exists() and not (repo / "data" / "corpus").exists()
