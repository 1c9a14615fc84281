"""Corpus splitting, the manifest, the tokenizer and the token files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_test_config
from corpus import build
from corpus.tokens import TokenStore
from mixbench import config as cfg
from mixbench.errors import DataError
from mixbench.io import read_json, sha256_file


def docs(n: int, size: int = 10) -> list[tuple[str, str]]:
    return [(f"doc-{i}", "x" * size) for i in range(n)]


def test_split_is_deterministic_disjoint_and_independent_of_input_order():
    documents = docs(100)
    a = build.split_documents(documents, 0.1, 0.05, min_docs=2)
    b = build.split_documents(list(reversed(documents)), 0.1, 0.05, min_docs=2)
    assert a == b
    assert [len(a[s]) for s in ("train", "val", "test")] == [85, 10, 5]
    ids = [d[0] for s in a.values() for d in s]
    assert len(ids) == len(set(ids)) == 100


def test_small_domains_still_get_the_minimum_split_sizes_or_a_clear_error():
    split = build.split_documents(docs(10), 0.01, 0.01, min_docs=3)
    assert [len(split[s]) for s in ("train", "val", "test")] == [4, 3, 3]
    with pytest.raises(DataError, match="only 8 documents"):
        build.split_documents(docs(8), 0.01, 0.01, min_docs=3)


def test_byte_cap_keeps_a_prefix_of_the_hash_order():
    ordered = build.hash_order(docs(50, size=100))
    kept = build.cap_bytes(ordered, 1000)
    assert kept == ordered[:10]


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
