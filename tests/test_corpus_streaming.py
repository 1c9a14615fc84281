"""Streamed corpus builds on files shaped like SlimPajama, The Pile and a flat parquet: stable ids,
hard caps, early stops, bad records, the offline error and tokenization across worker counts."""

from __future__ import annotations

import gzip
import json
import random
import time
from pathlib import Path

import pytest

from conftest import make_test_config
from corpus import build
from corpus.spool import SPLITS
from mixbench import config as cfg
from mixbench.errors import ConfigError, DataError
from mixbench.io import read_json

DOMAINS = ["ArXiv", "Github", "StackExchange"]


def documents(n_per_domain: int = 12) -> list[tuple[str, str]]:
    """(domain, text) pairs with texts of varied length, lines and non-ASCII characters."""
    rng = random.Random(0)
    words = ["theorem", "func", "answer", "naïve", "λ", "data", "mix", "loss", "grad", "token"]
    docs = []
    for i in range(n_per_domain):
        for domain in DOMAINS:
            lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(rng.randint(1, 6))]
            docs.append((domain, f"{domain} {i}\n" + "\n".join(lines)))
    return docs


def slimpajama(domain: str, text: str) -> dict:
    return {"text": text, "meta": {"redpajama_set_name": domain}}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def build_from(tmp_path: Path, name: str, pattern: str, **corpus) -> tuple[dict, Path]:
    settings = {"source": "jsonl", "path": pattern, "domains": DOMAINS, "min_split_documents": 1,
                "val_fraction": 0.2, "test_fraction": 0.2, "domain_field": "domain", **corpus}
    config = cfg.validate(make_test_config(tmp_path / name, corpus=settings))
    return build.build(config), Path(config["data_dir"]) / "corpus"


def split_bytes(corpus_dir: Path) -> dict[str, bytes]:
    return {f"{d}/{s}": (corpus_dir / d / f"{s}.jsonl").read_bytes() for d in DOMAINS for s in SPLITS}


def test_the_same_documents_give_byte_identical_splits_in_any_format_file_name_or_order(tmp_path):
    import pandas as pd

    docs = documents()
    src = tmp_path / "src"
    (src / "zst").mkdir(parents=True)
    write_jsonl(src / "zst" / "chunk_0.jsonl.zst", [slimpajama(d, t) for d, t in docs])
    shuffled = random.Random(1).sample(docs, len(docs))
    (src / "gz").mkdir()
    write_jsonl(src / "gz" / "b.jsonl.gz", [{"text": t, "meta": {"pile_set_name": d}} for d, t in shuffled[:20]])
    write_jsonl(src / "gz" / "a.jsonl.gz", [{"text": t, "meta": {"pile_set_name": d}} for d, t in shuffled[20:]])
    (src / "pq").mkdir()
    pd.DataFrame([{"domain": d, "text": t} for d, t in reversed(docs)]).to_parquet(src / "pq" / "renamed.parquet")

    _, slim = build_from(tmp_path, "slim", str(src / "zst" / "*.zst"), domain_field="meta.redpajama_set_name")
    _, pile = build_from(tmp_path, "pile", str(src / "gz" / "*.jsonl.gz"), domain_field="meta.pile_set_name")
    manifest, flat = build_from(tmp_path, "flat", str(src / "**" / "*.parquet"))
    assert split_bytes(slim) == split_bytes(pile) == split_bytes(flat)
    assert sum(s["documents"] for e in manifest["domains"].values() for s in e["splits"].values()) == len(docs)


def test_the_cap_is_hard_a_long_document_is_cut_at_a_line_end(tmp_path):
    long_text = "".join(f"line {i} of a very long document\n" for i in range(3000))  # ~100 kB
    small = [{"domain": d, "text": t} for d, t in documents()]  # Github's small ones: ~4 kB, under the cap
    for selection, records in (("stream", small + [{"domain": "Github", "text": long_text}]),
                               ("hash", [{"domain": "Github", "text": long_text}] + small)):
        path = write_jsonl(tmp_path / f"{selection}.jsonl", records)
        manifest, out = build_from(tmp_path, selection, str(path), max_bytes_per_domain=20_000, selection=selection)
        entry = manifest["domains"]["Github"]
        texts = [json.loads(line)["text"] for s in SPLITS for line in (out / "Github" / f"{s}.jsonl").open()]
        kept = sum(len(t.encode()) for t in texts)
        assert sum(s["bytes"] for s in entry["splits"].values()) == kept and 19_900 < kept <= 20_000
        assert entry["cap_reached"] and entry["available_bytes"] > 100_000 and entry["cut_documents"] == 1
        # Whatever its place in the order, the long document crosses the cap: only a prefix of it
        # is kept, ending at a line end.
        [cut] = [t for t in texts if t.startswith("line 0 ")]
        assert long_text.startswith(cut) and cut.endswith("\n") and len(cut) < len(long_text)


def test_hash_selection_keeps_the_same_documents_in_any_order_when_the_cap_binds(tmp_path):
    import pandas as pd

    docs = documents(40)
    write_jsonl(tmp_path / "ordered.jsonl", [{"domain": d, "text": t} for d, t in docs])
    pd.DataFrame([{"domain": d, "text": t} for d, t in random.Random(3).sample(docs, len(docs))]
                 ).to_parquet(tmp_path / "shuffled.parquet")
    built = [build_from(tmp_path, f"build-{name}", str(tmp_path / name), max_bytes_per_domain=3000, selection="hash")
             for name in ("ordered.jsonl", "shuffled.parquet")]
    assert all(e["cap_reached"] for manifest, _ in built for e in manifest["domains"].values())
    assert split_bytes(built[0][1]) == split_bytes(built[1][1])


def test_the_read_stops_once_every_domain_is_full_or_the_read_budget_is_spent(tmp_path, capsys):
    docs = documents(200)
    path = write_jsonl(tmp_path / "many.jsonl", [{"domain": d, "text": t} for d, t in docs])
    manifest, _ = build_from(tmp_path, "full", str(path), max_bytes_per_domain=2000)
    assert manifest["read"]["stopped_because"] == "every domain reached its cap"
    assert manifest["read"]["records"] < len(docs) / 2 and not manifest["read"]["complete"]

    # StackExchange capped high: it never fills, so only the budget stops the read.
    caps = {"StackExchange": 10**8, "default": 2000}
    manifest, _ = build_from(tmp_path, "budget", str(path), max_bytes_per_domain=caps, max_read_bytes=20_000)
    assert manifest["read"]["stopped_because"] == "corpus.max_read_bytes (20,000) spent"
    assert 20_000 <= manifest["read"]["bytes"] < 21_000
    err = capsys.readouterr().err
    assert "domains below their cap: StackExchange (" in err and "Github (" not in err.split("below their cap")[1]
    assert [e["cap_bytes"] for e in manifest["domains"].values()] == [2000, 2000, 10**8]


def test_per_domain_caps_must_name_configured_domains(tmp_path):
    with pytest.raises(ConfigError, match="names 'Arxiv', which is not in corpus.domains"):
        build_from(tmp_path, "typo", "x.jsonl", max_bytes_per_domain={"Arxiv": 5000, "default": 2000})
    with pytest.raises(ConfigError, match=r"no cap for \['Github', 'StackExchange'\] and no `default`"):
        build_from(tmp_path, "nodefault", "x.jsonl", max_bytes_per_domain={"ArXiv": 5000})


BAD_LINES = [
    ('{"domain": "ArXiv", "text": null}', "text_not_string", "field 'text' is null, not a string"),
    ('{"domain": "ArXiv", "text": 12345}', "text_not_string", "field 'text' is int 12345, not a string"),
    ('{"text": "no domain here"}', "missing_field", "no field 'domain'"),
    ('{"domain": "ArXiv", "text": "cut off', "invalid_json", "invalid JSON (Unterminated string"),
    (b'{"domain": "ArXiv", "text": "caf\xe9"}', "invalid_utf8", "invalid UTF-8 (byte 32 of the line"),
    ('["ArXiv", "a list"]', "not_an_object", "a JSON list, not an object"),
    ('{"domain": "ArXiv", "text": "a\\ud800b"}', "invalid_utf8", "field 'text' holds a lone surrogate"),
]


@pytest.mark.parametrize("line,kind,problem", BAD_LINES, ids=[b[1] + str(i) for i, b in enumerate(BAD_LINES)])
def test_a_bad_record_is_an_error_naming_file_line_and_problem_and_nothing_is_written(tmp_path, line, kind, problem):
    good = [json.dumps({"domain": d, "text": t}).encode() for d, t in documents()]
    bad = line if isinstance(line, bytes) else line.encode()
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"\n".join(good[:7] + [bad] + good[7:]) + b"\n")
    with pytest.raises(DataError) as error:
        build_from(tmp_path, "error", str(path))
    assert str(error.value).startswith(f"{path}:8: {problem}")
    assert "corpus.bad_records: skip" in str(error.value)
    assert not (tmp_path / "error" / "data" / "corpus").exists()

    manifest, _ = build_from(tmp_path, "skip", str(path), bad_records="skip")
    assert manifest["read"]["skipped"] == {str(path): {kind: 1}}
    assert manifest["read"]["records"] == len(good)


def test_a_bad_parquet_row_is_named_by_its_row(tmp_path):
    import pandas as pd

    rows = [{"domain": d, "text": t} for d, t in documents()]
    rows[4]["text"] = None
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(DataError, match=r"rows.parquet: row 5: field 'text' is null, not a string"):
        build_from(tmp_path, "parquet", str(tmp_path / "rows.parquet"))


def test_empty_texts_are_dropped_and_counted_per_file(tmp_path):
    records = [{"domain": d, "text": t} for d, t in documents()] + [{"domain": "ArXiv", "text": " \n\t"}] * 2
    path = write_jsonl(tmp_path / "with-empty.jsonl", records)
    manifest, _ = build_from(tmp_path, "empty", str(path))
    assert manifest["read"]["empty_texts"] == {str(path): 2}
    assert manifest["domains"]["ArXiv"]["documents_read"] == 12


def test_a_hub_source_without_network_fails_at_once_saying_what_to_download(tmp_path, monkeypatch):
    for variable in ("HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = cfg.validate(make_test_config(tmp_path, corpus={
        "source": "huggingface", "dataset": "cerebras/SlimPajama-627B", "domain_field": "meta.redpajama_set_name"}))
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        build.build(config)
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert ("hf download cerebras/SlimPajama-627B --repo-type dataset --include 'train/*' "
            "--local-dir data/hub/SlimPajama-627B") in message
    assert "corpus: {source: jsonl, path: 'data/hub/SlimPajama-627B/train/**/*.jsonl.zst'}" in message

    import huggingface_hub.utils
    from huggingface_hub import constants

    from corpus.hub import OFFLINE_VARIABLES

    for variable in OFFLINE_VARIABLES:  # other tests' imports may have set them (eval.harness.lm evaluates offline)
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    class NoNetwork:
        def head(self, url, timeout):
            raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.utils, "get_session", NoNetwork)
    with pytest.raises(DataError, match="did not answer: ConnectionError: Name or service not known"):
        build.build(config)


def test_token_files_are_the_same_bytes_whatever_the_worker_count(tmp_path, monkeypatch):
    from corpus import tokenizer, tokens

    monkeypatch.setattr(tokens, "CHUNK_BYTES", 4096)  # many chunks per file, spread over the workers
    config = cfg.validate(make_test_config(tmp_path))
    build.build(config)
    tokenizer.build(config)
    tokens_dir = Path(config["data_dir"]) / "tokens"
    contents = []
    for workers in (1, 2):
        meta = tokens.build(config, workers=workers)
        assert read_json(tokens_dir / "meta.json") == meta
        # Everything but when each file was written (the time a job compares, corpus/tokens.py).
        for splits in meta["domains"].values():
            for entry in splits.values():
                assert entry.pop("mtime_ns") == (tokens_dir / entry["file"]).stat().st_mtime_ns
        contents.append((meta, {p.name: p.read_bytes() for p in sorted(tokens_dir.glob("*.bin"))}))
    assert contents[0] == contents[1]
