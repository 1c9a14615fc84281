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


def older_data(built_data: dict, config: dict, products=("corpus", "tokenizer", "tokens")) -> Path:
    """``built_data``'s data copied into ``config``'s data_dir (times kept), ``products`` without their
    markers, as an older mixbench left them."""
    data_dir = Path(config["data_dir"])
    for product in ("corpus", "tokenizer", "tokens"):
        shutil.copytree(Path(built_data["data_dir"]) / product, data_dir / product)
    for product in products:
        for marker in identity.markers(data_dir / product):
            marker.unlink()
    return data_dir


def test_the_workflow_rebuilds_data_made_with_other_settings_from_a_fresh_working_directory(tmp_path, built_data):
    """Another grid's data on disk and no .snakemake/ record of it, its corpus from before markers
    existed: the grid's run plans the corpus, tokenizer and token files again, since the markers its
    rules ask for are missing (for the corpus, since the domains it records differ). (That the same
    grid plans none is tests/test_workflow.py's rerun.)"""
    config = grid_config(tmp_path, ["code", "books", "qa"])
    data_dir = older_data(built_data, config, products=("corpus",))
    assert identity.legacy(data_dir / "corpus", "corpus") and not identity.built(data_dir / "corpus", config, "corpus")
    assert identity.built(data_dir / "tokenizer", built_data, "tokenizer")
    # A job that would read it stops in one line naming what differs.
    with pytest.raises(DataError) as refused:
        tokenizer.build(config)
    assert str(refused.value) == (
        f"{data_dir / 'corpus'} records no settings (built by an older mixbench) and what it records differs from "
        f"this config: corpus.domains: {sorted(SIX)} there, ['books', 'code', 'qa'] here; rebuild it with: "
        f"snakemake --cores 1 --forcerun build_corpus --configfile ..., or give this config its own data_dir")
    done = snakemake(tmp_path / "work", write_config(tmp_path / "config.yaml", config), "-n")
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout)
    assert [counts.get(rule) for rule in ("build_corpus", "train_tokenizer", "tokenize_corpus")] == [1, 1, 1], counts
    for product in ("corpus", "tokens"):
        assert f"Missing output files: {identity.marker(data_dir / product, config, product)}" in done.stdout


def test_data_built_before_markers_that_agrees_with_the_config_is_kept_saying_what_was_checked(
        tmp_path, built_data, capsys):
    config = {**built_data, "data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
              "results_dir": str(tmp_path / "results")}
    data_dir = older_data(built_data, config)
    done = snakemake(tmp_path / "work", write_config(tmp_path / "config.yaml", config), "-n")
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout)
    assert counts.get("train") and not {"build_corpus", "train_tokenizer", "tokenize_corpus"} & set(counts), counts
    identity.check(data_dir / "tokens", config, "tokens")
    warning = capsys.readouterr().err
    assert warning.startswith(f"warning: {data_dir / 'tokens'} records no settings (built by an older mixbench); "
                              f"it is kept as built with this config's, since the 11 it records agree "
                              f"(corpus.domains, corpus.source, corpus.bad_records, corpus.selection, "), warning
    assert ("tokenizer.vocab_size, the tokenizer's vocabulary size, documents per split (token files, corpus)); "
            "10 could not be checked (corpus.path, corpus.max_read_bytes, ") in warning
    # Token files made with another tokenizer than the one beside them no longer agree.
    meta = json.loads((data_dir / "tokens" / "meta.json").read_text())
    (data_dir / "tokens" / "meta.json").write_text(json.dumps({**meta, "vocab_size": 600}))
    with pytest.raises(DataError, match=r"differs from this config: the tokenizer's vocabulary size: 600 there, "
                                        r"512 here; rebuild it with: snakemake --cores 1 --forcerun tokenize_corpus"):
        identity.check(data_dir / "tokens", config, "tokens")
