"""Build the corpus: per-domain train/val/test splits and a manifest.

    python -m corpus.build --config config/config.yaml

Writes ``{data_dir}/corpus/{domain}/{split}.jsonl`` (one ``{"id", "text"}`` per line) and
``{data_dir}/corpus/manifest.json`` with bytes, documents and sha256 per domain and split.
Splits are made once, at document level, from a hash of each document's id, so they are
the same on every machine and for every strategy. Exact duplicate texts are dropped first.
``available_bytes`` records each domain's size before the cap (for streamed hub data: the
bytes of that domain seen in the stream until every cap was reached), which is what
``natural`` sampling is proportional to.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from mixbench.cli import config_command
from mixbench.errors import DataError
from mixbench.io import atomic_path, sha256_file, write_json
from corpus.sources import Document, check_source, documents_by_domain

SPLITS = ("train", "val", "test")


def hash_order(docs: list[Document]) -> list[Document]:
    """A pseudo-random but machine-independent order: by sha256 of the document id."""
    return sorted(docs, key=lambda doc: hashlib.sha256(doc[0].encode("utf-8")).hexdigest())


def cap_bytes(docs: list[Document], max_bytes: int) -> list[Document]:
    """Keep documents (in the given order) until ``max_bytes`` of UTF-8 text is reached."""
    kept, total = [], 0
    for doc in docs:
        if total >= max_bytes:
            break
        kept.append(doc)
        total += len(doc[1].encode("utf-8"))
    return kept


def deduplicate(docs: list[Document]) -> list[Document]:
    """Drop exact repeats of a text (fortunes recur across files): a text in both train and
    test would inflate every test score. Keeps the first in the given order."""
    seen: set[bytes] = set()
    unique = []
    for doc in docs:
        key = hashlib.sha256(doc[1].encode("utf-8")).digest()
        if key not in seen:
            seen.add(key)
            unique.append(doc)
    return unique


def text_bytes(docs: list[Document]) -> int:
    return sum(len(text.encode("utf-8")) for _, text in docs)


def split_documents(
    docs: list[Document], val_fraction: float, test_fraction: float, min_docs: int
) -> dict[str, list[Document]]:
    """test = the first n_test documents in hash order, val = the next n_val, train = the rest."""
    docs = hash_order(docs)
    n = len(docs)
    n_test = max(min_docs, round(test_fraction * n))
    n_val = max(min_docs, round(val_fraction * n))
    if n - n_test - n_val < min_docs:
        raise DataError(
            f"only {n} documents: too few for {n_test} test, {n_val} val and at least {min_docs} train documents"
        )
    return {"test": docs[:n_test], "val": docs[n_test : n_test + n_val], "train": docs[n_test + n_val :]}


def write_split(path: Path, docs: list[Document]) -> dict:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for doc_id, text in docs:
            f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    return {
        "documents": len(docs),
        "bytes": text_bytes(docs),
        "sha256": sha256_file(path),
    }


def build(config: dict) -> dict:
    corpus = config["corpus"]
    check_source(corpus)  # before any reading: a missing package fails here
    out_dir = Path(config["data_dir"]) / "corpus"
    all_docs, origin = documents_by_domain(corpus)
    manifest = {"source": corpus["source"], "domains": {}}
    for domain in corpus["domains"]:
        docs = deduplicate(hash_order([d for d in all_docs[domain] if d[1].strip()]))
        # Bytes of the whole domain, before the cap: natural sampling is proportional to these.
        available = origin[domain].pop("stream_bytes", None) or text_bytes(docs)
        docs = cap_bytes(docs, corpus["max_bytes_per_domain"])
        try:
            splits = split_documents(docs, corpus["val_fraction"], corpus["test_fraction"], corpus["min_split_documents"])
        except DataError as exc:
            raise DataError(f"domain {domain!r}: {exc}") from None
        stats = {split: write_split(out_dir / domain / f"{split}.jsonl", splits[split]) for split in SPLITS}
        manifest["domains"][domain] = {**origin[domain], "available_bytes": available, "splits": stats}
        print(f"{domain:>14}: " + ", ".join(f"{s} {stats[s]['documents']} docs / {stats[s]['bytes']:,} B" for s in SPLITS),
              file=sys.stderr)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


main = config_command(build, __doc__)


if __name__ == "__main__":
    main()
