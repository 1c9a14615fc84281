"""Where domain documents come from: Debian packages, local jsonl/parquet, or the HF hub.

Every source yields ``(document_id, text)`` per domain. Local sources are read whole and
sampled by hash order (so a size cap takes a random, stable subset); the hub is streamed and
its order (shuffled for SlimPajama) is kept, since reading it whole is not an option.
"""

from __future__ import annotations

import glob
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

from mixbench.errors import DataError

Document = tuple[str, str]


def check_source(corpus: dict) -> None:
    """Fail before any work if the configured source cannot be read."""
    if corpus["source"] == "debian":
        from corpus import debian

        debian.check_available(corpus["domains"], corpus["deb_dir"])
    elif corpus["source"] == "jsonl":
        if not corpus["path"]:
            raise DataError("corpus.source is 'jsonl' but corpus.path is not set")
        if not local_files(corpus["path"]):
            raise DataError(f"corpus.path {corpus['path']!r} matches no file")
    elif corpus["source"] == "huggingface" and not corpus["dataset"]:
        raise DataError("corpus.source is 'huggingface' but corpus.dataset is not set")


def local_files(pattern: str) -> list[str]:
    return sorted(glob.glob(str(Path(pattern).expanduser())))


def documents_by_domain(corpus: dict) -> tuple[dict[str, list[Document]], dict[str, dict]]:
    """All documents of every configured domain, plus per-domain source descriptions."""
    domains = corpus["domains"]
    if corpus["source"] == "debian":
        from corpus import debian

        docs = {d: list(debian.iter_documents(d, corpus["deb_dir"])) for d in domains}
        origin = {d: {"packages": debian.package_versions(d, corpus["deb_dir"])} for d in domains}
        return docs, origin
    if corpus["source"] == "jsonl":
        files = local_files(corpus["path"])
        records = _load_local_records(files)
        origin = {d: {"files": files} for d in domains}
    else:
        records = _stream_hub_records(corpus)
        origin = {d: {"dataset": corpus["dataset"], "config": corpus["dataset_config"]} for d in domains}
    docs, seen_bytes = _group(records, corpus, streaming=corpus["source"] == "huggingface")
    if corpus["source"] == "huggingface":
        for domain in domains:
            origin[domain]["stream_bytes"] = seen_bytes[domain]
    return docs, origin


def _load_local_records(files: list[str]) -> Iterator[tuple[str, dict]]:
    import datasets

    for path in files:
        builder = "parquet" if path.endswith(".parquet") else "json"
        table = datasets.load_dataset(builder, data_files=path, split="train")
        for i, record in enumerate(table):
            yield f"{Path(path).name}:{i}", record


def _stream_hub_records(corpus: dict) -> Iterator[tuple[str, dict]]:
    import datasets

    stream = datasets.load_dataset(
        corpus["dataset"], corpus["dataset_config"], split=corpus["dataset_split"], streaming=True
    )
    for i, record in enumerate(stream):
        yield f"{corpus['dataset']}:{i}", record


def field(record: dict, dotted: str):
    """``meta.redpajama_set_name`` -> record['meta']['redpajama_set_name']."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"record has no field {dotted!r}; its fields are {sorted(record)}")
        value = value[part]
    return value


def _group(records: Iterable[tuple[str, dict]], corpus: dict, streaming: bool):
    """Documents per wanted domain, and the bytes of each domain seen in the records.

    Streaming stops keeping a domain's documents at its cap but goes on counting its bytes
    until every domain is full: in a shuffled stream those counts estimate the domains' sizes.
    """
    wanted = set(corpus["domains"])
    cap = corpus["max_bytes_per_domain"]
    docs: dict[str, list[Document]] = defaultdict(list)
    kept: dict[str, int] = defaultdict(int)
    seen_bytes: dict[str, int] = defaultdict(int)
    seen: set[str] = set()
    for doc_id, record in records:
        domain = str(field(record, corpus["domain_field"]))
        seen.add(domain)
        if domain not in wanted:
            continue
        text = str(field(record, corpus["text_field"]))
        size = len(text.encode("utf-8"))
        seen_bytes[domain] += size
        if streaming and kept[domain] >= cap:
            continue
        docs[domain].append((doc_id, text))
        kept[domain] += size
        if streaming and all(kept[d] >= cap for d in wanted):
            break
    missing = sorted(wanted - set(docs))
    if missing:
        raise DataError(f"no documents for domain(s) {missing}; domains present in the data: {sorted(seen)}")
    return {d: docs[d] for d in corpus["domains"]}, seen_bytes
