"""The install files agree with each other and CI runs what the README says."""

from __future__ import annotations

import re

import yaml

from conftest import REPO


def requirement_lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_environment_yml_mirrors_requirements_txt():
    pinned = requirement_lines((REPO / "requirements.txt").read_text())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == pinned
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", line) for line in pinned), "every requirement is pinned"
    assert "torch==2.13.0" in pinned and any(line.startswith("lm-eval[hf]==") for line in pinned)


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(bash scripts/mixbench\.sh \w+)$", quick_start, flags=re.M)
    assert commands == ["bash scripts/mixbench.sh benchmark", "bash scripts/mixbench.sh test"]
    assert "bash scripts/mixbench.sh test" in (REPO / ".ci" / "run").read_text()
