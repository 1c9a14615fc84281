"""Corpus settings are part of the corpus's identity (corpus/identity.py): two grids with other
corpus settings on one data_dir each get their own corpus, never a half-matching one."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import job_counts, make_test_config, snakemake, write_config
from corpus import build, identity, tokenizer, tokens
from mixbench.errors import DataError
import strategies.grid_config

SIX = ["code", "books", "encyclopedic", "docs", "man", "qa"]


def grid_config(root: Path, domains: list[str]) -> dict:
    """The test grid on ``root/data`` with its own runs and results folders and the given domains."""
    config = make_test_config(root, corpus={"domains": domains}, grid={"strategies": ["uniform"], "seeds": [0]},
                              downstream={"tasks": []})
    name = "-".join(domains)
    return strategies.grid_config.validate({**config, "runs_dir": str(root / name / "runs"),
                                            "results_dir": str(root / name / "results")})


def test_a_corpus_built_with_other_settings_is_refused_then_rebuilt_whole(tmp_path):
    first, second = grid_config(tmp_path, SIX), grid_config(tmp_path, ["code", "books", "qa"])
    corpus_dir = Path(first["data_dir"]) / "corpus"
    build.build(first)
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    assert manifest["settings_fingerprint"] == identity.fingerprint(first, "corpus")
    identity.check(corpus_dir, first, "corpus")
    # A job of the second grid stops before reading anything, naming the setting and both values.
    message = (f"{corpus_dir} was built with other settings (fingerprint {identity.fingerprint(first, 'corpus')}) "
               f"than this config's ({identity.fingerprint(second, 'corpus')}): corpus.domains: {SIX} there, "
               f"['code', 'books', 'qa'] here; rebuild it with: snakemake --cores 1 --forcerun build_corpus")
    with pytest.raises(DataError, match=re.escape(message)):
        tokenizer.build(second)
    assert not (Path(first["data_dir"]) / "tokenizer").exists()
    # Its build replaces the corpus whole: its domains, its marker, none of the first grid's.
    build.build(second)
    assert sorted(p.name for p in corpus_dir.iterdir() if p.is_dir()) == ["books", "code", "qa"]
    assert identity.markers(corpus_dir) == [identity.marker(corpus_dir, second, "corpus")]
    identity.check(corpus_dir, second, "corpus")
    tokenizer.build(second)
    tokens.build(second)
    assert list(json.loads((Path(first["data_dir"]) / "tokens" / "meta.json").read_text())["domains"]) == \
        ["code", "books", "qa"]
    # Token files made for another tokenizer setting are refused too.
    other_vocab = {**second, "tokenizer": {**second["tokenizer"], "vocab_size": 600}}
    with pytest.raises(DataError, match=r"tokenizer\.vocab_size: 512 there, 600 here"):
        identity.check(Path(first["data_dir"]) / "tokens", other_vocab, "tokens")
    identity.check(Path(first["data_dir"]) / "tokens", {**second, "tokenizer": {**second["tokenizer"], "workers": 3}},
                   "tokens")  # workers change no token


def test_the_workflow_rebuilds_data_made_with_other_settings_from_a_fresh_working_directory(tmp_path, built_data):
    """Another grid's data on disk and no .snakemake/ record of it: the grid's run plans the corpus,
    tokenizer and token files again, since the markers its rules ask for are missing. (That the same
    grid plans none is tests/test_workflow.py's rerun.)"""
    config = grid_config(tmp_path, ["code", "books", "qa"])
    for product in ("corpus", "tokenizer", "tokens"):
        shutil.copytree(Path(built_data["data_dir"]) / product, Path(config["data_dir"]) / product)
    assert identity.built(Path(config["data_dir"]) / "corpus", built_data, "corpus")
    done = snakemake(tmp_path / "work", write_config(tmp_path / "config.yaml", config), "-n")
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout)
    assert [counts.get(rule) for rule in ("build_corpus", "train_tokenizer", "tokenize_corpus")] == [1, 1, 1], counts
    assert f"Missing output files: {identity.marker(Path(config['data_dir']) / 'corpus', config, 'corpus')}" \
        in done.stdout


def test_data_built_before_markers_is_kept_with_a_note(tmp_path, capsys):
    config = grid_config(tmp_path, ["code", "qa"])
    build.build(config)
    corpus_dir = Path(config["data_dir"]) / "corpus"
    for marker in identity.markers(corpus_dir):
        marker.unlink()
    assert identity.legacy(corpus_dir, "corpus") and identity.built(corpus_dir, config, "corpus")
    identity.check(corpus_dir, grid_config(tmp_path, ["code", "books"]), "corpus")
    assert "records no settings (built by an older mixbench)" in capsys.readouterr().err
