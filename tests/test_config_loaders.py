"""Every module above the strategies' layer loads its config with the complete check.

``mixbench.config.load`` and ``validate`` check what the corpus and tokenizer builds need, not the
grid's strategies (mixbench/config.py); ``strategies.grid_config.load`` and ``validate`` add those
checks. A module that trains, evaluates or reads runs (models/, eval/, benchmarks/, scripts/, the
workflow's rules) and reached for the first would skip the strategy checks without a word, so this
test fails on any use of them there: a call, or the function passed on as a value. Read with
``ast`` (and, for the rules' Snakemake syntax, a regular expression): nothing is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ABOVE_STRATEGIES = ("models", "eval", "benchmarks", "scripts")
DATA_ONLY = {"load", "validate"}  # mixbench.config's functions that skip the strategy checks
# In the rules, mixbench.config is imported as `cfg` (rules/common.smk).
RULES_USE = re.compile(r"\bcfg\.(load|validate)\b")


def data_only_uses(source: str, filename: str = "<source>") -> list[str]:
    """'line: what' for each use of mixbench.config.load or .validate in Python source."""
    tree = ast.parse(source, filename=filename)
    module_aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            module_aliases |= {alias.asname for alias in node.names if alias.name == "mixbench.config" and alias.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == "mixbench" and not node.level:
            module_aliases |= {alias.asname or alias.name for alias in node.names if alias.name == "config"}
        elif isinstance(node, ast.ImportFrom) and node.module == "mixbench.config" and not node.level:
            found += [f"{node.lineno}: from mixbench.config import {alias.name}" for alias in node.names
                      if alias.name in DATA_ONLY]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in DATA_ONLY:
            value = node.value
            if isinstance(value, ast.Name) and value.id in module_aliases:
                found.append(f"{node.lineno}: {value.id}.{node.attr}")
            elif ast.unparse(value) == "mixbench.config":
                found.append(f"{node.lineno}: mixbench.config.{node.attr}")
    return found


def test_the_check_finds_each_way_of_reaching_the_data_steps_loader():
    source = ("from mixbench import config as cfg\nimport mixbench.config\nfrom mixbench.config import validate\n"
              "main = command(step, load=cfg.load)\nmixbench.config.load('x.yaml')\n"
              "from strategies import grid_config\ngrid_config.load('x.yaml')\ncfg.Stage.parse('final')\n")
    assert sorted(data_only_uses(source)) == ["3: from mixbench.config import validate", "4: cfg.load",
                                              "5: mixbench.config.load"]
    assert RULES_USE.search("config = cfg.validate(raw)") and not RULES_USE.search("grid_config.validate(raw)")


def test_no_module_above_the_strategies_loads_its_config_without_the_strategy_checks():
    problems = []
    for package in ABOVE_STRATEGIES:
        for path in sorted((REPO / package).rglob("*.py")):
            problems += [f"{path.relative_to(REPO)}:{use}"
                         for use in data_only_uses(path.read_text(encoding="utf-8"), str(path))]
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").rglob("*.smk"))]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if RULES_USE.search(line):
                problems.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not problems, ("these use mixbench.config.load/validate, which skip the strategy checks; use "
                          "strategies.grid_config.load/validate:\n" + "\n".join(problems))
