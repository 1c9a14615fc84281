"""Corpus splitting, the manifest, the tokenizer and the token files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import make_test_config
from corpus import build, sources
from corpus import progress as corpus_progress
from corpus.records import Record
from corpus.spool import SPLITS, DomainSpool, content_key, document_id, split_sizes
from corpus.tokens import TokenStore
from mixbench import config as cfg
from mixbench.errors import DataError
from mixbench.io import read_json, sha256_file


def spool_of(tmp_path: Path, texts: list[str], cap: int = 10**9, selection: str = "stream") -> DomainSpool:
    spool = DomainSpool(domain="code", path=tmp_path / f"spool-{selection}-{len(texts)}", cap=cap, selection=selection)
    for text in texts:
        spool.offer(text.encode())
    return spool


def split_texts(out: Path) -> dict[str, list[str]]:
    return {s: [json.loads(line)["text"] for line in (out / f"{s}.jsonl").read_text().splitlines()] for s in SPLITS}


def test_split_is_deterministic_disjoint_and_independent_of_input_order(tmp_path):
    texts = [f"document {i}" for i in range(100)]
    entries = []
    for name, order in (("a", texts), ("b", list(reversed(texts)))):
        spool = spool_of(tmp_path, order)
        entries.append(spool.write_splits(tmp_path / name, val_fraction=0.1, test_fraction=0.05, min_docs=2))
    assert entries[0] == entries[1]
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    assert [entries[0]["splits"][s]["documents"] for s in SPLITS] == [85, 10, 5]
    kept = [t for split in split_texts(tmp_path / "a").values() for t in split]
    assert sorted(kept) == sorted(texts)
    # Ids are the content keys; each split is in id order.
    for split in SPLITS:
        ids = [json.loads(line)["id"] for line in (tmp_path / "a" / f"{split}.jsonl").read_text().splitlines()]
        assert ids == sorted(ids)
        assert all(i == document_id(content_key("code", t.encode())) for i, t in zip(ids, split_texts(tmp_path / "a")[split]))


def test_small_domains_still_get_the_minimum_split_sizes_or_a_clear_error():
    assert split_sizes(10, 0.01, 0.01, min_docs=3) == (3, 3)
    with pytest.raises(DataError, match="only 8 documents"):
        split_sizes(8, 0.01, 0.01, min_docs=3)


def test_hash_selection_keeps_the_lowest_keys_whatever_the_order(tmp_path):
    texts = [f"{i:03d}" + "x" * 97 for i in range(50)]  # 100 bytes each
    lowest = sorted(texts, key=lambda t: content_key("code", t.encode()))[:10]
    for order in (texts, list(reversed(texts))):
        spool = spool_of(tmp_path, order, cap=1000, selection="hash")
        entry = spool.write_splits(tmp_path / "out", val_fraction=0.1, test_fraction=0.1, min_docs=1)
        assert sorted(t for split in split_texts(tmp_path / "out").values() for t in split) == sorted(lowest)
        assert entry["cap_reached"] and entry["available_bytes"] == 5000


def test_exact_duplicate_texts_are_dropped_before_splitting(tmp_path):
    spool = spool_of(tmp_path, ["same text"] * 3 + [f"other {i}" for i in range(6)])
    entry = spool.write_splits(tmp_path / "out", val_fraction=0.1, test_fraction=0.1, min_docs=1)
    assert entry["duplicates_dropped"] == 2 and entry["available_bytes"] == 9 + 6 * 7
    assert sum(t == "same text" for split in split_texts(tmp_path / "out").values() for t in split) == 1


def test_manifest_records_counts_and_checksums_of_every_split(built_data):
    corpus_dir = Path(built_data["data_dir"]) / "corpus"
    manifest = read_json(corpus_dir / "manifest.json")
    assert list(manifest["domains"]) == built_data["corpus"]["domains"]
    total_docs = 0
    for domain, entry in manifest["domains"].items():
        for split, stats in entry["splits"].items():
            path = corpus_dir / domain / f"{split}.jsonl"
            lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            assert stats["documents"] == len(lines) and stats["sha256"] == sha256_file(path)
            assert stats["bytes"] == sum(len(r["text"].encode()) for r in lines)
            total_docs += len(lines)
    fixture_lines = (Path(built_data["corpus"]["path"])).read_text(encoding="utf-8").splitlines()
    assert total_docs == len(fixture_lines)  # the fixture is under the cap: nothing dropped


def test_rebuilding_gives_identical_files(built_data, tmp_path):
    again = cfg.validate(make_test_config(tmp_path))
    build.build(again)
    first = read_json(Path(built_data["data_dir"]) / "corpus" / "manifest.json")
    assert read_json(tmp_path / "data" / "corpus" / "manifest.json")["domains"] == first["domains"]


def test_a_domain_missing_from_the_data_is_named(tmp_path):
    config = cfg.validate(make_test_config(tmp_path, corpus={"domains": ["code", "poetry"]}))
    with pytest.raises(DataError, match=r"no documents for domain\(s\) \['poetry'\]"):
        build.build(config)


def test_tokenizer_round_trips_text_exactly(built_data):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(built_data["data_dir"]) / "tokenizer")
    assert len(tok) <= 512 and tok.eos_token == "<|endoftext|>"
    for text in ["func main() {\n\tfmt.Println(\"héllo\")\n}", "  spaces\tand tabs\n\n", "日本語 ✓ — ünïcödé"]:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_token_files_match_their_metadata(built_data):
    tokens_dir = Path(built_data["data_dir"]) / "tokens"
    meta = read_json(tokens_dir / "meta.json")
    assert meta["dtype"] == "uint16"
    store = TokenStore(tokens_dir, "train")
    for domain, array in zip(store.domains, store.arrays):
        entry = meta["domains"][domain]["train"]
        assert array.size == entry["tokens"] and int(np.sum(array == meta["eos_id"])) == entry["documents"]


def test_corrupt_token_files_are_refused(built_data, tmp_path):
    import shutil

    tokens_dir = tmp_path / "tokens"
    shutil.copytree(Path(built_data["data_dir"]) / "tokens", tokens_dir)
    victim = tokens_dir / "code.train.bin"
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match="code.train.bin is corrupt: sha256"):
        TokenStore(tokens_dir, "train")
    victim.write_bytes(bytes(data[:-2]))
    with pytest.raises(DataError, match="code.train.bin is corrupt: .* bytes, expected"):
        TokenStore(tokens_dir, "train")



def test_a_token_file_is_hashed_by_its_build_not_by_every_job_that_opens_it(built_data, tmp_path, monkeypatch):
    import os
    import shutil

    from corpus import tokens

    tokens_dir = tmp_path / "tokens"
    shutil.copytree(Path(built_data["data_dir"]) / "tokens", tokens_dir)  # keeps the modification times
    hashed = []
    monkeypatch.setattr(tokens, "sha256_file", lambda path: hashed.append(Path(path).name) or sha256_file(path))
    TokenStore(tokens_dir, "train")
    assert hashed == []  # as built: the build's sha256 stands
    victim = tokens_dir / "code.train.bin"
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 1))  # e.g. copied without its times
    TokenStore(tokens_dir, "train")
    assert hashed == ["code.train.bin"]  # checked again, and found intact

def slimpajama_like_records(n_per_domain: int = 30) -> list[dict]:
    """Records shaped like SlimPajama's: the domain in a nested ``meta`` field."""
    return [
        {"text": f"{domain} document {i} " + "lorem ipsum " * (5 + i % 7), "meta": {"redpajama_set_name": domain}}
        for i in range(n_per_domain) for domain in ("RedPajamaArXiv", "RedPajamaGithub", "RedPajamaBook")
    ]


def test_hub_source_streams_a_local_dataset_with_a_nested_domain_field(tmp_path):
    """The code path of the paper grid (datasets.load_dataset with streaming), on a local folder."""
    dataset_dir = tmp_path / "slimpajama"
    dataset_dir.mkdir()
    with open(dataset_dir / "train.jsonl", "w") as f:
        for record in slimpajama_like_records():
            f.write(json.dumps(record) + "\n")
    config = cfg.validate(make_test_config(tmp_path, corpus={
        "source": "huggingface", "dataset": str(dataset_dir), "domain_field": "meta.redpajama_set_name",
        "domains": ["RedPajamaGithub", "RedPajamaArXiv"], "max_bytes_per_domain": 1000, "min_split_documents": 2}))
    manifest = build.build(config)
    assert list(manifest["domains"]) == ["RedPajamaGithub", "RedPajamaArXiv"]
    for domain, entry in manifest["domains"].items():
        total = sum(s["bytes"] for s in entry["splits"].values())
        assert 900 < total <= 1000  # the cap is hard: the document that crosses it is cut
        rows = (tmp_path / "data" / "corpus" / domain / "train.jsonl").read_text().splitlines()
        assert all(json.loads(r)["text"].startswith(domain) for r in rows)


def test_a_hub_stream_resumes_from_its_saved_position(tmp_path, monkeypatch, capsys):
    """Here, beside the other hub test: ``datasets`` takes seconds to start, once per process."""
    from test_corpus_resume import Interrupted, built, config_for, counting_records, interrupt_after, shuffled_parts

    monkeypatch.setattr(corpus_progress, "SAVE_EVERY_S", 0.0)
    monkeypatch.setattr(sources, "HUB_POSITION_EVERY", 50)
    dataset = shuffled_parts(tmp_path / "dataset")
    stopped = config_for(tmp_path / "stopped", source="huggingface", dataset=str(dataset), max_bytes_per_domain=35000)
    interrupt_after(monkeypatch, finished=3, then_records=20)  # after record 150, at 170
    with pytest.raises(Interrupted):
        build.build(stopped)
    read = counting_records(monkeypatch)
    build.build(stopped)
    assert f"resuming the corpus build after {dataset} record 150" in capsys.readouterr().err
    assert sum(isinstance(item, Record) for item in read) == 360 - 150
    # The same documents in the same order as local files: the same corpus.
    whole = config_for(tmp_path / "whole", path=str(dataset / "*.jsonl"), max_bytes_per_domain=35000)
    build.build(whole)
    (resumed, resumed_files), (expected, expected_files) = built(stopped), built(whole)
    assert resumed_files == expected_files and resumed["domains"] == expected["domains"]


def test_local_parquet_files_work_like_jsonl(tmp_path):
    import pandas as pd

    pd.DataFrame([{"text": r["text"], "domain": r["meta"]["redpajama_set_name"]} for r in slimpajama_like_records()]
                 ).to_parquet(tmp_path / "corpus.parquet")
    config = cfg.validate(make_test_config(tmp_path, corpus={
        "path": str(tmp_path / "*.parquet"), "domains": ["RedPajamaBook", "RedPajamaArXiv"], "min_split_documents": 2}))
    manifest = build.build(config)
    assert {d: sum(s["documents"] for s in e["splits"].values()) for d, e in manifest["domains"].items()} == {
        "RedPajamaBook": 30, "RedPajamaArXiv": 30}


def test_capped_domains_keep_their_natural_size_for_natural_sampling(tmp_path):
    from corpus import tokenizer, tokens

    config = cfg.validate(make_test_config(tmp_path, corpus={"max_bytes_per_domain": 20000}))
    manifest = build.build(config)
    fixture = [json.loads(line) for line in Path(config["corpus"]["path"]).read_text().splitlines()]
    for domain, entry in manifest["domains"].items():
        kept = sum(s["bytes"] for s in entry["splits"].values())
        full = sum(len(r["text"].encode()) for r in fixture if r["domain"] == domain)
        assert entry["available_bytes"] == full  # the fixture has no duplicate texts
        assert kept == min(full, kept) and kept <= 20000 and (full <= 20000 or kept > 19000)
    tokenizer.build(config)
    tokens.build(config)
    meta = read_json(tmp_path / "data" / "tokens" / "meta.json")["domains"]
    estimate = tokens.uncapped_train_tokens(tmp_path / "data", config["corpus"]["domains"])
    for i, (domain, entry) in enumerate(manifest["domains"].items()):
        kept = sum(s["bytes"] for s in entry["splits"].values())
        assert estimate[i] == pytest.approx(meta[domain]["train"]["tokens"] * entry["available_bytes"] / kept)


def test_a_split_changed_after_the_build_is_refused_by_every_reader(built_data, tmp_path):
    import shutil

    from corpus import tokens
    from corpus.manifest import verify_splits
    from eval.harness.tasks import generate_perplexity_tasks
    from mixbench.errors import DataError

    data = tmp_path / "data"
    shutil.copytree(Path(built_data["data_dir"]) / "corpus", data / "corpus")
    shutil.copytree(Path(built_data["data_dir"]) / "tokenizer", data / "tokenizer")
    verify_splits(data / "corpus", built_data["corpus"]["domains"], ["train", "val", "test"])  # as built
    edited = data / "corpus" / "books" / "test.jsonl"
    edited.write_bytes(edited.read_bytes()[:-30] + b'"}\n')
    message = f"corpus split {edited} has sha256 "
    with pytest.raises(DataError, match=re.escape(message) + ".*changed after the build"):
        tokens.build({**built_data, "data_dir": str(data)})
    assert not (data / "tokens").exists()  # refused before writing anything
    with pytest.raises(DataError, match=re.escape(message)):
        generate_perplexity_tasks(data / "corpus", tmp_path / "tasks")
    verify_splits(data / "corpus", ["code"], ["train", "val", "test"])  # the other domains are untouched
