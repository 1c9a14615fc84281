"""Shared fixtures: the test configuration and a corpus built from the committed fixture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mixbench import config as cfg  # noqa: E402

TEST_CONFIG = REPO / "tests" / "config" / "test.yaml"
FIXTURE_CORPUS = REPO / "tests" / "fixtures" / "corpus.jsonl"


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
    config = cfg.validate(make_test_config(root))
    build.build(config)
    tokenizer.build(config)
    tokens.build(config)
    return config
